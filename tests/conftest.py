from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings

from mocks import MockServer, Served, TLSMaterial, start

pytest_plugins = ["pytester"]


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


# Hypothesis profiles: "default" keeps the suite fast; HYPOTHESIS_PROFILE=thorough digs deeper.
settings.register_profile("default", max_examples=25, deadline=None, print_blob=True)
settings.register_profile("ci", max_examples=25, deadline=None, print_blob=True, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))
