"""Connections that do not do their part are closed; requests aiohttp cannot parse leave no key
in the log and no flood of tracebacks.

Raw sockets on loopback. The read timeouts are shortened per test (``ConnectionLimits``) so
that waiting for them costs fractions of a second; every wait is a bounded loop with a
generous deadline, never a sleep that must end just in time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from imagegen_conformance.mocks import MockRequest, MockServer, start
from imagegen_conformance.mocks.engine import ConnectionLimits, ProtocolLog

from .conftest import raw_request, rss_mb

CANARY = "canary-" + secrets.token_hex(16)
# lingering 1 s: after its 408 the mock discards what a slow sender still sends for a while
# (the sender stops on the answer); closing at once would reset the connection under it.
FAST = ConnectionLimits(idle=0.3, body_grace=0.5, body_rate=16_384, lingering=1.0)
CREATE = {  # provider -> (role, path, auth header, a valid body)
    "cloudsway": ("api", "/v2/ai/x/images/generations", "Bearer k",
                  {"prompts": "p", "aspect_ratio": "1:1", "step": 4}),
    "acedata": ("api", "/flux/images", "Bearer k",
                {"action": "generate", "prompt": "p", "model": "flux-dev", "size": "512x512",
                 "callback_url": "http://127.0.0.1:9/cb"}),
    "fal": ("queue", "/fal-ai/flux-1/dev", "Key k", {"prompt": "p"}),
    "yunyx": ("api", "/v1/images/generations", "Bearer k",
              {"model": "FLUX.1-schnell", "prompt": "p", "image_size": "512x512"}),
    "dify": ("api", "/v1/workflows/run", "Bearer app-k",
             {"inputs": {"prompt": "p"}, "response_mode": "streaming", "user": "u"}),
}


def _hostile_requests() -> list[bytes]:
    """Requests aiohttp's parser refuses, each carrying the canary key."""
    head = "POST /v2/ai/x/images/generations HTTP/1.1\r\nHost: {host}\r\n"
    long_path = "/v2/ai/x/images/tasks/" + "a" * 9_000 + f"?key={CANARY}"
    return [
        (head + f"Authorization: Bearer {CANARY}\x00\r\nContent-Length: 0\r\n\r\n").encode(),
        (head + f"Authorization: Bearer {CANARY}\x7f\r\nContent-Length: 0\r\n\r\n").encode(),
        (head + f"Authorization: Bearer {CANARY}{'x' * 9_000}\r\n\r\n").encode(),
        (f"GET {long_path} HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: Bearer {CANARY}\r\n\r\n").encode(),
        (head + f"X-Api-Key\x01: {CANARY}\r\n\r\n").encode(),
        (head + f"Authorization: Bearer {CANARY}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").encode(),
    ]


async def _send_raw(url: str, data: bytes) -> bytes:
    netloc = url.split("://", 1)[1]
    host, _, port = netloc.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data.replace(b"{host}", netloc.encode()))
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        return b""
    finally:
        writer.close()


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(60)
def test_unparseable_requests_leave_no_key_and_one_short_line_in_serves_log() -> None:
    serve = subprocess.Popen(
        [sys.executable, "-m", "imagegen_conformance", "serve", "-p", "cloudsway", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert serve.stdout is not None
        url = serve.stdout.readline().split()[1]
        before = _proc_rss_mb(serve.pid)

        async def attack() -> tuple[list[bytes], int, int]:
            answers = []
            for _ in range(5):  # 30 hostile requests: enough to flood a log that prints each
                answers += await asyncio.gather(*(_send_raw(url, r) for r in _hostile_requests()))
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url}/v2/ai/x/images/generations",
                                        headers={"Authorization": "Bearer k"},
                                        json={"prompts": "p", "aspect_ratio": "1:1"}) as created:
                    task_id = (await created.json())["taskId"]
                async with session.get(f"{url}/v2/ai/x/images/tasks/{task_id}",
                                       headers={"Authorization": "Bearer k"}) as polled:
                    return answers, created.status, polled.status

        answers, created, polled = asyncio.run(attack())
        after = _proc_rss_mb(serve.pid)
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=20)
    assert serve.returncode == 0, err
    assert (created, polled) == (200, 200)  # still serving, the task answers
    assert all(a.split(b" ", 2)[1:2] == [b"400"] or a == b"" for a in answers), answers[:3]
    assert CANARY not in err and CANARY not in out
    assert "Traceback" not in err and "Error handling request" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    # One line for the first, the rest counted until the next window (10 s): a short log.
    assert 1 <= len(lines) <= 3, lines
    assert "refused" in lines[0] and "cloudsway" in lines[0], lines
    assert after - before < 32, f"RSS {before:.0f} -> {after:.0f} MB"


