"""Schema validation of exchanges against the provider's OpenAPI operations.

A request that breaks its operation's schema is the client's deviation; a response (or a
streamed event) that breaks it is the provider's, or the mock's. Validation uses the
contract's jsonschema validators (``contracts.SchemaValidator``); nothing is hand-written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from imagegen_conformance import contracts
from imagegen_conformance.contracts import Contract, SchemaValidator
from imagegen_conformance.mocks.engine import Exchange

from ._deviation import Deviation, Severity, Side
from ._exchanges import curl_line, json_or_none, media_type, stream_events

__all__ = ["STREAM_MEDIA", "body_validator", "validate_event", "validate_exchange"]

STREAM_MEDIA = ("text/event-stream", "application/x-ndjson")
DOWNLOAD = "downloadImage"


def _deref(openapi: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = openapi
        for part in str(node["$ref"])[2:].split("/"):
            target = target[part]
        node = target
    return node


def _response_spec(contract: Contract, operation: str, status: int) -> Mapping[str, Any] | None:
    responses = contract.operation(operation).spec.get("responses") or {}
    spec = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
    return None if spec is None else _deref(contract.openapi, spec)


@cache
def body_validator(
    provider: str, operation: str, status: int | None, media: str
) -> SchemaValidator | None:
    """The validator of one body (request when ``status`` is None) in one media type.

    For ``text/event-stream`` and ``application/x-ndjson`` the schema describes one event's
    JSON (an SSE ``data:`` payload, or one NDJSON line).
    """
    contract = contracts.load(provider)
    if status is None:
        body = contract.operation(operation).spec.get("requestBody")
        spec = None if body is None else _deref(contract.openapi, body)
    else:
        spec = _response_spec(contract, operation, status)
    if spec is None:
        return None
    content = spec.get("content") or {}
    entry = content.get(media) or (content.get("application/json") if media in ("", "*/*") else None)
    if entry is None and media.endswith("+json"):
        entry = content.get("application/json")
    if entry is None or "schema" not in entry:
        return None
    if media in STREAM_MEDIA and _deref(contract.openapi, entry["schema"]).get("type") == "string":
        return None  # the stream is described as raw text, not event by event
    return SchemaValidator(contract.openapi, entry["schema"])


def _documented(contract: Contract, operation: str, status: int) -> bool:
    responses = contract.operation(operation).spec.get("responses") or {}
    return str(status) in responses or f"{str(status)[0]}XX" in responses or "default" in responses


def validate_exchange(contract: Contract, exchange: Exchange, base_url: str | None = None) -> list[Deviation]:
    """Schema deviations of one exchange: its request (client) and its response (provider)."""
    out: list[Deviation] = []
    op = exchange.operation
    repro = curl_line(exchange, base_url)
    if op is None or op not in contract.operations:
        if op != DOWNLOAD and exchange.status is not None:
            out.append(Deviation(
                "schema.endpoint", Severity.ERROR, Side.CLIENT,
                f"{exchange.method} {exchange.path} is no operation of {contract.provider}'s contract",
                (exchange.seq,), "request.path",
                expected=sorted(f"{o.method} {o.path}" for o in contract.operations.values()),
                actual=f"{exchange.method} {exchange.path}", reproduce=repro,
            ))
        return out
    out += _validate_request(contract, exchange, repro)
    if exchange.status is None or exchange.faults or exchange.error:
        return out  # no answer, or one a fault shaped on purpose, or a mock crash (reported apart)
    if not _documented(contract, op, exchange.status):
        documented = sorted(contract.operation(op).spec.get("responses") or {})
        out.append(Deviation(
            "schema.status", Severity.WARNING, Side.PROVIDER,
            f"{op} answered HTTP {exchange.status}, which its contract does not document",
            (exchange.seq,), "response.status", expected=documented, actual=exchange.status,
            reproduce=repro,
        ))
        return out
    if exchange.method == "HEAD":
        return out  # the GET answer's status and headers, no body to validate
    media = media_type(exchange.response_headers)
    if media in STREAM_MEDIA:
        for event in stream_events(exchange):
            out += validate_event(contract, exchange, media, event.index, event.data, event.comment)
        return out
    if media and media != "application/json" and not media.endswith("+json"):
        return out  # images, text: the schema describes bytes, nothing to validate as JSON
    validator = body_validator(contract.provider, op, exchange.status, media)
    if validator is None:
        return out
    document = json_or_none(exchange.response_body)
    if document is None and exchange.response_body is not None and media.endswith("json"):
        out.append(Deviation(
            "schema.response", Severity.ERROR, Side.PROVIDER,
            f"{op} answered HTTP {exchange.status} with a body that is not JSON",
            (exchange.seq,), "response.body", expected="JSON", actual=exchange.response_body[:200],
            reproduce=repro,
        ))
        return out
    for issue in validator.issues(document):
        out.append(Deviation(
            "schema.response", Severity.ERROR, Side.PROVIDER,
            f"{op} HTTP {exchange.status} body breaks the contract: {issue.message}",
            (exchange.seq,), f"response.body{issue.path}", expected=f"schema {issue.schema_path}",
            actual=issue.instance, reproduce=repro, extra={"schema": issue.schema},
        ))
    return out


def validate_event(
    contract: Contract, exchange: Exchange, media: str, index: int, data: str | None,
    comment: bool = False,
) -> list[Deviation]:
    """Validate one streamed event (SSE data or NDJSON line) of an exchange."""
    if comment or data is None or exchange.operation is None or exchange.status is None:
        return []  # keep-alives (``: ping``, bare ``event: ping``) carry no document
    validator = body_validator(contract.provider, exchange.operation, exchange.status, media)
    if validator is None:
        return []
    document = json_or_none(data)
    if document is None:
        return [Deviation(
            "schema.response", Severity.ERROR, Side.PROVIDER,
            f"{exchange.operation} stream event {index} is not JSON",
            (exchange.seq,), f"response.events[{index}]", expected="JSON", actual=data[:200],
        )]
    return [
        Deviation(
            "schema.response", Severity.ERROR, Side.PROVIDER,
            f"{exchange.operation} stream event {index} breaks the contract: {issue.message}",
            (exchange.seq,), f"response.events[{index}]{issue.path}",
            expected=f"schema {issue.schema_path}", actual=issue.instance,
            extra={"schema": issue.schema},
        )
        for issue in validator.issues(document)
    ]


def _validate_request(contract: Contract, exchange: Exchange, repro: str) -> list[Deviation]:
    op = exchange.operation
    assert op is not None
    spec = contract.operation(op).spec.get("requestBody")
    if spec is None:
        return []
    spec = _deref(contract.openapi, spec)
    media = media_type(exchange.request_headers) or "application/json"
    validator = body_validator(contract.provider, op, None, media)
    if validator is None:
        validator = body_validator(contract.provider, op, None, "application/json")
    if validator is None:
        return []
    if not exchange.request_body:
        if spec.get("required"):
            return [Deviation(
                "schema.request", Severity.ERROR, Side.CLIENT, f"{op} needs a request body",
                (exchange.seq,), "request.body", expected="a JSON body", actual=None, reproduce=repro,
            )]
        return []
    document = json_or_none(exchange.request_body)
    if document is None:
        return [Deviation(
            "schema.request", Severity.ERROR, Side.CLIENT, f"{op} request body is not JSON",
            (exchange.seq,), "request.body", expected="JSON", actual=exchange.request_body[:200],
            reproduce=repro,
        )]
    return [
        Deviation(
            "schema.request", Severity.ERROR, Side.CLIENT,
            f"{op} request breaks the contract: {issue.message}",
            (exchange.seq,), f"request.body{issue.path}", expected=f"schema {issue.schema_path}",
            actual=issue.instance, reproduce=repro, extra={"schema": issue.schema},
        )
        for issue in validator.issues(document)
    ]


def validate_all(
    contract: Contract, exchanges: Iterable[Exchange], base_url: str | None = None
) -> list[Deviation]:
    out: list[Deviation] = []
    for exchange in exchanges:
        out += validate_exchange(contract, exchange, base_url)
    return out
