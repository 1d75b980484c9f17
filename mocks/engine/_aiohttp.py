"""Serve a MockServer over real sockets with aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

from aiohttp import web

from ._connections import ConnectionLimits
from ._http import MockRequest
from ._server import MockServer

if TYPE_CHECKING:
    from multidict import MultiDictProxy

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


async def _read_body(
    request: web.BaseRequest, limit: int, limits: ConnectionLimits
) -> tuple[bytes, bool, bool]:
    """(body, oversized, timed out): never more than ``limit`` is held, nor waited for longer
    than ``limits`` allow (what was read is dropped either way; the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        left = limits.body_deadline(started, size) - loop.time()
        try:
            async with asyncio.timeout(max(left, 0.0)):
                chunk = await request.content.read(65_536)
        except TimeoutError:
            return b"", False, True
        if not chunk:
            return b"".join(chunks), False, False
        size += len(chunk)
        if size > limit:
            return b"", True, False
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
    server: MockServer, role: str | None = None, limits: ConnectionLimits | None = None,
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The request handler alone, for aiohttp's low-level server (no router, no middleware)."""
    role = role or server.roles[0]
    limits = limits or ConnectionLimits()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        declared = request.content_length
        # Answer a declared length over the limit from the header alone: the body is never read.
        body, oversized, timed_out = b"", declared is not None and declared > server.max_body, False
        if not oversized and request.body_exists:
            content = request.content
            if content.is_eof() and content.exception() is None:
                # The whole body came with the headers (a small JSON body): it is all in the
                # buffer, nothing is waited for, so no deadline needs arming.
                body = content.read_nowait(-1)
                if len(body) > server.max_body:
                    body, oversized = b"", True
            else:
                body, oversized, timed_out = await _read_body(request, server.max_body, limits)
        mreq = MockRequest(
            method=request.method,
            path=request.path,
            # aiohttp's own proxies: read-only views of what the parser made, never changed after.
            query=cast("MultiDictProxy[str]", request.query),  # yarl's, typed as its protocol
            headers=request.headers,
            body=body,
            base_url=f"{request.scheme}://{request.host}",
            role=role,
            peer=request.remote,
            oversized=oversized,
            timed_out=timed_out,
        )
        response = await server.dispatch(mreq)
        if response.action == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing is written to a dropped connection
        if not response.is_stream:
            assert isinstance(response.body, bytes | bytearray)
            answer = web.Response(status=response.status, headers=_safe_headers(response.headers),
                                  body=response.body)
            if timed_out:
                answer.force_close()  # the rest of that body is not waited for
            return answer
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
