"""10,000 concurrent lifecycles across two `serve --workers` processes sharing one Redis."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.soak  # `python -m pytest -q -m soak`; CI runs it after the default suite

TOTAL = 10_000
AUTH = {"Authorization": "Bearer load-key"}


async def _serve(store: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagegen_conformance", "serve", "-p", "cloudsway", "--port", "0",
        "--workers", "2", "--worker-ports", "--store", store, "--clock", "manual",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )
    assert proc.stdout is not None
    own: dict[int, str] = {}
    while len(own) < 2:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        assert line, "serve ended"
        if line[0] == "worker":
            own[int(line[1])] = line[3]
    return proc, [own[1], own[2]]


@pytest.mark.timeout(300)
async def test_ten_thousand_concurrent_lifecycles_across_two_workers(redis_url: str) -> None:
    proc, workers = await _serve(redis_url)
    statuses: collections.Counter[int] = collections.Counter()
    served_by: collections.Counter[str] = collections.Counter()
    try:
        connector = aiohttp.TCPConnector(limit=128)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=200)) as session:

            async def call(method: str, url: str, **kw: Any) -> Any:
                async with session.request(method, url, headers=AUTH, **kw) as r:
                    statuses[r.status] += 1
                    served_by[url.split("/v2", 1)[0]] += 1
                    return await r.json()

            async def begin(n: int) -> tuple[int, str, str]:
                created = await call("POST", f"{workers[n % 2]}/v2/ai/load/images/generations",
                                     json={"prompts": f"load {n}", "aspect_ratio": "1:1"})
                task_id = created["taskId"]
                if n % 10:
                    return n, task_id, "pending"
                # One in ten: the other worker finds it at once, not yet finished.
                seen = await call("GET", f"{workers[(n + 1) % 2]}/v2/ai/load/images/tasks/{task_id}")
                return n, task_id, seen["status"]

            async def finish(n: int, task_id: str) -> str:
                done = await call("GET", f"{workers[(n + 1) % 2]}/v2/ai/load/images/tasks/{task_id}")
                return str(done["status"])

            begun = await asyncio.gather(*(begin(n) for n in range(TOTAL)))
            async with session.post(f"{workers[0]}/__mock/clock/advance", json={"seconds": 60}) as r:
                assert r.status == 200
            finals = await asyncio.gather(*(finish(n, task_id) for n, task_id, _ in begun))
            async with session.get(f"{workers[1]}/__mock/health") as r:
                health = await r.json()
            async with session.get(f"{workers[0]}/__mock/journal") as r:
                journal = json.loads(await r.text())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        print(log[-3000:])
    assert "unreachable" not in log, log[-2000:]

    ids = [task_id for _, task_id, _ in begun]
    assert len(ids) == TOTAL and len(set(ids)) == TOTAL  # none lost, none handed out twice
    assert {state for _, _, state in begun} == {"pending"}
    assert collections.Counter(finals) == {"completed": TOTAL}
    assert statuses == {200: 2 * TOTAL + TOTAL // 10}, statuses  # no 5xx, no 4xx: nothing no fault asked for
    assert served_by[workers[0]] >= TOTAL and served_by[workers[1]] >= TOTAL  # each half of it
    assert health["tasks"] == TOTAL
    exchanges = journal["exchanges"]
    assert journal["last_seq"] == 2 * TOTAL + TOTAL // 10 and len(exchanges) == 10_000
    assert all(e["status"] == 200 and e["complete"] for e in exchanges)
    assert proc.returncode == 0
