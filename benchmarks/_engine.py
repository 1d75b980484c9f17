"""Engine measurements: image rendering, the task store at its bound, memory of a million tasks."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import ImageSpec, render
from imagegen_conformance.mocks.engine._images import drawn_by_pillow


def _pillow_png(spec: ImageSpec) -> bytes:
    """The baseline: the same picture drawn and encoded by Pillow (adaptive PNG filters)."""
    out = io.BytesIO()
    drawn_by_pillow(spec).save(out, "PNG")
    return out.getvalue()


def images(count: int = 60, rounds: int = 3) -> dict[str, Any]:
    """Distinct 1024x1024 PNG links (no cache hit): the engine's renderer vs Pillow's encoder."""
    mine, theirs = [], []
    for r in range(rounds):  # interleaved, so both see the same machine
        specs = [ImageSpec.of(1024, 1024, prompt=f"bench {r} {n}", seed=r) for n in range(count)]
        t = time.perf_counter()
        for spec in specs:
            render(spec)
        mine.append(count / (time.perf_counter() - t))
        t = time.perf_counter()
        for spec in specs:
            _pillow_png(spec)
        theirs.append(count / (time.perf_counter() - t))
    rate, base = statistics.median(mine), statistics.median(theirs)
    return {"per_second": rate, "baseline_per_second": base, "ratio": rate / base, "target": 4.0}


async def _refusals(provider: str, path: str, body: dict[str, Any], live: int, tries: int) -> list[float]:
    server = MockServer(provider, clock="manual", seed=1, max_tasks=live, journal_size=1000,
                        faults=["never_finish"])
    auth = {"Authorization": "Bearer k"}
    for _ in range(live):
        answer = await server.request("POST", path, json=body, headers=auth)
        assert answer.status == 200, answer.body
    times = []
    for _ in range(tries):
        t = time.perf_counter()
        answer = await server.request("POST", path, json=body, headers=auth)
        times.append(time.perf_counter() - t)
        assert answer.status == 503, answer.status  # the provider's overload answer
    return times


def store_bound(live: int = 100_000, tries: int = 500) -> dict[str, Any]:
    """A create refused at the store's bound (every task live): time per refusal, through dispatch."""
    times = asyncio.run(_refusals("cloudsway", "/v2/ai/b/images/generations",
                                  {"prompts": "p", "aspect_ratio": "1:1", "step": 4}, live, tries))
    times.sort()
    return {"live": live, "median_ms": statistics.median(times) * 1000,
            "p99_ms": times[int(len(times) * 0.99)] * 1000, "target_ms": 1.0}


def million_tasks(count: int = 1_000_000) -> dict[str, Any]:
    """RSS growth of a million retained Cloudsway tasks made through dispatch (journal included)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks._tasks_mem", "cloudsway", str(count)],
                          capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["bytes_per_task"] = figures["mb"] * 2**20 / count
    figures["target_mb"] = 500
    return figures
