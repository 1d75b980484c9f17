from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mocks import MockServer, Served, TLSMaterial, start


@dataclass
class Running:
    """A mock served on real sockets for one test."""

    server: MockServer
    served: Served
    url: str  # the primary host's base URL

    def role_url(self, role: str) -> str:
        return self.served.url(self.server.provider_id, role)


ServeMock = Callable[..., Awaitable[Running]]


@pytest.fixture
async def serve_mock() -> AsyncIterator[ServeMock]:
    """Factory: ``await serve_mock("cloudsway", clock="manual", tls=None, ...)`` on port 0."""
    running: list[Served] = []

    async def factory(provider: str, *, tls: TLSMaterial | None = None, **kwargs: Any) -> Running:
        server = MockServer(provider, **kwargs)
        served = await start([server], ports={server.provider_id: 0}, tls=tls)
        running.append(served)
        return Running(server, served, served.url(server.provider_id))

    yield factory
    for served in running:
        await served.close()
