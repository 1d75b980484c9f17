"""The measurements of issue 9, each returning a dict of figures (all in one run, one machine)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp

from ._loadgen import hammer, hammer_processes, request_bytes, wrk_hammer, wrk_path
from ._proc import ServerProcess, drain, rss_bytes

AUTH = {"cloudsway": "Bearer bench", "acedata": "Bearer bench", "fal": "Key bench",
        "yunyx": "Bearer bench", "dify": "Bearer app-bench"}
JSON = {"Content-Type": "application/json"}


# --- 1. status-poll throughput next to a bare aiohttp handler ----------------------------------

async def _create_tasks(provider: str, urls: dict[str, str], count: int) -> list[str]:
    """Tasks to poll, created over the socket as a client would."""
    auth = {"Authorization": AUTH[provider]}
    ids = []
    async with aiohttp.ClientSession(headers=auth) as http:
        for n in range(count):
            if provider == "cloudsway":
                async with http.post(f"{urls['api']}/v2/ai/bench/images/generations",
                                     json={"prompts": f"b{n}", "aspect_ratio": "1:1", "step": 4}) as r:
                    ids.append((await r.json())["taskId"])
            elif provider == "acedata":
                async with http.post(f"{urls['api']}/flux/images", json={
                        "action": "generate", "prompt": f"b{n}", "model": "flux-dev",
                        "size": "1024x1024", "async": True}) as r:
                    ids.append((await r.json())["task_id"])
            elif provider == "fal":
                async with http.post(f"{urls['queue']}/fal-ai/flux-1/dev", json={"prompt": f"b{n}"}) as r:
                    ids.append((await r.json())["request_id"])
            elif provider == "dify":
                async with http.post(f"{urls['api']}/v1/workflows/run", json={
                        "inputs": {"prompt": f"b{n}"}, "response_mode": "blocking", "user": "b"}) as r:
                    ids.append((await r.json())["workflow_run_id"])
    return ids


def _poll_request(provider: str, urls: dict[str, str], ids: list[str]) -> Callable[[int], bytes]:
    """The provider's status poll, over the task ids in turn, as ready-made bytes."""
    auth = {"Authorization": AUTH[provider]}
    if provider == "cloudsway":
        reqs = [request_bytes(f"{urls['api']}/v2/ai/bench/images/tasks/{i}", headers=auth) for i in ids]
    elif provider == "acedata":
        reqs = [request_bytes(f"{urls['api']}/flux/tasks", "POST", {**auth, **JSON},
                              json.dumps({"action": "retrieve", "id": i}).encode()) for i in ids]
    elif provider == "fal":
        reqs = [request_bytes(f"{urls['queue']}/fal-ai/flux-1/requests/{i}/status", headers=auth)
                for i in ids]
    else:
        reqs = [request_bytes(f"{urls['api']}/v1/workflows/run/{i}", headers=auth) for i in ids]
    return lambda n: reqs[n % len(reqs)]


#: Headers aiohttp writes itself on every answer: the captured baseline lets it write its own.
_OWN_HEADERS = {"content-length", "date", "server", "connection", "keep-alive", "transfer-encoding"}


async def _send(
    url: str, req: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, list[list[str]]]:
    """Send ``req`` raw and read the answer's head: (reader, writer, status, headers)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [[x.strip() for x in line.split(":", 1)] for line in lines[1:] if ":" in line]
    return reader, writer, int(lines[0].split()[1]), headers


def _replayable(headers: list[list[str]]) -> list[list[str]]:
    return [[k, v] for k, v in headers if k.lower() not in _OWN_HEADERS]


async def _capture(url: str, req: bytes) -> dict[str, Any]:
    """One answer's status, headers and body bytes, as the mock sent them."""
    import base64

    reader, writer, status, headers = await _send(url, req)
    length = next(int(v) for k, v in headers if k.lower() == "content-length")
    body = await reader.readexactly(length)
    writer.close()
    return {"status": status, "body_b64": base64.b64encode(body).decode(),
            "headers": _replayable(headers), "bytes": length}


