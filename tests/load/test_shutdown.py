"""SIGTERM with requests in flight: each finishes or gets a clean error, and nothing hangs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

pytestmark = pytest.mark.soak  # `python -m pytest -q -m soak`; CI runs it after the default suite

IN_FLIGHT = 60


async def _sync_acedata(session: aiohttp.ClientSession, base: str, n: int) -> str:
    body = {"action": "generate", "prompt": f"term {n}", "model": "flux-dev", "size": "512x512"}
    async with session.post(f"{base}/flux/images", json=body,
                            headers={"Authorization": "Bearer term"}) as resp:
        await resp.read()
        return f"answered {resp.status}"


async def _dify_stream(session: aiohttp.ClientSession, base: str, n: int) -> str:
    body = {"inputs": {"prompt": f"term {n}"}, "response_mode": "streaming", "user": f"u{n}"}
    async with session.post(f"{base}/v1/workflows/run", json=body,
                            headers={"Authorization": "Bearer app-term"}) as resp:
        async for _ in resp.content:
            pass
        return f"answered {resp.status}"


async def _quick(session: aiohttp.ClientSession, base: str) -> str:
    async with session.get(f"{base}/v1/parameters", headers={"Authorization": "Bearer app-term"}) as resp:
        await resp.read()
        return f"answered {resp.status}"


async def _outcome(job: asyncio.Future[str]) -> str:
    try:
        return await job
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        return f"clean error {type(exc).__name__}"


@pytest.mark.timeout(45)
async def test_sigterm_with_requests_in_flight_ends_every_one_and_the_process() -> None:
    # Provider time at 10x: an AceData sync generation holds its request 6-12 s, a Dify run
    # streams for 1-3 s; SIGTERM arrives while all of them are open.
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagegen_conformance", "serve", "-p", "acedata,dify", "--port", "0", "--json",
         "--time-scale", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        urls = {}
        for _ in range(2):
            line = json.loads(proc.stdout.readline())
            urls[line["provider"]] = line["url"]
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=0)) as session:
            jobs = [asyncio.ensure_future(_sync_acedata(session, urls["acedata"], n))
                    for n in range(IN_FLIGHT // 2)]
            jobs += [asyncio.ensure_future(_dify_stream(session, urls["dify"], n))
                     for n in range(IN_FLIGHT // 2)]
            assert await _quick(session, urls["dify"]) == "answered 200"
            await asyncio.sleep(0.5)  # every request is now being answered
            assert not any(job.done() for job in jobs[: IN_FLIGHT // 2])
            started = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            outcomes = await asyncio.gather(*(_outcome(job) for job in jobs))
            code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20)
            took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()  # also closes the pipes
    assert code == 0, stderr
    # Shutdown waits a bounded grace period (5 s) for answers in flight, then closes the rest.
    assert took < 9, f"shutdown took {took:.1f} s"
    allowed = {"answered 200", "clean error ServerDisconnectedError",
               "clean error ClientPayloadError", "clean error ClientOSError"}
    assert set(outcomes) <= allowed, outcomes
    assert len(outcomes) == IN_FLIGHT
    assert "Traceback" not in stderr, stderr
    print(f"shutdown in {took:.1f} s:", {o: outcomes.count(o) for o in set(outcomes)})
