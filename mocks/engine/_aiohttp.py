"""Serve a MockServer over real sockets with aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDictProxy, MultiDict, MultiDictProxy

from ._http import MockRequest
from ._server import MockServer

__all__ = ["make_app", "make_handler"]

SERVER_KEY: web.AppKey[MockServer] = web.AppKey("mock_server", MockServer)
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _safe_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Percent-escape control characters a provider echoed from the request into a header.

    aiohttp refuses to write them (header injection) and drops the connection instead.
    """
    if not _UNSAFE.search("\t".join(headers.values())):  # one search: this runs per response
        return headers
    return {k: _UNSAFE.sub(lambda m: quote(m.group()), v) for k, v in headers.items()}


async def _read_body(request: web.BaseRequest, limit: int) -> tuple[bytes, bool]:
    """The body, or (b"", True) once it passes ``limit``: never more than that is held."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65_536)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size > limit:
            return b"", True  # what was read is dropped; the rest is never read
        chunks.append(chunk)


def make_app(server: MockServer, role: str | None = None) -> web.Application:
    """An aiohttp application answering every path with ``server`` for one of its hosts."""
    app = web.Application(client_max_size=server.max_body + 1)
    app[SERVER_KEY] = server
    # [\s\S]: every path reaches the provider, even one with a newline in it, so even odd
    # paths get the provider's own 404 rather than aiohttp's plain-text one.
    app.router.add_route("*", r"/{tail:[\s\S]*}", make_handler(server, role))
    return app


def make_handler(
    server: MockServer, role: str | None = None
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The request handler alone, for aiohttp's low-level server (no router, no middleware)."""
    role = role or server.roles[0]

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        declared = request.content_length
        # Answer a declared length over the limit from the header alone: the body is never read.
        body, oversized = b"", declared is not None and declared > server.max_body
        if not oversized:
            body, oversized = await _read_body(request, server.max_body)
        mreq = MockRequest(
            method=request.method,
            path=request.path,
            query=MultiDictProxy(MultiDict(request.query)),
            headers=CIMultiDictProxy(request.headers.copy()),
            body=body,
            base_url=f"{request.scheme}://{request.host}",
            role=role,
            peer=request.remote,
            oversized=oversized,
        )
        response = await server.dispatch(mreq)
        if response.action == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing is written to a dropped connection
        if not response.is_stream:
            assert isinstance(response.body, bytes | bytearray)
            return web.Response(status=response.status, headers=_safe_headers(response.headers),
                                body=response.body)
        stream = web.StreamResponse(status=response.status, headers=_safe_headers(response.headers))
        stream.enable_chunked_encoding()
        body_iter = response.body
        assert not isinstance(body_iter, bytes | bytearray)
        try:
            await stream.prepare(request)
            async for chunk in body_iter:
                await stream.write(chunk)
            await stream.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            # The client went away: stop producing; the finally below releases the stream.
            pass
        finally:
            aclose = getattr(body_iter, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        return stream

    return handle