def test_the_protocol_log_counts_what_it_does_not_print(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

    log = ProtocolLog("cloudsway api", every=3_600)
    for exc in (LineTooLong(f"Authorization: Bearer {CANARY}", 8190), BadHttpMessage(CANARY)):
        for _ in range(50):
            log.exception("Error handling request from %s", "127.0.0.1", exc_info=exc)
    log.debug("Error handling request from %s", "127.0.0.1", exc_info=BadHttpMessage(CANARY))
    assert log.count == 101
    printed = [r.getMessage() for r in caplog.records]
    assert printed == ["cloudsway api: refused a request line or header over the size limit "
                       "(HTTP 400) from 127.0.0.1"]
    assert all(CANARY not in r.getMessage() and r.exc_info is None for r in caplog.records)
    log._next = 0.0  # the window has passed: the next line says how many were not printed
    log.exception("Error handling request from %s", "127.0.0.1", exc_info=BadHttpMessage(CANARY))
    assert caplog.records[-1].getMessage().endswith("(99 more since the last line)")


def test_a_mock_failure_below_the_handler_is_recorded_not_swallowed() -> None:
    errors: list[str] = []
    ProtocolLog("fal queue", errors=errors).exception("Unhandled exception",
                                                      exc_info=RuntimeError(CANARY))
    assert errors == ["fal queue: failed on a request (RuntimeError; the mock's own error, "
                      "please report it)"]


@pytest.mark.timeout(60)
async def test_half_open_connections_are_closed_after_the_idle_bound() -> None:
    server = MockServer("cloudsway", clock="manual", seed=9)
    served = await start([server], ports={"cloudsway": 0}, limits=FAST)
    url = served.url("cloudsway")
    host, port = url.removeprefix("http://").split(":")
    before = rss_mb()
    conns = []
    try:
        created = await server.request("POST", "/v2/ai/x/images/generations",
                                       headers={"Authorization": "Bearer k"},
                                       json={"prompts": "p", "aspect_ratio": "1:1"})
        task_id = created.json_body()["taskId"]
        for i in range(400):
            reader, writer = await asyncio.open_connection(host, int(port))
            if i % 2:  # half of them send half a request head, the others nothing at all
                writer.write(b"GET /v2/ai/x/images/tasks/t HTTP/1.1\r\nHost: x\r\nAuthor")
            conns.append((reader, writer))
        closed = await asyncio.gather(*(asyncio.wait_for(r.read(), 20) for r, _ in conns))
        assert all(data == b"" for data in closed)  # closed by the mock, nothing answered
        grown = rss_mb() - before
        answer = await raw_request(url, f"GET /v2/ai/x/images/tasks/{task_id} HTTP/1.1\r\n"
                                   "Host: {host}\r\nAuthorization: Bearer k\r\n"
                                   "Connection: close\r\n\r\n".encode())
        assert answer.status == 200 and json.loads(answer.body)["status"] == "pending"
    finally:
        for _, writer in conns:
            writer.close()
        await served.close()
    assert grown < 32, f"RSS grew {grown:.0f} MB"
    assert server.errors == []


async def _slow_chunked(url: str, head: bytes, body: bytes, gap: float, limit: int) -> bytes:
    """Send ``body`` one byte per ``gap`` s as a chunked body; return what the mock answered."""
    netloc = url.split("://", 1)[1]
    host, _, port = netloc.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def read_answer() -> bytes:  # by its length, not to the close: the sender stops at once
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return head + await reader.readexactly(length)

    answer = asyncio.ensure_future(read_answer())
    try:
        writer.write(head.replace(b"{host}", netloc.encode()))
        for i in range(min(len(body), limit)):
            if answer.done():
                break
            writer.write(b"1\r\n" + body[i : i + 1] + b"\r\n")
            await writer.drain()
            await asyncio.wait([answer], timeout=gap)
        return await asyncio.wait_for(answer, 20)
    except ConnectionError:
        return await asyncio.wait_for(answer, 20)
    finally:
        writer.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("provider", list(CREATE))
async def test_a_body_sent_one_byte_at_a_time_gets_the_providers_408(provider: str) -> None:
    role, path, auth, body = CREATE[provider]
    server = MockServer(provider, clock="manual", seed=9)
    served = await start([server], ports={provider: 0}, limits=FAST)
    url = served.url(provider, role)
    head = (f"POST {path} HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: {auth}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    try:
        started = time.monotonic()
        # 0.1 s per byte: the 0.5 s grace passes after five; the loop stops at 200 bytes anyway.
        data = await _slow_chunked(url, head, json.dumps(body).encode() * 10, 0.1, 200)
        took = time.monotonic() - started
    finally:
        await served.close()
    head_part, _, answer = data.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 408"), data[:300]
    assert b"connection: close" in head_part.lower()
    own = server.provider.request_timeout(MockRequest.build("POST", path, role=role))
    assert own.status == 408
    parsed, expected = json.loads(answer), json.loads(own.body)
    assert type(parsed) is type(expected) and (not isinstance(parsed, dict) or set(parsed) == set(expected))
    assert took < 15
    assert [e.status for e in server.journal.entries()] == [408]
    assert server.errors == []


@pytest.mark.timeout(60)
async def test_slow_clients_within_reason_and_long_streams_are_not_cut() -> None:
    # A body in four pieces 0.1 s apart (inside the grace) and a Dify stream whose pings come
    # 0.5 s apart, beyond the 0.3 s idle bound: neither is an idle connection.
    server = MockServer("dify", time_scale=20.0, seed=9)
    served = await start([server], ports={"dify": 0}, limits=FAST)
    url = served.url("dify")
    _, path, auth, body = CREATE["dify"]
    raw = json.dumps(body).encode()
    netloc = url.removeprefix("http://")
    host, port = netloc.split(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nAuthorization: {auth}\r\n"
                     f"X-Mock-Fault: never_finish\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(raw)}\r\n\r\n".encode())
        quarter = len(raw) // 4 + 1
        for i in range(4):
            writer.write(raw[i * quarter : (i + 1) * quarter])
            await writer.drain()
            await asyncio.sleep(0.1)
        status = await asyncio.wait_for(reader.readline(), 10)
        assert status.startswith(b"HTTP/1.1 200"), status
        pings = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while pings < 3 and loop.time() < deadline:
            line = await asyncio.wait_for(reader.readline(), 10)
            assert line, "the stream was cut"
            pings += line.startswith(b"event: ping")
        assert pings == 3
        writer.close()
    finally:
        await served.close()
    assert server.errors == []
