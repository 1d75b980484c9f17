"""Mocks in a separate process, addressed as remote base URLs, and the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

import contracts

# Every provider variable the probe reads: tests start from none of them set.
LIVE_VARS = (
    "CLOUDSWAY_API_KEY", "CLOUDSWAY_BASE_URL", "CLOUDSWAY_ENDPOINT_PATH", "ACEDATACLOUD_API_TOKEN",
    "ACEDATA_BASE_URL", "FAL_KEY", "FAL_QUEUE_BASE_URL", "FAL_MODEL", "YUNYX_API_KEY",
    "YUNYX_BASE_URL", "DIFY_API_KEY", "DIFY_BASE_URL",
)


@dataclass
class Ran:
    code: int
    out: str
    err: str


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LIVE_VARS}
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str], limit: float = 60.0) -> Ran:
    """``python -m harness ARGS`` to its end (killed after ``limit`` seconds)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harness", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


Serve = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
async def serve_process() -> AsyncIterator[Serve]:
    """``await serve_process("-p", "fal", ...)`` -> {"fal": url, "fal:run": url}: a mock process."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> dict[str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harness", "serve", "--port", "0", *args, env=clean_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        providers = [a for i, a in enumerate(args) if i and args[i - 1] in ("-p", "--provider")]
        wanted = {p for item in providers for p in item.split(",")} or {"replay"}
        if "all" in wanted:
            wanted = set(contracts.available())
        while not wanted <= set(urls) and not (wanted == {"replay"} and urls):
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            if not line:
                assert proc.stderr is not None
                raise AssertionError("serve ended: " + (await proc.stderr.read()).decode())
            name, _, url = line.strip().partition(" ")
            urls[name] = url
        return urls

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
def probe_env() -> Callable[..., dict[str, str]]:
    return clean_env


@pytest.fixture
def probe_cli() -> Callable[..., Awaitable[Ran]]:
    return run_cli
