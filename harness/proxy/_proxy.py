"""The validating, recording reverse proxy: put it in front of a mock or a live endpoint.

Every request is validated against the provider's contract before it is forwarded; every
answer is passed back as it arrives (SSE and NDJSON chunk by chunk, never buffered whole)
and validated event by event. Exchanges are recorded in a :class:`mocks.engine.Journal` with
secrets (Authorization, keys, signed query strings) redacted before anything is stored.

    proxy = ValidatingProxy("cloudsway", "http://127.0.0.1:8701")
    url = await proxy.start(port=0)
    ...
    proxy.journal.entries(); proxy.deviations
    await proxy.close()
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from imagegen_conformance import contracts
from imagegen_conformance.mocks.engine import (
    Exchange,
    Journal,
    bind,
    is_loopback,
    key_fingerprint,
    redact_headers,
    redact_query,
    redact_text,
    server_options,
)

from ..rules._deviation import Deviation
from ..rules._exchanges import media_type, parse_sse
from ..rules._live import LiveDeviation, LiveRules
from ..rules._profile import operation_for
from ..rules._validate import STREAM_MEDIA, validate_event, validate_exchange

__all__ = ["PROXY_PREFIX", "ValidatingProxy"]

PROXY_PREFIX = "/__proxy/"
BODY_LIMIT = 65_536
MAX_REQUEST = 16 * 1024 * 1024
_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
})
_DROP_RESPONSE = _HOP | {"content-encoding"}
# The proxy decodes what it records; let aiohttp ask for the encodings it can decode itself.
_DROP_REQUEST = _HOP | {"accept-encoding"}


def _text(body: bytes, ctype: str) -> str | None:
    if not body:
        return None
    if ctype.startswith(("image/", "audio/", "video/", "application/octet-stream")):
        return f"<{len(body)} bytes {ctype}>"
    text = body[:BODY_LIMIT].decode("utf-8", errors="replace")
    text = redact_text(text) or ""  # signed links and keys inside bodies, before storing
    return text + (f"...<{len(body) - BODY_LIMIT} more bytes>" if len(body) > BODY_LIMIT else "")


def _loopback(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


class ValidatingProxy:
    """A reverse proxy to ``target`` that validates and records ``provider`` traffic."""

    def __init__(
        self,
        provider: str,
        target: str,
        *,
        time_scale: float = 1.0,
        journal: Journal | None = None,
        preserve_host: bool | None = None,
        on_exchange: Callable[[Exchange], None] | None = None,
        on_deviation: Callable[[Deviation], None] | None = None,
        ssl: Any = None,
        on_raw: Callable[[Exchange, bytes, list[tuple[float, bytes]] | None], None] | None = None,
        rewrite_links: bool = False,
        base_path: str = "",
        live_rules: bool = False,
    ) -> None:
        self.contract = contracts.load(provider)
        # The client's base URL carries this path on the proxy as on the target (the proxy
        # mirrors the target's whole host, so links resolve as RFC 3986 says: an absolute path
        # replaces the base path); exchanges are journaled with it removed, as the contract's
        # paths are written.
        self.base_path = base_path.rstrip("/")
        self.provider = self.contract.provider
        self.target = target.rstrip("/")
        self.time_scale = time_scale
        self.journal = journal or Journal()
        self.deviations: list[Deviation] = []
        # A mock builds returned links from the Host it sees: keep the client's so links lead
        # back through the proxy. A live endpoint needs its own Host (virtual hosting, TLS).
        self.preserve_host = _loopback(target) if preserve_host is None else preserve_host
        self.on_exchange = on_exchange
        self.on_deviation = on_deviation
        # A recorder's hook: the whole answer body (or a stream's timed chunks) before redaction.
        self.on_raw = on_raw
        # In front of a live endpoint, returned links (fal's status_url...) name the endpoint:
        # rewritten to the proxy, the client's next requests are seen (and recorded) too.
        self.rewrite_links = rewrite_links and not self.preserve_host
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._t0 = time.time()
        self._secret = os.urandom(16)
        self.url: str | None = None
        # The behaviour rules over what passes, per client (schema checks run as it passes).
        self.live: LiveRules | None = LiveRules(self.provider, on_deviation=self._live_found) \
            if live_rules else None

    # --- lifecycle ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_cleanup.append(self._cleanup)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: a free port) and return the proxy's base URL."""
        self._runner = web.AppRunner(self.app(), shutdown_timeout=2.0, **server_options("proxy"))
        self.url = await bind(self._runner, host, port, what="the proxy")
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._cleanup(None)

    async def _cleanup(self, _: Any) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
                connector=aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None,
            )
        return self._session

    def _live_found(self, item: LiveDeviation) -> None:
        if not item.deviation.rule.startswith("schema."):  # those were reported as they passed
            self._deviate([item.deviation])

    def _deviate(self, found: list[Deviation]) -> None:
        self.deviations.extend(found)
        if self.on_deviation:
            for dev in found:
                self.on_deviation(dev)

    # --- the proxy itself --------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(PROXY_PREFIX):
            return self._admin(request)
        body = await request.read()
        now = time.time()
        path = self._contract_path(request.path)
        operation = operation_for(self.contract, request.method, path)
        exchange = Exchange(
            seq=self.journal.next_seq(),
            provider=self.provider,
            role="api",
            operation=operation,
            method=request.method,
            path=path,
            query=redact_query(request.query.items()),
            request_headers=redact_headers(request.headers.items()),
            request_body=_text(body, request.headers.get("Content-Type", "")),
            started_at=now,
            provider_time=self._t0 + (now - self._t0) * self.time_scale,
            key_id=self._key_id(request.headers.get(self.contract.behaviour.auth.header)),
        )
        self.journal.append(exchange)
        started = time.perf_counter()
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST
        )
        if self.preserve_host:
            headers["Host"] = request.host
        url = self.target + request.path
        try:
            upstream = await self.session().request(
                request.method, url, params=list(request.query.items()), headers=headers,
                data=body or None, allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            exchange.error = f"proxy could not reach the target: {type(exc).__name__}: {exc}"
            exchange.complete = True
            self._finish(exchange, started)
            return web.json_response(
                {"proxy_error": f"cannot reach {self.target}: {type(exc).__name__}"}, status=502,
                headers={"X-Imagegen-Proxy": "upstream-error"},
            )
        try:
            return await self._relay(request, upstream, exchange, started)
        finally:
            upstream.release()

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse, exchange: Exchange,
        started: float,
    ) -> web.StreamResponse:
        exchange.status = upstream.status
        exchange.response_headers = redact_headers(upstream.headers.items())
        ctype = media_type(dict(upstream.headers))
        if exchange.operation is None and ctype.startswith("image/"):
            exchange.operation = "downloadImage"
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        streaming = ctype in STREAM_MEDIA
        hold = self.rewrite_links and not streaming and (
            ctype.endswith("json") or ctype.startswith("text/"))
        for name, value in upstream.headers.items():
            if name.lower() not in _DROP_RESPONSE:
                response.headers.add(name, self._relink(value) if name.lower() == "location" else value)
        chunks: list[bytes] = []
        timed: list[tuple[float, bytes]] = []
        pending = ""
        index = 0
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                if not hold:
                    await response.write(chunk)  # passed on first: the client never waits for us
                if streaming and self.on_raw:
                    timed.append((time.perf_counter() - started, chunk))
                if streaming:
                    text = chunk.decode("utf-8", errors="replace")
                    pending, index = self._validate_events(exchange, ctype, pending + text, index)
                    exchange.events.append(redact_text(text) or "")
                else:
                    chunks.append(chunk)
            if hold:
                await response.write(self._relink(b"".join(chunks).decode("utf-8", "replace")).encode())
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError, asyncio.CancelledError) as exc:
            exchange.error = f"stream interrupted: {type(exc).__name__}"
            if isinstance(exc, asyncio.CancelledError):
                self._finish(exchange, started)
                raise
        if streaming and pending.strip():
            self._validate_events(exchange, ctype, pending + "\n\n", index)
        if not streaming:
            exchange.response_body = _text(b"".join(chunks), ctype)
        if self.on_raw:
            self.on_raw(exchange, b"".join(chunks), timed if streaming else None)
        self._finish(exchange, started)
        return response

    def _contract_path(self, path: str) -> str:
        base = self.base_path
        if base and (path == base or path.startswith(base + "/")):
            return path[len(base):] or "/"
        return path

    def _key_id(self, value: str | None) -> str | None:
        return key_fingerprint(self._secret, self.contract.behaviour.auth.key_of(value) or value)

    def _relink(self, text: str) -> str:
        return text.replace(self.target, self.url) if self.url else text

    def _validate_events(self, exchange: Exchange, ctype: str, text: str, index: int) -> tuple[str, int]:
        """Validate every complete event in ``text``; return the incomplete rest."""
        text = text.replace("\r\n", "\n")
        sep = "\n\n" if ctype == "text/event-stream" else "\n"
        *complete, rest = text.split(sep)
        for block in complete:
            if not block.strip():
                continue
            if ctype == "text/event-stream":
                for event in parse_sse(block):
                    self._deviate(validate_event(
                        self.contract, exchange, ctype, index, event.data, event.comment
                    ))
            else:
                self._deviate(validate_event(self.contract, exchange, ctype, index, block))
            index += 1
        return rest, index

    def _finish(self, exchange: Exchange, started: float) -> None:
        exchange.duration_ms = (time.perf_counter() - started) * 1000
        exchange.complete = True
        if media_type(exchange.response_headers) not in STREAM_MEDIA:
            self._deviate(validate_exchange(self.contract, exchange, self.url))
        else:  # events were validated as they passed; the request still needs checking
            self._deviate(validate_exchange(self.contract, _without_events(exchange), self.url))
        if self.on_exchange:
            self.on_exchange(exchange)
        if self.live is not None:
            self.live.add(exchange)

    def _admin(self, request: web.Request) -> web.StreamResponse:
        if request.path.rstrip("/") == "/__proxy/journal" and request.method == "GET":
            since = int(request.query.get("since", "0"))
            return web.json_response({
                "last_seq": self.journal.last_seq,
                "exchanges": [e.to_dict() for e in self.journal.entries(since)],
                "deviations": [d.to_dict() for d in self.deviations],
            }, dumps=lambda o: json.dumps(o, default=str))
        if request.path.rstrip("/") == "/__proxy/deviations" and request.method == "GET" \
                and self.live is not None:
            try:
                found = self.live.deviations(int(request.query.get("since", "0")),
                                             request.query.get("severity"), request.query.get("rule"))
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(self.live.to_dict(found),
                                     dumps=lambda o: json.dumps(o, default=str))
        return web.json_response(
            {"error": "proxy endpoints: GET /__proxy/journal?since=SEQ, GET /__proxy/deviations"
                      "?since=SEQ&severity=LEVEL (proxy with live rules)"}, status=404
        )


def _without_events(exchange: Exchange) -> Exchange:
    return Exchange(**{**exchange.__dict__, "events": []})
