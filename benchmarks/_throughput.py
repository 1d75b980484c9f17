"""Create+poll throughput of the Cloudsway mock next to a bare aiohttp handler, same run.

The load comes from aiohttp's own client (the realistic client, slower than the server).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from ._proc import ServerProcess

AUTH = {"Authorization": "Bearer bench"}
BODY = {"prompts": "benchmark", "aspect_ratio": "1:1", "step": 4}


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    server_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def per_cpu_second(self) -> float:
        """Requests the server process answered per second of its own CPU: its capacity."""
        return self.requests / self.server_cpu if self.server_cpu else float("nan")


async def _load(base: str, seconds: float, concurrency: int, polls: int) -> tuple[int, int]:
    done = errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                async with session.post(f"{base}/v2/ai/bench/images/generations", json=BODY,
                                        headers=AUTH) as resp:
                    data = await resp.json()
                    done += 1
                    errors += resp.status != 200
                for _ in range(polls):
                    async with session.get(f"{base}/v2/ai/bench/images/tasks/{data['taskId']}",
                                           headers=AUTH) as resp:
                        await resp.read()
                        done += 1
                        errors += resp.status != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors


def measure(kind: str, seconds: float, concurrency: int = 32, polls: int = 3) -> Result:
    with ServerProcess(kind, "cloudsway") as server:
        base = server.url
        asyncio.run(_load(base, 1.0, concurrency, polls))  # warm-up
        cpu0 = server.cpu()
        t0 = time.perf_counter()
        done, errors = asyncio.run(_load(base, seconds, concurrency, polls))
        elapsed = time.perf_counter() - t0
        cpu = server.cpu() - cpu0
    return Result(kind, done, errors, elapsed, cpu)


def run(seconds: float = 5.0) -> dict[str, object]:
    bare = measure("bare", seconds)
    mock = measure("mock", seconds)
    return {
        "name": "cloudsway create+poll throughput vs bare aiohttp",
        "bare": {"rps": bare.rps, "per_cpu_second": bare.per_cpu_second, "errors": bare.errors},
        "mock": {"rps": mock.rps, "per_cpu_second": mock.per_cpu_second, "errors": mock.errors},
        "ratio_rps": mock.rps / bare.rps,
        "ratio_capacity": mock.per_cpu_second / bare.per_cpu_second,
        "target": 0.6,
    }
