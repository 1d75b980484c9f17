"""Every provider that can share its state runs concurrent lifecycles on the Redis store."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from imagegen_conformance.mocks import MockServer, start
from imagegen_conformance.mocks.engine import share

pytestmark = pytest.mark.soak  # `python -m pytest -q -m soak`; CI runs it after the default suite


@pytest.mark.parametrize("provider", ["cloudsway", "acedata", "fal", "yunyx", "dify"])
async def test_lifecycles_on_the_shared_store_end_as_in_memory(
    provider: str, redis_url: str, flows: dict[str, Any]
) -> None:
    server = MockServer(provider, time_scale=1000, seed=2)
    await share(server, redis_url)
    served = await start([server], ports={server.provider_id: 0})
    try:
        urls = {i.role: i.url for i in served.listeners}
        flow, outcome = flows[provider]
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(*(flow(session, urls, n) for n in range(40)))
    finally:
        await served.close()
    assert [o for _, o in results] == [outcome] * 40
    assert len({task_id for task_id, _ in results}) == 40
    assert server.errors == []
    assert all(e.status is not None and e.status < 500 for e in server.journal.entries())
