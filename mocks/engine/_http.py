from __future__ import annotations

import json
import math
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

__all__ = ["MAX_DEPTH", "BodyError", "MockRequest", "MockResponse", "dumps", "loads"]


def dumps(data: Any) -> bytes:
    """Compact JSON, UTF-8, non-ASCII kept as is (as the providers send it).

    Never NaN or Infinity, which are not JSON (RFC 8259): such a value raises ValueError (a
    mock bug, reported as a handler crash) rather than going out as a body no client parses.
    """
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


#: Deeper JSON than this is refused: no provider's body nests more than a few levels, and
#: every reader of a parsed body (validation, redaction, echo) walks it recursively.
MAX_DEPTH = 64


def _constant(name: str) -> Any:
    raise BodyError(f"request body is not valid JSON: {name} is not a JSON value")


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"request body holds a number out of range: {text[:40]} is beyond a double")
    return value


def _integer(text: str) -> int:
    # Python's int() refuses a string of more digits than this with a ValueError of its own
    # (and str() of such an int fails too): refused here, before anything converts it.
    limit = sys.get_int_max_str_digits()
    if limit and len(text.lstrip("-")) > limit:
        raise BodyError(f"request body holds a number out of range: an integer of more than "
                        f"{limit} digits")
    return int(text)


# One decoder for every body: json.loads with hooks would build (and keep) a scanner per call.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_number, parse_int=_integer)


def _depth(data: Any) -> int:
    """How deep containers nest in ``data`` (iteratively: the depth is what is in question)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads(body: bytes | str) -> Any:
    """Parse a request body as strict JSON: :class:`BodyError` for anything else.

    Beyond ``json.loads``: NaN, Infinity and -Infinity are refused (not JSON), so are numbers a
    double cannot hold (``1e400``), integers longer than Python converts (4,300 digits), and
    nesting deeper than ``MAX_DEPTH`` (which would otherwise be a RecursionError, here or in
    whoever reads it). Narrower ranges are the contract's business (its schema's bounds).
    """
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass") if isinstance(body, bytes) else body
        if text.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        data = _DECODER.decode(text)
    except RecursionError:
        raise BodyError(f"request body nests deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(f"request body is not valid JSON: {exc}") from exc
    # Each level of nesting opens a bracket: a body with no more brackets than the limit (inside
    # strings or not) cannot nest deeper, and is not walked.
    brackets = text.count("{") + text.count("[")
    if brackets > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise BodyError(f"request body nests deeper than {MAX_DEPTH} levels")
    return data


class BodyError(ValueError):
    """The request body is not what the route needs; ``kind`` says how.

    ``kind`` is ``empty`` (no body), ``invalid`` (not JSON, or a broken multipart body) or
    ``type`` (valid JSON of another type, held in ``value``; or not multipart at all).
    """

    def __init__(self, message: str, *, kind: str = "invalid", value: Any = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.value = value


@dataclass
class MockRequest:
    """A transport-neutral HTTP request, built by the aiohttp or respx adapter."""

    method: str
    path: str
    query: MultiDictProxy[str]
    headers: CIMultiDictProxy[str]
    body: bytes
    base_url: str  # scheme://host[:port] as the client reached the mock
    role: str = "api"  # which of the provider's hosts was addressed (fal: "queue" or "run")
    params: dict[str, str] = field(default_factory=dict)  # filled by the router
    peer: str | None = None
    #: Content-Length declared a body over the mock's limit: it was never read (``body`` is empty).
    oversized: bool = False
    #: The body did not arrive in time (a client sending one byte now and then): it was dropped.
    timed_out: bool = False
    _json: Any = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | MultiDict[str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        base_url: str = "http://127.0.0.1",
        role: str = "api",
    ) -> MockRequest:
        """Convenience constructor for in-process use and tests."""
        return cls(
            method=method.upper(),
            path=path,
            query=MultiDictProxy(MultiDict(query or {})),
            headers=CIMultiDictProxy(CIMultiDict(headers or {})),
            body=body,
            base_url=base_url.rstrip("/"),
            role=role,
        )

    def json(self) -> Any:
        """The body parsed as JSON; :class:`BodyError` says why it is not."""
        if not self._parsed:
            if not self.body.strip():
                raise BodyError("request body is empty; a JSON object is required", kind="empty")
            self._json = loads(self.body)
            self._parsed = True
        return self._json

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise BodyError(
                f"request body must be a JSON object, got {type(data).__name__}", kind="type", value=data
            )
        return data

    def url(self, path: str) -> str:
        """An absolute URL on the host the client used."""
        return self.base_url + path


@dataclass
class MockResponse:
    """What a handler answers: bytes, or an async iterator of chunks for a stream.

    ``action="reset"`` tells the adapter to drop the connection instead of answering.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | AsyncIterator[bytes] = b""
    action: str = "respond"
    on_close: Callable[[], None] | None = None  # called once when a stream ends or is dropped
    #: (body, Content-Type, the journal's text of the body) when already made (Call.answer_once);
    #: used only while ``body`` is still that very object, of that type.
    journal_text: tuple[bytes, str | None, str | None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> MockResponse:
        return cls(status, {"Content-Type": content_type, **(headers or {})}, dumps(data))

    @classmethod
    def raw(
        cls, body: bytes, status: int = 200, content_type: str = "application/octet-stream",
        headers: Mapping[str, str] | None = None,
    ) -> MockResponse:
        return cls(status, {"Content-Type": content_type, **(headers or {})}, body)

    @classmethod
    def stream(
        cls, chunks: AsyncIterator[bytes], content_type: str, status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> MockResponse:
        base = {"Content-Type": content_type, "Cache-Control": "no-cache"}
        return cls(status, {**base, **(headers or {})}, chunks)

    @classmethod
    def reset(cls) -> MockResponse:
        return cls(status=0, action="reset")

    @property
    def is_stream(self) -> bool:
        return not isinstance(self.body, bytes | bytearray)

    def json_body(self) -> Any:
        assert isinstance(self.body, bytes | bytearray), "a stream has no single JSON body"
        return json.loads(self.body)
