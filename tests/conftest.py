from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from hypothesis import settings

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer, Served, TLSMaterial, start

pytest_plugins = ["pytester"]


@dataclass
class Running:
    """A mock served on real sockets for one test."""

    server: MockServer
    served: Served
    url: str  # the primary host's base URL

    def role_url(self, role: str) -> str:
        return self.served.url(self.server.provider_id, role)


ServeMock = Callable[..., Awaitable[Running]]


@pytest.fixture
async def serve_mock() -> AsyncIterator[ServeMock]:
    """Factory: ``await serve_mock("cloudsway", clock="manual", tls=None, ...)`` on port 0."""
    running: list[Served] = []

    async def factory(provider: str, *, tls: TLSMaterial | None = None, **kwargs: Any) -> Running:
        server = MockServer(provider, **kwargs)
        served = await start([server], ports={server.provider_id: 0}, tls=tls)
        running.append(served)
        return Running(server, served, served.url(server.provider_id))

    yield factory
    for served in running:
        await served.close()


class ServeProcess:
    """`imagegen-conformance serve` in a subprocess; it prints "<provider> <url>" per listener."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imagegen_conformance", "serve", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def readline(self, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                return line.strip()
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
        raise AssertionError("serve printed nothing in time")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal it and wait; the exit code (0 for a clean stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=10)

    def close(self) -> int:
        code = self.stop()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


@pytest.fixture
def serve_cli() -> Iterator[Callable[..., ServeProcess]]:
    """Factory: ``proc = serve_cli("--provider", "cloudsway", "--port", "0")``; killed at teardown."""
    procs: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        procs.append(ServeProcess(*args))
        return procs[-1]

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
        p.close()


class Receiver:
    """A webhook/callback receiver on 127.0.0.1: records every POST, answers queued statuses."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []  # {"body", "raw", "headers", "query", "path"}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()  # the bodies, as they arrive
        self.statuses: list[int] = []  # answered (in order) before `default_status`
        self.default_status = 200  # 503: a receiver that is down
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw)
        self.received.append({"body": body, "headers": dict(request.headers), "raw": raw,
                              "query": dict(request.query), "path": request.path})
        await self.queue.put(body)
        return web.Response(status=self.statuses.pop(0) if self.statuses else self.default_status)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)  # `url` is /hook; any path is recorded
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A loopback webhook/callback receiver (``.url``, ``.received``, ``.queue``, ``.statuses``)."""
    rec = await Receiver().start()
    yield rec
    await rec.close()


# --- mocks in a separate process and the CLI as a subprocess (probe, replay) -----------

# Every provider variable the probe reads: tests start from none of them set.
def _live_vars() -> tuple[str, ...]:
    names: list[str] = []
    for provider in contracts.available():
        live = contracts.load(provider).behaviour.live
        if live is not None:
            names += [live.key_var, live.base_url_var, *live.required_vars, *live.client_env.values()]
    return tuple(dict.fromkeys(names))


LIVE_VARS = _live_vars()


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
    """``python -m imagegen_conformance ARGS`` to its end (killed after ``limit`` seconds)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagegen_conformance", *args, env=env,
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
            sys.executable, "-m", "imagegen_conformance", "serve", "--port", "0", *args, env=clean_env(),
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


StreamReader = Callable[[Any], tuple["asyncio.Future[None]", list[bytes]]]


def _read_in_background(stream: Any) -> tuple[asyncio.Future[None], list[bytes]]:
    chunks: list[bytes] = []

    async def read() -> None:
        async for chunk in stream:
            chunks.append(chunk)

    return asyncio.ensure_future(read()), chunks


@pytest.fixture
def stream_reader() -> StreamReader:
    """``reader, chunks = stream_reader(response.body)``: a streamed MockResponse read into
    ``chunks`` by a task of its own, as it comes (await ``reader`` for the end)."""
    return _read_in_background


@pytest.fixture
def probe_env() -> Callable[..., dict[str, str]]:
    return clean_env


@pytest.fixture
def probe_cli() -> Callable[..., Awaitable[Ran]]:
    return run_cli


# --- a real redis-server for the shared store (CI installs the Debian package) ----------


class RedisServer:
    """``redis-server`` on a free loopback port in its own directory; ``stop()``/``start()``.

    No persistence is configured (``--save '' --appendonly no``); ``stop(save=True)`` writes
    the data set once (``SAVE``) before stopping, so ``start()`` finds it again: a restart that
    keeps its data.
    """

    def __init__(self, directory: str) -> None:
        import shutil
        import socket

        if shutil.which("redis-server") is None:
            raise RuntimeError(
                "redis-server is not installed; the shared-store tests need a real one "
                "(Debian: apt-get install redis-server; .ci/run installs it)"
            )
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory, "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self, *, save: bool = False) -> None:
        import redis

        if self.proc is None or self.proc.poll() is not None:
            return
        if save:
            redis.Redis(port=self.port, socket_timeout=5).save()
        self.proc.terminate()  # with --save '' a SIGTERM writes nothing more
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port, socket_timeout=2).flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (fails loudly when redis-server is missing)."""
    server = RedisServer(str(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Any) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and start again."""
    server = RedisServer(str(tmp_path)).start()
    yield server
    server.stop()


# Hypothesis profiles: "default" keeps the suite fast; HYPOTHESIS_PROFILE=thorough digs deeper.
settings.register_profile("default", max_examples=25, deadline=None, print_blob=True)
settings.register_profile("ci", max_examples=25, deadline=None, print_blob=True, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))
