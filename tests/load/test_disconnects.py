"""1,000 clients that drop their connection mid-stream leave nothing behind.

Dify SSE, fal's status stream and AceData's NDJSON, on a manual clock: no stream can end by
itself, so whatever is released afterwards was released because the client went away.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from imagegen_conformance.mocks import MockServer, start

pytestmark = pytest.mark.soak  # `python -m pytest -q -m soak`; CI runs it after the default suite

TOTAL = 1_000
WARMUP = TOTAL  # the same size: containers reach their high-water marks before measuring


async def _open_dify(session: aiohttp.ClientSession, base: str, n: int) -> aiohttp.ClientResponse:
    body = {"inputs": {"prompt": f"drop {n}"}, "response_mode": "streaming", "user": f"u{n}"}
    resp = await session.post(f"{base}/v1/workflows/run", json=body,
                              headers={"Authorization": "Bearer app-drop"})
    assert resp.status == 200, await resp.text()
    line = await resp.content.readline()
    assert line.startswith(b"data:"), line  # workflow_started: the stream is under way
    return resp


async def _open_fal(session: aiohttp.ClientSession, base: str, n: int) -> aiohttp.ClientResponse:
    auth = {"Authorization": "Key drop"}
    async with session.post(f"{base}/fal-ai/flux-1/dev", json={"prompt": f"drop {n}"}, headers=auth) as r:
        request_id = (await r.json())["request_id"]
    resp = await session.get(f"{base}/fal-ai/flux-1/requests/{request_id}/status/stream", headers=auth)
    assert resp.status == 200, await resp.text()
    line = await resp.content.readline()
    assert line.startswith(b"data:"), line  # IN_QUEUE
    return resp


async def _open_acedata(session: aiohttp.ClientSession, base: str, n: int) -> aiohttp.ClientResponse:
    body = {"action": "generate", "prompt": f"drop {n}", "model": "flux-dev", "size": "1024x1024"}
    resp = await session.post(f"{base}/flux/images", json=body, headers={
        "Authorization": "Bearer drop", "Accept": "application/x-ndjson"})
    assert resp.status == 200, await resp.text()
    line = await resp.content.readline()
    assert b'"progress"' in line, line  # the first progress line
    return resp


Opener = Callable[[aiohttp.ClientSession, str, int], Awaitable[aiohttp.ClientResponse]]
OPENERS: dict[str, tuple[Opener, str]] = {
    "dify": (_open_dify, "api"),
    "fal": (_open_fal, "queue"),
    "acedata": (_open_acedata, "api"),
}


async def _round(session: aiohttp.ClientSession, urls: dict[str, str], count: int, offset: int) -> None:
    names = list(OPENERS)
    jobs = []
    for n in range(offset, offset + count):
        name = names[n % len(names)]
        jobs.append(OPENERS[name][0](session, urls[name], n))
    responses = await asyncio.gather(*jobs)
    for resp in responses:
        resp.close()  # drop the connection, mid-stream


async def _settled(servers: list[MockServer], baseline: int, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until the servers hold nothing for the dropped streams; what is left, if not."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = {
            "asyncio tasks": len(asyncio.all_tasks()) - baseline,
            "incomplete exchanges": sum(
                1 for s in servers for e in s.journal.entries() if not e.complete
            ),
            "dify live streams": next(s for s in servers if s.provider_id == "dify").provider.live_streams,
            "background jobs": sum(len(s.background) for s in servers),
        }
        if not any(left.values()) or asyncio.get_running_loop().time() > deadline:
            return left
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_a_thousand_mid_stream_disconnects_leave_nothing_behind() -> None:
    # AceData with progress lines (option ndjson=progress): a stream that is under way.
    servers = [MockServer(p, clock="manual", seed=3, journal_size=5_000,
                          options={"ndjson": "progress"} if p == "acedata" else None)
               for p in OPENERS]
    served = await start(servers, ports={p: 0 for p in OPENERS})
    try:
        urls = {name: served.url(name, role) for name, (_, role) in OPENERS.items()}
        baseline = len(asyncio.all_tasks())
        # A fresh connection per stream, so that closing one response drops its socket.
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            await _round(session, urls, WARMUP, 0)
            left = await _settled(servers, baseline)
            assert not any(left.values()), f"after the warm-up: {left}"
            for server in servers:
                server.reset()
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            await _round(session, urls, TOTAL, WARMUP)
            left = await _settled(servers, baseline)
            assert not any(left.values()), f"left behind after {TOTAL} disconnects: {left}"
            for server in servers:
                assert server.errors == [], server.errors[:3]
                streamed = [(e.complete, e.duration_ms) for e in server.journal.entries() if e.events]
                assert streamed and all(done and ms is not None for done, ms in streamed)
                server.reset()  # what the journal and the task store keep on purpose goes too
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = after.compare_to(before, "lineno")
        # Nothing per stream survives its connection: no line of code holds about one new
        # allocation per dropped stream. (Hash tables that grew to a new high-water mark, such
        # as the selector's, are single allocations and bounded by the total below.)
        per_stream = [str(stat) for stat in stats if stat.count_diff >= TOTAL // 2]
        assert not per_stream, per_stream[:5]
        grown = sum(stat.size_diff for stat in stats)
        assert grown < 1_500_000, f"{grown / 1e6:.1f} MB still held after {TOTAL} dropped streams"
    finally:
        await served.close()
