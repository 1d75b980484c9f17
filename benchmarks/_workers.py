"""Past one process: poll throughput of `serve --workers N --store redis://...`, same run.

Four servers answer the same Cloudsway status poll, one after another: the bare aiohttp
handler, one worker on the memory store, one worker on Redis, two workers on Redis (one
port, SO_REUSEPORT). Then 10,000 concurrent lifecycles across two workers. A redis-server of
the benchmark's own runs on a free loopback port (no persistence) and is stopped at the end.

Capacity is requests per CPU-second of every server process (the serve parent, its workers,
and redis-server where used), read from /proc; the rate achieved is shown beside it. The load
comes from ``wrk -t1`` when it is installed (else two Python client processes). ``--pin-load``
and ``--pin-servers`` (taskset CPU lists) keep the load generator and the servers (every
thread of the mock processes and redis-server) on CPUs of their own, to see what the machine
allows when they do not compete.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import aiohttp

from ._loadgen import hammer_processes, request_bytes, wrk_hammer, wrk_path
from ._proc import ServerProcess, cpu_seconds, drain

AUTH = {"Authorization": "Bearer bench"}
#: CPU sets (taskset lists, "0" or "0-1") for the load generator and the servers; None: any.
PIN: dict[str, str | None] = {"load": None, "servers": None}


def cpus(spec: str) -> set[int]:
    """A taskset CPU list ("0", "1,3", "0-1") as a set."""
    out: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def _pin_servers(pids: list[int]) -> None:
    """Every thread of ``pids`` onto the servers' CPUs (threads made later inherit it)."""
    if PIN["servers"] is None:
        return
    where = cpus(PIN["servers"])
    for pid in pids:
        with suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with suppress(OSError):
                    os.sched_setaffinity(int(tid), where)