async def _capture_stream(url: str, req: bytes) -> dict[str, Any]:
    """One chunked answer's status, headers and chunks, as the mock sent them."""
    import base64

    reader, writer, status, headers = await _send(url, req)
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            break
        chunks.append((await reader.readexactly(size + 2))[:-2])
    writer.close()
    return {"status": status, "chunks_b64": [base64.b64encode(c).decode() for c in chunks],
            "headers": _replayable(headers), "bytes": sum(len(c) for c in chunks), "chunks": len(chunks)}


def loadgen_name() -> str:
    """Which load generator the throughput figures come from."""
    if wrk_path():
        version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        return f"wrk -t1 ({(version.split() or ['wrk', '?'])[1]})"
    return "Python (benchmarks/_loadgen.py; install Debian's wrk for a compiled one)"


class _Target(Protocol):
    """A server under load: where it listens, and its CPU time so far."""

    @property
    def url(self) -> str: ...

    def cpu(self) -> float: ...


def _load(server: _Target, reqs: list[bytes], seconds: float, concurrency: int) -> dict[str, float]:
    cpu0 = server.cpu()
    if wrk_path():
        result = wrk_hammer(server.url, reqs, concurrency=concurrency, seconds=seconds)
    else:
        result = asyncio.run(hammer(server.url, lambda n: reqs[n % len(reqs)], concurrency=concurrency,
                                    seconds=seconds, ok=lambda s: s < 500))
    cpu = server.cpu() - cpu0
    return {"rps": result.rps, "per_cpu_second": result.requests / cpu if cpu else float("nan"),
            "errors": result.errors, "requests": result.requests}


def poll_throughput(seconds: float, concurrency: int = 32, rounds: int = 3) -> dict[str, Any]:
    """Each provider's status poll vs a bare aiohttp handler answering the same bytes and headers.

    Mock and baseline run side by side and are loaded in interleaved rounds; each figure is the
    median round. The baseline serves the mock's own captured answer, as it is.
    """
    out: dict[str, Any] = {"providers": {}, "target": 0.7, "loadgen": loadgen_name()}
    for provider in ("cloudsway", "acedata", "fal", "dify"):
        # Polls of finished tasks (1000x: they end before the load starts), the answer a client
        # waiting for its images sees most; a finished task's answer never changes.
        with ServerProcess("mock", provider, "--time-scale", "1000") as srv:
            ids = asyncio.run(_create_tasks(provider, srv.urls, 64))
            time.sleep(0.2)  # 200 provider seconds: every task has ended
            make = _poll_request(provider, srv.urls, ids)
            reqs = [make(n) for n in range(len(ids))]
            answer = asyncio.run(_capture(srv.url, reqs[0]))
            figures = _side_by_side(srv, reqs, answer, seconds, concurrency, rounds)
        figures["answer_bytes"] = answer["bytes"]
        out["providers"][provider] = figures
    out["providers"]["yunyx"] = None  # synchronous: no status endpoint to poll
    return out


