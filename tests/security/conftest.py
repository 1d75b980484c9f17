"""Helpers of the attack tests: a hostile receiver, raw sockets, the process's resident memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest


def rss_mb() -> float:
    """This process's resident set size in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass
class Hit:
    method: str
    path: str
    body: bytes


Answer = Callable[["asyncio.StreamWriter", int], Awaitable[None]]


@dataclass
class HostileReceiver:
    """A raw-socket HTTP receiver on 127.0.0.1 whose answer a test writes (``answer``)."""

    answer: Answer
    hits: list[Hit] = field(default_factory=list)
    url: str = ""
    _server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
            self.hits.append(Hit(method, path, body))
            await self.answer(writer, len(self.hits))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the mock hung up: what a bounded reader does
        finally:
            writer.close()

    async def start(self) -> HostileReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def hostile_receiver() -> AsyncIterator[Callable[[Answer], Awaitable[HostileReceiver]]]:
    """Factory: ``await hostile_receiver(answer)``, where ``answer(writer, n)`` writes the n-th answer."""
    made: list[HostileReceiver] = []

    async def make(answer: Answer) -> HostileReceiver:
        made.append(await HostileReceiver(answer).start())
        return made[-1]

    yield make
    for item in made:
        await item.close()


async def submit_delivery(session: aiohttp.ClientSession, provider: str, base: str, target: str) -> None:
    """A fal queue request with ``fal_webhook`` or an AceData task with ``callback_url``."""
    if provider == "fal":
        async with session.post(f"{base}/fal-ai/flux-1/dev", params={"fal_webhook": target},
                                json={"prompt": "hook"}, headers={"Authorization": "Key k"}) as r:
            assert r.status == 200, await r.text()
    else:
        body = {"action": "generate", "prompt": "hook", "model": "flux-dev", "size": "512x512",
                "callback_url": target}
        async with session.post(f"{base}/flux/images", json=body,
                                headers={"Authorization": "Bearer k"}) as r:
            assert r.status == 200, await r.text()


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait (in small steps) until ``check()`` holds; fail naming the timeout otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        await asyncio.sleep(0.02)


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_request(base: str, request: bytes, *, timeout: float = 10.0) -> RawAnswer:
    """Send ``request`` as written (no client normalises it) and read the answer to its close.

    ``{host}`` in ``request`` becomes ``base``'s host:port.
    """
    netloc = base.split("://", 1)[1].split("/", 1)[0]
    host, _, port = netloc.rpartition(":")
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        writer.write(request.replace(b"{host}", netloc.encode()))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(lines[0].split()[1]), headers, body)


def raw_get(target: str, method: str = "GET") -> bytes:
    """A one-shot request line for :func:`raw_request`."""
    return f"{method} {target} HTTP/1.1\r\nHost: {{host}}\r\nConnection: close\r\n\r\n".encode()


def json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")