@contextmanager
def _load_cpus() -> Iterator[None]:
    """This process, and the load generator it starts, on the load generator's CPUs."""
    if PIN["load"] is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus(PIN["load"]))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    """(url, pid) of a throwaway redis-server on a free loopback port."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="imagegen-bench-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


class Serve:
    """`imagegen-conformance serve -p cloudsway` with N workers; CPU of the whole process group."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imagegen_conformance", "serve", "-p", "cloudsway", "--port", "0",
             "--worker-ports", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().split()[1]
        self.own: list[str] = []
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        if workers > 1:
            self.own = [self.proc.stdout.readline().split()[3] for _ in range(workers)]
        drain(self.proc.stdout)

    def pids(self) -> list[int]:
        out = [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return out

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(20)


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with suppress(OSError):
            total += cpu_seconds(pid)
    return total


async def _create(url: str, count: int) -> list[str]:
    ids = []
    async with aiohttp.ClientSession(headers=AUTH) as http:
        for n in range(count):
            async with http.post(f"{url}/v2/ai/bench/images/generations",
                                 json={"prompts": f"b{n}", "aspect_ratio": "1:1", "step": 4}) as r:
                ids.append((await r.json())["taskId"])
    return ids


def _hammer(url: str, reqs: list[bytes], *, concurrency: int, seconds: float) -> Any:
    with _load_cpus():
        if wrk_path():
            return wrk_hammer(url, reqs, concurrency=concurrency, seconds=seconds)
        return hammer_processes(url, reqs, concurrency=concurrency, seconds=seconds)


def _polls(url: str, pids: list[int], ids: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    reqs = [request_bytes(f"{url}/v2/ai/bench/images/tasks/{i}", headers=AUTH) for i in ids]
    _pin_servers(pids)
    _hammer(url, reqs, concurrency=concurrency, seconds=1.0)  # warm-up
    cpu0 = _cpu(pids)
    result = _hammer(url, reqs, concurrency=concurrency, seconds=seconds)
    cpu = _cpu(pids) - cpu0
    return {"rps": result.rps, "per_cpu_second": result.requests / cpu if cpu else float("nan"),
            "server_cores": cpu / result.seconds, "errors": result.errors, "requests": result.requests}


def poll_scaling(seconds: float, concurrency: int = 64) -> dict[str, Any]:
    """Bare handler, 1 worker in memory, 1 and 2 workers over Redis: the same poll, one run."""
    out: dict[str, Any] = {"concurrency": concurrency, "cores": os.cpu_count(),
                           "loadgen": "wrk -t1" if wrk_path() else "Python, 2 processes",
                           "pin_load": PIN["load"], "pin_servers": PIN["servers"]}
    with ServerProcess("bare") as bare:
        out["bare"] = _polls(bare.url, [bare.pid], ["0"], seconds, concurrency)
    serve = Serve()
    try:
        ids = asyncio.run(_create(serve.url, 64))
        out["memory_1"] = _polls(serve.url, serve.pids(), ids, seconds, concurrency)
    finally:
        serve.close()
    with redis_server() as (store, redis_pid):
        for workers in (1, 2):
            serve = Serve("--store", store, "--workers", str(workers))
            try:
                ids = asyncio.run(_create(serve.url, 64))
                figures = _polls(serve.url, [*serve.pids(), redis_pid], ids, seconds, concurrency)
                mock_cpu = _polls(serve.url, serve.pids(), ids, seconds, concurrency)
                figures["per_mock_cpu_second"] = mock_cpu["per_cpu_second"]
                out[f"redis_{workers}"] = figures
            finally:
                serve.close()
    out["two_vs_one_rps"] = out["redis_2"]["rps"] / out["redis_1"]["rps"]
    out["redis_vs_memory_rps"] = out["redis_1"]["rps"] / out["memory_1"]["rps"]
    out["redis_cost_us_per_poll"] = (1 / out["redis_1"]["per_cpu_second"]
                                     - 1 / out["memory_1"]["per_cpu_second"]) * 1e6
    out["target_two_vs_one"] = 1.6
    return out


async def _lifecycles(urls: list[str], total: int) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as http:

        async def call(method: str, url: str, **kw: Any) -> Any:
            async with http.request(method, url, **kw) as r:
                statuses[r.status] = statuses.get(r.status, 0) + 1
                return await r.json()

        async def one(n: int) -> str:
            created = await call("POST", f"{urls[n % 2]}/v2/ai/bench/images/generations",
                                 json={"prompts": f"l{n}", "aspect_ratio": "1:1"})
            task = f"/v2/ai/bench/images/tasks/{created['taskId']}"
            while True:  # poll through the other worker until it completes
                body = await call("GET", urls[(n + 1) % 2] + task)
                if body["completed"]:
                    return str(created["taskId"])
                await asyncio.sleep(0.05)

        t0 = time.perf_counter()
        ids = await asyncio.gather(*(one(n) for n in range(total)))
        elapsed = time.perf_counter() - t0
    return {"lifecycles": total, "distinct_ids": len(set(ids)), "seconds": elapsed,
            "requests": sum(statuses.values()), "statuses": {str(k): v for k, v in statuses.items()},
            "lifecycles_per_s": total / elapsed}


def worker_lifecycles(total: int = 10_000) -> dict[str, Any]:
    """10,000 concurrent Cloudsway lifecycles across 2 workers (created on one, polled on the other)."""
    with redis_server() as (store, _):
        # 100x: a task takes 2.5-5.5 provider seconds, 25-55 ms here.
        serve = Serve("--store", store, "--workers", "2", "--time-scale", "100")
        try:
            figures = asyncio.run(_lifecycles(serve.own, total))
        finally:
            serve.close()
    return figures


if __name__ == "__main__":  # python -m benchmarks._workers: a quick look
    print(json.dumps({"polls": poll_scaling(3.0), "lifecycles": worker_lifecycles()}, indent=2))


async def _in_process_polls(server: Any, polls: int, concurrency: int) -> float:
    """Process CPU seconds for ``polls`` Cloudsway status polls of finished tasks, in process."""
    ids = []
    for n in range(concurrency):
        made = await server.request("POST", "/v2/ai/bench/images/generations", headers=AUTH,
                                    json={"prompts": f"s{n}", "aspect_ratio": "1:1", "step": 4})
        ids.append(json.loads(made.body)["taskId"])
    await server.request("POST", "/__mock/clock/advance", json={"seconds": 60})

    async def poller(task_id: str, count: int) -> None:
        for _ in range(count):
            answer = await server.request("GET", f"/v2/ai/bench/images/tasks/{task_id}", headers=AUTH)
            assert answer.status == 200, answer.body

    await asyncio.gather(*(poller(i, 50) for i in ids))  # warm-up
    t0 = time.process_time()
    await asyncio.gather(*(poller(i, polls // concurrency) for i in ids))
    return time.process_time() - t0


def store_cost(polls: int = 20_000, concurrency: int = 20) -> dict[str, Any]:
    """CPU per poll in process (``MockServer`` + ``share()``): memory store vs Redis store.

    Process CPU time (and redis-server's, from /proc), so the figure holds on a busy machine."""
    from imagegen_conformance.mocks import MockServer
    from imagegen_conformance.mocks.engine import share

    async def memory() -> float:
        server = MockServer("cloudsway", clock="manual", journal_size=1000)
        try:
            return await _in_process_polls(server, polls, concurrency)
        finally:
            await server.aclose()

    async def shared(url: str) -> float:
        server = MockServer("cloudsway", clock="manual", journal_size=1000)
        await share(server, url)
        try:
            return await _in_process_polls(server, polls, concurrency)
        finally:
            await server.aclose()

    out: dict[str, Any] = {"polls": polls, "concurrency": concurrency}
    out["memory_us"] = asyncio.run(memory()) / polls * 1e6
    with redis_server() as (url, redis_pid):
        before = cpu_seconds(redis_pid)
        mock = asyncio.run(shared(url))
        redis_cpu = cpu_seconds(redis_pid) - before  # the warm-up and set-up included: an upper bound
    out["redis_mock_us"] = mock / polls * 1e6
    out["redis_server_us"] = redis_cpu / polls * 1e6
    out["redis_cost_us"] = out["redis_mock_us"] + out["redis_server_us"] - out["memory_us"]
    return out
