"""A small keep-alive HTTP/1.1 load generator on raw asyncio streams.

A Python client is slow next to the server it measures, so this one does as little as it can:
one connection per worker, a pre-built request, the response read by Content-Length (or to the
end of a chunked body). Each worker sends its next request when the previous one is answered.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["LoadResult", "hammer", "request_bytes", "wrk_hammer", "wrk_path"]


def request_bytes(url: str, method: str = "GET", headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    """One request, ready to write."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length >= 0:
        return status, await reader.readexactly(length)
    if chunked:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, b"".join(parts)
            parts.append((await reader.readexactly(size + 2))[:-2])
    return status, await reader.read()


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, per request

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def hammer(
    url: str,
    make: Callable[[int], bytes],
    *,
    concurrency: int,
    seconds: float,
    ok: Callable[[int], bool] = lambda status: status < 400,
    keep_latencies: bool = False,
    stagger: float = 0.0,
) -> LoadResult:
    """``concurrency`` workers, each on its own keep-alive connection, for ``seconds``.

    ``make(n)`` returns the bytes of the worker's n-th request. ``stagger``: each worker starts
    after a random delay up to that many seconds (independent clients are not in step), and
    only what completes after the last possible start is counted.
    """
    parts = urlsplit(url)
    result = LoadResult()
    t0 = time.perf_counter()
    counted_from = t0 + stagger
    deadline = counted_from + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        if stagger:
            await asyncio.sleep(random.uniform(0, stagger))
        n = 0
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(make(n))
                status, _ = await _read_response(reader)
                done = time.perf_counter()
                n += 1
                if done < counted_from:
                    continue
                if keep_latencies:
                    result.latencies.append(done - started)
                result.requests += 1
                result.errors += not ok(status)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - counted_from
    return result


def _hammer_in_process(url: str, reqs: list[bytes], concurrency: int, seconds: float,
                       stagger: float) -> tuple[int, int, float, list[float]]:
    result = asyncio.run(hammer(url, lambda n: reqs[n % len(reqs)], concurrency=concurrency,
                                seconds=seconds, stagger=stagger, keep_latencies=True))
    return result.requests, result.errors, result.seconds, result.latencies


def hammer_processes(url: str, reqs: list[bytes], *, concurrency: int, seconds: float,
                     stagger: float = 0.0, processes: int = 2) -> LoadResult:
    """:func:`hammer` split over ``processes`` client processes (a Python client is slow)."""
    from concurrent.futures import ProcessPoolExecutor

    share = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        parts = list(pool.map(_hammer_in_process, [url] * processes, [reqs] * processes, share,
                              [seconds] * processes, [stagger] * processes))
    out = LoadResult()
    for requests, errors, secs, latencies in parts:
        out.requests += requests
        out.errors += errors
        out.seconds = max(out.seconds, secs)
        out.latencies += latencies
    return out


# --- wrk, a compiled load generator, when it is installed ------------------------------------

def wrk_path() -> str | None:
    """The ``wrk`` binary (Debian package ``wrk``), or None: the Python generator is used then."""
    import shutil

    return shutil.which("wrk")


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def wrk_hammer(url: str, reqs: list[bytes], *, concurrency: int, seconds: float) -> LoadResult:
    """``wrk -t1`` sending ``reqs`` in turn, each as its exact bytes, on ``concurrency`` connections."""
    import re
    import subprocess
    import tempfile

    binary = wrk_path()
    if binary is None:
        raise RuntimeError("wrk is not installed")
    table = ",\n".join(_lua_string(r) for r in reqs)
    script = (
        f"local reqs = {{\n{table}\n}}\nlocal n = 0\n"
        "request = function()\n  n = n + 1\n  return reqs[(n % #reqs) + 1]\nend\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        ran = subprocess.run(
            [binary, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", f.name, url],
            capture_output=True, text=True, timeout=seconds + 30, check=True,
        )
    finally:
        os.unlink(f.name)
    out = ran.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if total is None:
        raise RuntimeError(f"wrk printed no totals: {out!r}")
    elapsed = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return LoadResult(requests=int(total.group(1)), errors=errors, seconds=elapsed)
