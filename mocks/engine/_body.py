"""Request bodies, read once by the engine: JSON parsed and checked against the contract,
multipart read with aiohttp's own reader. A handler gets the result as ``call.body`` /
``call.parts``; what the provider answers to a bad body is its own hooks' business
(:meth:`Provider.refuse`), so no provider parses or validates a body itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import MultipartReader, StreamReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpProcessingError
from multidict import CIMultiDict

from imagegen_conformance import contracts
from imagegen_conformance.contracts import Contract, SchemaIssue

from ._http import BodyError, MockRequest

__all__ = ["Body", "CheckedBodies", "FormPart", "body_kinds", "read_json", "read_multipart"]

_KINDS = {"application/json": "json", "multipart/form-data": "multipart"}


@dataclass(frozen=True)
class FormPart:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str | None  # the part's media type, lower case, without parameters
    data: bytes

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass
class Body:
    """What the engine made of a request's body before the handler runs.

    ``data`` is the JSON object after the provider's :meth:`~Provider.normalise` (None when the
    body could not be parsed: ``error`` says why); ``issues`` are the contract schema's
    findings on it; ``parts`` the multipart parts.
    """

    operation: str
    kind: str  # "json" or "multipart"
    data: dict[str, Any] | None = None
    error: BodyError | None = None
    issues: list[SchemaIssue] = field(default_factory=list)
    parts: list[FormPart] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.issues


def body_kinds(contract: Contract) -> dict[str, str]:
    """operationId -> "json" | "multipart", for each operation whose contract declares a body."""
    out: dict[str, str] = {}
    for op_id, op in contract.operations.items():
        content = (op.spec.get("requestBody") or {}).get("content") or {}
        kind = next((_KINDS[m] for m in content if m in _KINDS), None)
        if kind is not None:
            out[op_id] = kind
    return out


def read_json(provider: Any, contract: Contract, request: MockRequest, operation: str) -> Body:
    """Parse, normalise (the provider's hook) and validate a JSON body against the contract."""
    body = Body(operation, "json")
    try:
        # A copy: the handler can still read the body as sent (request.json()).
        data = dict(request.json_object())
    except BodyError as exc:
        body.error = exc
        return body
    body.data = provider.normalise(operation, data)
    # The contract served (a provider subclass may serve another contract than its parent's).
    validator = contracts.request_validator(contract.provider, operation)
    if validator is not None:
        body.issues = validator.issues(body.data)
    return body


#: Bodies up to this size are kept by :class:`CheckedBodies` (a poll's body is a few dozen bytes).
KEPT_BODY_BYTES = 1024
_SCALARS = frozenset({str, int, float, bool, type(None)})


class CheckedBodies:
    """JSON bodies already parsed, normalised and found valid, by operation and exact bytes.

    A client that polls by POST (AceData's retrieve: ``{"action": "retrieve", "id": ...}``)
    sends the same bytes on every poll; they are parsed and checked once. Only a valid, flat
    object (every value a string, number, boolean or null) is kept, so each request gets a
    full copy it may change; a body with issues is checked afresh every time. The provider's
    ``normalise`` sees only the body and the server's options, which never change while it runs.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._kept: dict[tuple[str, bytes], dict[str, Any]] = {}

    def read(self, provider: Any, contract: Contract, request: MockRequest, operation: str) -> Body:
        raw = request.body
        if len(raw) > KEPT_BODY_BYTES:
            return read_json(provider, contract, request, operation)
        key = (operation, raw)
        kept = self._kept.get(key)
        if kept is not None:
            return Body(operation, "json", data=dict(kept))
        body = read_json(provider, contract, request, operation)
        data = body.data
        if body.ok and data is not None and all(type(v) in _SCALARS for v in data.values()):
            if len(self._kept) >= self._size:
                del self._kept[next(iter(self._kept))]  # the oldest
            self._kept[key] = dict(data)
        return body

    def clear(self) -> None:
        self._kept.clear()


async def read_multipart(request: MockRequest, operation: str) -> Body:
    """The parts of a multipart/form-data body; a broken one is a :class:`BodyError`."""
    body = Body(operation, "multipart")
    content_type = request.headers.get("Content-Type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        body.error = BodyError("request body must be multipart/form-data", kind="type")
        return body
    try:
        body.parts = await _parts(content_type, request.body)
    except (ValueError, HttpProcessingError) as exc:
        # aiohttp's reader names what is broken (no boundary, a bad part header, no end).
        body.error = BodyError(f"multipart body is malformed: {exc}")
    return body


async def _parts(content_type: str, data: bytes) -> list[FormPart]:
    loop = asyncio.get_running_loop()
    stream = StreamReader(BaseProtocol(loop), max(len(data), 2**16), loop=loop)
    stream.feed_data(data)
    stream.feed_eof()
    reader = MultipartReader(CIMultiDict({"Content-Type": content_type}), stream)
    parts: list[FormPart] = []
    while (part := await reader.next()) is not None:
        if isinstance(part, MultipartReader):
            raise ValueError("nested multipart bodies are not form data")
        payload = bytes(await part.read(decode=True))
        if part.name is None:
            continue  # a part without a name is no form field
        media = part.headers.get("Content-Type")
        parts.append(FormPart(
            part.name, part.filename,
            media.split(";", 1)[0].strip().lower() if media else None, payload,
        ))
    return parts

