"""Mocks served from a background thread with its own event loop.

For callers that have no event loop of their own to lend (a CLI command, a pytest session with
sync and async tests alike): the servers keep running between calls, and every interaction is
marshalled onto their loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._serve import Served, TLSMaterial, start
from ._server import MockServer

__all__ = ["ServeThread"]

T = TypeVar("T")


class ServeThread:
    """``with ServeThread([MockServer("cloudsway")]) as st: st.url("cloudsway")``."""

    def __init__(
        self,
        servers: list[MockServer] | Callable[[], list[MockServer]],
        *,
        host: str = "127.0.0.1",
        ports: dict[str, int] | None = None,
        tls: TLSMaterial | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        self._factory = servers if callable(servers) else (lambda: servers)
        self._host = host
        self._ports = ports
        self._tls = tls
        self._timeout = startup_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="imagegen-mocks",
                                        daemon=True)
        self.served: Served | None = None

    def start(self) -> ServeThread:
        self._thread.start()

        async def boot() -> Served:
            servers = self._factory()
            ports = self._ports or {s.provider_id: 0 for s in servers}
            return await start(servers, host=self._host, ports=ports, tls=self._tls)

        self.served = self.run(boot(), timeout=self._timeout)
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the servers' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float | None = 30.0) -> T:
        """Run a plain function on the servers' loop (for state that is not thread-safe)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    @property
    def servers(self) -> list[MockServer]:
        assert self.served is not None, "ServeThread.start() first"
        return self.served.servers

    def server(self, provider: str) -> MockServer:
        for server in self.servers:
            if provider in (server.provider_id, server.name):
                return server
        raise KeyError(provider)

    def url(self, provider: str, role: str | None = None) -> str:
        assert self.served is not None, "ServeThread.start() first"
        return self.served.url(provider, role)

    def stop(self) -> None:
        """Close the servers and the loop; safe to call twice."""
        if not self._thread.is_alive():
            return
        if self.served is not None:
            self.run(self.served.close(), timeout=15)
            self.served = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ServeThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
