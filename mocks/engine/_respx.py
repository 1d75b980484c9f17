"""Serve a MockServer in-process through respx, under the provider's real hostnames.

The same handlers as the aiohttp app answer httpx requests without a socket or TLS. Async
clients are answered on their own event loop (streams arrive chunk by chunk); sync clients
are answered on a private event-loop thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import respx
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from ._http import MockRequest, MockResponse
from ._server import MockServer

__all__ = ["mock_router"]

_IN_ASYNC = contextvars.ContextVar("imagegen_respx_async", default=False)


class _Router(respx.MockRouter):
    """Knows whether httpx asked through its sync or async transport."""

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        token = _IN_ASYNC.set(True)
        try:
            return await super().async_handler(request)
        finally:
            _IN_ASYNC.reset(token)

    def handler(self, request: httpx.Request) -> httpx.Response:
        token = _IN_ASYNC.set(False)
        try:
            return super().handler(request)
        finally:
            _IN_ASYNC.reset(token)


class _LoopThread:
    """One background event loop for sync clients, started on first use."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="imagegen-respx", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def run(cls, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, cls.loop()).result()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield _LoopThread.run(self._chunks.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            _LoopThread.run(aclose())


def _to_mock(request: httpx.Request, role: str) -> MockRequest:
    url = request.url
    return MockRequest(
        method=request.method,
        path=url.path,
        query=MultiDictProxy(MultiDict(httpx.QueryParams(url.query).multi_items())),
        headers=CIMultiDictProxy(CIMultiDict(request.headers.multi_items())),
        body=request.read(),
        base_url=f"{url.scheme}://{url.netloc.decode()}",
        role=role,
    )


def _to_httpx(response: MockResponse, *, is_async: bool) -> httpx.Response:
    if response.action == "reset":
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
    if not response.is_stream:
        return httpx.Response(response.status, headers=response.headers, content=response.body)
    chunks = response.body
    assert not isinstance(chunks, bytes | bytearray)
    stream: httpx.AsyncByteStream | httpx.SyncByteStream = (
        _AsyncBody(chunks) if is_async else _SyncBody(chunks)
    )
    return httpx.Response(response.status, headers=response.headers, stream=stream)


def mock_router(
    server: MockServer,
    *,
    hosts: Mapping[str, str] | None = None,
    assert_all_called: bool = False,
    router: respx.MockRouter | None = None,
) -> respx.MockRouter:
    """A respx router that mounts ``server`` at the provider's real hosts.

    ``hosts`` maps a role to a base URL and defaults to the contract's ``hosts``::

        with mock_router(MockServer("cloudsway")):
            httpx.post("https://genaiapi.cloudsway.net/v2/ai/abc/images/generations", ...)
    """
    router = router or _Router(assert_all_called=assert_all_called, assert_all_mocked=True)
    mounted = dict(hosts or server.contract.behaviour.hosts)
    if not mounted:
        raise ValueError(f"{server.provider_id}'s contract names no hosts; pass hosts=")
    for role, base in mounted.items():
        parts = urlsplit(base)

        def side_effect(request: httpx.Request, role: str = role) -> Any:
            mreq = _to_mock(request, role)
            if _IN_ASYNC.get():
                async def answer() -> httpx.Response:
                    return _to_httpx(await server.dispatch(mreq), is_async=True)

                return answer()
            return _to_httpx(_LoopThread.run(server.dispatch(mreq)), is_async=False)

        router.route(scheme=parts.scheme, host=parts.hostname).mock(side_effect=side_effect)
    return router