def _side_by_side(srv: ServerProcess, reqs: list[bytes], answer: dict[str, Any], seconds: float,
                  concurrency: int, rounds: int) -> dict[str, Any]:
    """The mock and a bare handler answering ``answer``, loaded in interleaved rounds (medians)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(answer, f)
    try:
        with ServerProcess("bare", "--answer", f.name) as bare:
            _load(srv, reqs, 0.5, concurrency)  # warm-up
            _load(bare, reqs, 0.5, concurrency)
            mine, theirs = [], []
            for _ in range(rounds):
                mine.append(_load(srv, reqs, seconds, concurrency))
                theirs.append(_load(bare, reqs, seconds, concurrency))
    finally:
        os.unlink(f.name)
    figures: dict[str, Any] = _median(mine)
    figures["bare"] = _median(theirs)
    figures["ratio_rps"] = figures["rps"] / figures["bare"]["rps"]
    figures["ratio_capacity"] = figures["per_cpu_second"] / figures["bare"]["per_cpu_second"]
    return figures


def runs(seconds: float, concurrency: int = 32, rounds: int = 3) -> dict[str, Any]:
    """A yunyx generation and a Dify streaming run vs bare aiohttp answering the same bytes/chunks.

    Both wait on the provider's clock (yunyx: the inference time; Dify: each node's time), run
    here at a million times real time so that the wait is microseconds and what is measured is
    the work of answering. The baseline answers the mock's own captured answer: one body for
    yunyx; for Dify the same SSE chunks, written one by one as a chunked stream.
    """
    out: dict[str, Any] = {"loadgen": loadgen_name(), "targets": {"yunyx": 0.6, "dify": 0.5}}
    scale = "1000000"
    with ServerProcess("mock", "yunyx", "--time-scale", scale) as srv:
        body = json.dumps({"model": "FLUX.1-schnell", "prompt": "a fox", "image_size": "1024x1024"}).encode()
        headers = {"Authorization": AUTH["yunyx"], **JSON}
        reqs = [request_bytes(f"{srv.url}/v1/images/generations", "POST", headers, body)]
        answer = asyncio.run(_capture(srv.url, reqs[0]))
        assert answer["status"] == 200, answer
        figures = _side_by_side(srv, reqs, answer, seconds, concurrency, rounds)
        figures["answer_bytes"] = answer["bytes"]
        out["yunyx"] = figures
    with ServerProcess("mock", "dify", "--time-scale", scale) as srv:
        body = json.dumps({"inputs": {"prompt": "a fox"}, "response_mode": "streaming", "user": "b"}).encode()
        headers = {"Authorization": AUTH["dify"], **JSON}
        reqs = [request_bytes(f"{srv.url}/v1/workflows/run", "POST", headers, body)]
        answer = asyncio.run(_capture_stream(srv.url, reqs[0]))
        assert answer["status"] == 200, answer
        figures = _side_by_side(srv, reqs, answer, seconds, concurrency, rounds)
        figures["answer_bytes"] = answer["bytes"]
        figures["chunks"] = answer["chunks"]
        out["dify"] = figures
    return out


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    ordered = sorted(rounds, key=lambda r: r["rps"])
    return dict(ordered[len(ordered) // 2])


# --- 2. 100 pollers, 50 ms of injected latency -------------------------------------------------

def _latency_run(srv: ServerProcess, reqs: list[bytes], seconds: float, clients: int,
                 stagger: float, ideal: float) -> dict[str, Any]:
    cpu0 = srv.cpu()
    # Two client processes: one Python process answering 2,000 responses a second adds its own
    # queueing to every latency it measures.
    result = hammer_processes(srv.url, reqs, concurrency=clients, seconds=seconds, stagger=stagger)
    cpu = srv.cpu() - cpu0
    lat = sorted(result.latencies)
    return {"rps": result.rps, "fraction": result.rps / ideal, "errors": result.errors,
            "median_ms": lat[len(lat) // 2] * 1000, "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
            "server_cpu_fraction": cpu / result.seconds}


def latency_pollers(seconds: float, clients: int = 100, latency_ms: int = 50) -> dict[str, Any]:
    ideal = clients / (latency_ms / 1000)
    out: dict[str, Any] = {"clients": clients, "latency_ms": latency_ms, "ideal_rps": ideal,
                           "target": 0.9}
    with ServerProcess("bare") as bare:
        req = request_bytes(f"{bare.url}/v2/ai/bench/images/tasks/0",
                            headers={"X-Bare-Latency-Ms": str(latency_ms)})
        out["bare"] = _latency_run(bare, [req], seconds, clients, latency_ms / 1000, ideal)
    with ServerProcess("mock", "cloudsway", "--fault", f"latency:{latency_ms};op=getImageTask") as srv:
        ids = asyncio.run(_create_tasks("cloudsway", srv.urls, clients))
        make = _poll_request("cloudsway", srv.urls, ids)
        reqs = [make(n) for n in range(len(ids))]
        asyncio.run(hammer(srv.url, make, concurrency=clients, seconds=0.5))
        # Independent clients (random start within one latency period), and all in step (every
        # client starting together: the answers then come back in bursts, and each burst waits
        # behind itself).
        out["independent"] = _latency_run(srv, reqs, seconds, clients, latency_ms / 1000, ideal)
        out["in_step"] = _latency_run(srv, reqs, seconds, clients, 0.0, ideal)
    out["ratio_to_bare"] = out["independent"]["rps"] / out["bare"]["rps"]
    return out


# --- 3. the validating proxy's added latency --------------------------------------------------

def proxy_latency(requests: int = 2_000) -> dict[str, Any]:
    with ServerProcess("mock", "cloudsway") as srv:
        ids = asyncio.run(_create_tasks("cloudsway", srv.urls, 16))
        proxy = subprocess.Popen(
            [sys.executable, "-m", "imagegen_conformance", "proxy", "-p", "cloudsway", "--target", srv.url,
             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proxy.stdout is not None
            banner = proxy.stdout.readline()
            drain(proxy.stdout)
            via = banner.split(" proxy ", 1)[1].split(" -> ", 1)[0].strip()

            def run(base: str) -> list[float]:
                make = _poll_request("cloudsway", {"api": base}, ids)
                asyncio.run(hammer(base, make, concurrency=1, seconds=0.3))  # warm-up
                lat: list[float] = []
                while len(lat) < requests:
                    got = asyncio.run(hammer(base, make, concurrency=1, seconds=0.5, keep_latencies=True))
                    lat += got.latencies
                return lat[:requests]

            direct, proxied = run(srv.url), run(via)
        finally:
            proxy.terminate()
            proxy.wait(10)
            if proxy.stdout:
                proxy.stdout.close()

    def pct(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000

    return {
        "requests": requests,
        "direct_median_ms": pct(direct, 0.5), "direct_p99_ms": pct(direct, 0.99),
        "proxy_median_ms": pct(proxied, 0.5), "proxy_p99_ms": pct(proxied, 0.99),
        "added_median_ms": pct(proxied, 0.5) - pct(direct, 0.5),
        "added_p99_ms": pct(proxied, 0.99) - pct(direct, 0.99),
        "target_median_ms": 1.0,
    }


# --- 4. 10,000 Dify SSE streams on one process ------------------------------------------------

async def _hold_streams(url: str, count: int, hold: float, interval: float,
                        server_cpu: Callable[[], float] = lambda: 0.0) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"inputs": {"prompt": "p"}, "response_mode": "streaming", "user": "b"}).encode()
    req = request_bytes(f"{url}/v1/workflows/run", "POST",
                        {"Authorization": AUTH["dify"], **JSON}, body)
    pings: list[list[float]] = [[] for _ in range(count)]
    opened = asyncio.Event()
    started = 0
    stop_at: float = 0.0
    t_start = time.perf_counter()

    # At most this many streams being opened at once, as many clients starting over a few
    # seconds would: 10,000 handshakes at once overflow the kernel's listen queue (4,096 here),
    # and a dropped SYN is only sent again a second later.
    opening = asyncio.Semaphore(512)

    async def one(i: int) -> None:
        nonlocal started
        async with opening:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(req)
            await reader.readuntil(b"\r\n\r\n")
        started += 1
        if started == count:
            opened.set()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if b"event: ping" in line or b'"event": "ping"' in line or b'"event":"ping"' in line:
                    pings[i].append(time.perf_counter())
                if stop_at and time.perf_counter() > stop_at:
                    return
        finally:
            writer.close()

    cpu0, server0 = time.process_time(), server_cpu()
    jobs = [asyncio.ensure_future(one(i)) for i in range(count)]
    await asyncio.wait_for(opened.wait(), 120)
    t_open = time.perf_counter()
    client_open_cpu, server_open_cpu = time.process_time() - cpu0, server_cpu() - server0
    stop_at = t_open + hold
    await asyncio.sleep(hold + interval * 0.2)
    for job in jobs:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    off = total = 0
    worst = 0.0
    for times in pings:
        seen = [t for t in times if t >= t_open]
        for a, b in itertools.pairwise(seen):
            total += 1
            gap = b - a
            worst = max(worst, abs(gap - interval))
            off += abs(gap - interval) > interval * 0.1  # target: every ping within 10%
    return {"gaps": total, "off": off, "worst_offset_s": worst, "open_s": t_open - t_start,
            "client_open_cpu_s": client_open_cpu, "server_open_cpu_s": server_open_cpu,
            "streams_with_pings": sum(1 for t in pings if t)}


def dify_streams(count: int = 10_000, hold: float = 25.0) -> dict[str, Any]:
    """``count`` Dify streaming runs that never finish, held open on one server process.

    Real time (scale 1): a ping every ``limits.ping_interval`` provider seconds, the contract's
    10 s. Each gap between two pings of a stream, seen by the client, must be within 10% of the
    interval. The client (one Python process) shares the machine's cores with the server.
    """
    from imagegen_conformance import contracts

    interval = float(contracts.load("dify").behaviour.limits.get("ping_interval", 10))
    with ServerProcess("mock", "dify", "--fault", "never_finish") as srv:
        time.sleep(0.3)
        before = srv.rss()
        cpu0 = srv.cpu()
        figures = asyncio.run(_hold_streams(srv.url, count, hold, interval, srv.cpu))
        # RSS is read while the streams are still open: _hold_streams cancels them only after.
        after = srv.rss()
        cpu = srv.cpu() - cpu0
    figures.update({"streams": count, "ping_interval_s": interval, "rss_before_mb": before / 2**20,
                    "rss_delta_mb": (after - before) / 2**20,
                    "kb_per_stream": (after - before) / count / 1024,
                    "server_cpu_fraction": cpu / (figures["open_s"] + hold), "target_open_s": 5.0,
                    "server_cpu_s": cpu,
                    "server_cpu_ms_per_stream": figures["server_open_cpu_s"] / count * 1000})
    return figures


# --- 5. memory of 100,000 retained tasks ----------------------------------------------------

def retained_tasks(count: int = 100_000, providers: tuple[str, ...] = ("cloudsway", "fal")) -> dict[str, Any]:
    out: dict[str, Any] = {"count": count, "target_mb": 150}
    for provider in providers:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "benchmarks._tasks_mem", provider, str(count)],
                              capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures["seconds"] = time.perf_counter() - t0
        out[provider] = figures
    return out


# --- 6. the whole scenario catalogue with the reference clients ---------------------------------

def scenario_catalogue() -> dict[str, Any]:
    from imagegen_conformance import contracts, harness
    out: dict[str, Any] = {"providers": {}, "target_s": 20.0}
    t_all = time.perf_counter()
    for provider in contracts.available():
        spec = harness.profile(provider).reference_client
        if not spec:
            out["providers"][provider] = {"skipped": "no reference client"}
            continue
        client = harness.load_client(spec)
        t0 = time.perf_counter()
        report = asyncio.run(harness.run(harness.RunOptions(provider, client)))
        out["providers"][provider] = {
            "scenarios": len(report.results), "ok": report.ok,
            "seconds": time.perf_counter() - t0,
        }
    out["seconds"] = time.perf_counter() - t_all
    out["scenarios"] = sum(p.get("scenarios", 0) for p in out["providers"].values())
    return out


# --- 7. start-up of `serve --provider all` ----------------------------------------------------

def startup(runs: int = 3) -> dict[str, Any]:
    exe = os.path.join(os.path.dirname(sys.executable), "imagegen-conformance")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "imagegen_conformance"]
    firsts, alls = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([*cmd, "serve", "--provider", "all", "--port", "0", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            first = None
            answered = 0
            while answered < 5:
                item = json.loads(proc.stdout.readline())
                if not item.get("primary"):
                    continue
                async def ask(url: str) -> int:
                    async with aiohttp.ClientSession() as http, http.get(url + "/__mock/health") as r:
                        return r.status
                assert asyncio.run(ask(item["url"])) == 200
                answered += 1
                if first is None:
                    first = time.perf_counter() - t0
            alls.append(time.perf_counter() - t0)
            assert first is not None
            firsts.append(first)
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stdout:
                proc.stdout.close()
    return {"runs": runs, "first_answer_s": statistics.median(firsts),
            "all_answered_s": statistics.median(alls), "target_s": 1.5}


def own_rss_mb() -> float:
    return rss_bytes(os.getpid()) / 2**20
