"""Helpers around :class:`mocks.engine.Exchange`, the one exchange model of the project.

The mock's journal, the validating proxy and :class:`RecordingTransport` (httpx/respx) all
produce ``Exchange`` values; everything in the harness reads them through these helpers.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from imagegen_conformance.mocks.engine import (
    Exchange,
    Journal,
    redact_headers,
    redact_query,
    redact_text,
)

__all__ = [
    "RecordingTransport",
    "StreamEvent",
    "curl_line",
    "exchange_from_dict",
    "header",
    "json_or_none",
    "media_type",
    "request_json",
    "response_json",
    "stream_events",
]


def exchange_from_dict(data: Mapping[str, Any]) -> Exchange:
    """The inverse of ``Exchange.to_dict()`` (what ``GET /__mock/journal`` returns)."""
    fields = dict(data)
    fields["query"] = [(str(k), str(v)) for k, v in fields.get("query") or []]
    known = Exchange.__dataclass_fields__
    return Exchange(**{k: v for k, v in fields.items() if k in known})


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, case-insensitively."""
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None


def media_type(headers: Mapping[str, str]) -> str:
    """``application/json`` from ``application/json; charset=utf-8`` ("" when absent)."""
    value = header(headers, "Content-Type") or ""
    return value.split(";", 1)[0].strip().lower()


def json_or_none(text: str | None) -> Any:
    """Parse JSON text; None when empty or not JSON (the caller decides whether that is wrong)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def request_json(exchange: Exchange) -> Any:
    return json_or_none(exchange.request_body)


def response_json(exchange: Exchange) -> Any:
    return json_or_none(exchange.response_body)


@dataclass(frozen=True)
class StreamEvent:
    """One event of a streamed body: an SSE event or an NDJSON line."""

    index: int
    event: str | None  # the SSE ``event:`` name (None for NDJSON and unnamed events)
    data: str | None  # the SSE data lines joined, or the NDJSON line
    comment: bool = False  # an SSE comment (``: ping``)

    def json(self) -> Any:
        return json_or_none(self.data)


def parse_sse(text: str) -> list[StreamEvent]:
    """Split SSE text into events (blank-line separated), keeping comments and bare ``event:``s."""
    out: list[StreamEvent] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[str] = []
        comment = True
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            comment = False
            field_name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field_name == "event":
                name = value
            elif field_name == "data":
                data.append(value)
        out.append(StreamEvent(len(out), name, "\n".join(data) if data else None, comment))
    return out


def stream_events(exchange: Exchange) -> list[StreamEvent]:
    """The events of a streamed answer (SSE or NDJSON), parsed from the recorded chunks."""
    text = "".join(exchange.events) if exchange.events else ""
    kind = media_type(exchange.response_headers)
    if not text:
        return []
    if kind == "text/event-stream":
        return parse_sse(text)
    lines = [line for line in text.split("\n") if line.strip()]
    return [StreamEvent(i, None, line) for i, line in enumerate(lines)]


def curl_line(exchange: Exchange, base_url: str | None = None) -> str:
    """A ``curl`` command that sends the same request (secrets stay redacted: fill in your key)."""
    base = (base_url or "http://127.0.0.1:PORT").rstrip("/")
    url = base + exchange.path
    if exchange.query:
        url += "?" + "&".join(f"{k}={v}" for k, v in exchange.query)
    parts = ["curl", "-sS", "-X", exchange.method, shlex.quote(url)]
    for name, value in exchange.request_headers.items():
        if name.lower() in ("host", "content-length", "accept-encoding", "connection", "user-agent"):
            continue
        value = value.replace("<redacted>", "$API_KEY")
        parts += ["-H", shlex.quote(f"{name}: {value}")]
    if exchange.request_body:
        parts += ["--data-raw", shlex.quote(exchange.request_body)]
    return " ".join(parts)


class RecordingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that records each request/response as an :class:`Exchange`.

    Wrap any transport (a respx mock, the default HTTP transport) to capture the traffic of an
    httpx client the harness does not route through a mock::

        transport = RecordingTransport(httpx.AsyncHTTPTransport(), provider="fal")
        async with httpx.AsyncClient(transport=transport) as client: ...
        transport.journal.entries()

    Streamed bodies are recorded chunk by chunk as the client reads them.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        provider: str,
        role: str = "api",
        journal: Journal | None = None,
        operation_of: Any = None,
        time_scale: float = 1.0,
    ) -> None:
        self.inner = inner
        self.provider = provider
        self.role = role
        self.journal = journal or Journal()
        self.operation_of = operation_of  # callable (method, path) -> operationId | None
        self.time_scale = time_scale
        self._t0 = time.time()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        now = time.time()
        exchange = Exchange(
            seq=self.journal.next_seq(),
            provider=self.provider,
            role=self.role,
            operation=self.operation_of(request.method, request.url.path) if self.operation_of else None,
            method=request.method,
            path=request.url.path,
            query=redact_query(httpx.QueryParams(request.url.query).multi_items()),
            request_headers=redact_headers(request.headers.multi_items()),
            request_body=redact_text(body.decode("utf-8", errors="replace")) if body else None,
            started_at=now,
            provider_time=self._t0 + (now - self._t0) * self.time_scale,
        )
        self.journal.append(exchange)
        started = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.HTTPError as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            exchange.complete = True
            raise
        exchange.status = response.status_code
        exchange.response_headers = redact_headers(response.headers.multi_items())
        ctype = response.headers.get("content-type", "")
        if "event-stream" in ctype or "ndjson" in ctype:
            response.stream = _TapStream(response.stream, exchange, started)
            return response
        content = await response.aread()
        exchange.response_body = content.decode("utf-8", errors="replace") if content else None
        exchange.duration_ms = (time.perf_counter() - started) * 1000
        exchange.complete = True
        return httpx.Response(
            response.status_code, headers=response.headers, content=content,
            request=request, extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _TapStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, exchange: Exchange, started: float) -> None:
        self._inner = inner
        self._exchange = exchange
        self._started = started

    async def __aiter__(self) -> Any:
        async for chunk in self._inner:
            self._exchange.events.append(chunk.decode("utf-8", errors="replace"))
            yield chunk
        self._finish()

    def _finish(self) -> None:
        if not self._exchange.complete:
            self._exchange.duration_ms = (time.perf_counter() - self._started) * 1000
            self._exchange.complete = True

    async def aclose(self) -> None:
        self._finish()
        await self._inner.aclose()


def by_seq(exchanges: Iterable[Exchange]) -> dict[int, Exchange]:
    return {e.seq: e for e in exchanges}
