"""A hostile receiver cannot steer or bloat a webhook or callback delivery.

A redirect is the receiver's answer, recorded as such: never followed (it could point at an
address the refusal rules never saw, and following it turns the POST into a body-less GET).
A receiver's answer is read only up to a small bound, however long it claims to be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from imagegen_conformance.mocks import MockServer, start
from imagegen_conformance.mocks.engine._deliver import ANSWER_LIMIT

from .conftest import HostileReceiver, eventually, rss_mb, submit_delivery

# fal waits 15 provider seconds before its second attempt, AceData 5: at 200x, 75 and 25 ms,
# while each attempt keeps 50 ms or more before its timeout.
SCALE = 200.0
PROVIDERS = ["fal", "acedata"]
Make = Callable[..., Awaitable[HostileReceiver]]


async def _ok(writer: asyncio.StreamWriter, n: int) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()


async def _first_task_answers(session: aiohttp.ClientSession, provider: str, base: str) -> None:
    """A request made before the attack still gets its answer after it."""
    if provider == "fal":
        async with session.get(f"{base}/fal-ai/flux-1/requests/none/status",
                               headers={"Authorization": "Key k"}) as r:
            assert r.status == 404, await r.text()  # the provider's own "no such request"
    else:
        async with session.post(f"{base}/flux/tasks", json={"action": "retrieve", "id": "none"},
                                headers={"Authorization": "Bearer k"}) as r:
            assert r.status in (200, 404), await r.text()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("spelling", [
    pytest.param("http://[::ffff:127.0.0.1]:{port}/stolen", id="ipv4-mapped"),
    pytest.param("http://127.0.0.1:{port}/stolen", id="loopback"),
])
async def test_a_redirect_is_recorded_and_never_followed(
    provider: str, spelling: str, hostile_receiver: Make
) -> None:
    target = await hostile_receiver(_ok)
    port = target.url.split(":")[2].split("/")[0]
    location = spelling.format(port=port)

    async def redirect(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()

    redirector = await hostile_receiver(redirect)
    server = MockServer(provider, time_scale=SCALE, seed=7)
    served = await start([server], ports={provider: 0})
    try:
        async with aiohttp.ClientSession() as session:
            await submit_delivery(session, provider, served.url(provider), redirector.url)
            await eventually(lambda: len(redirector.hits) >= 2)
            await _first_task_answers(session, provider, served.url(provider))
    finally:
        await served.close()
    assert target.hits == [], "the redirect was followed"
    assert all(h.method == "POST" and h.body.startswith(b"{") for h in redirector.hits)
    (record,) = server.deliveries.records()
    assert record.status != "delivered"
    # Only 302s (an attempt of a busy machine may time out, which is recorded as such).
    answers = [r for r in record.responses if isinstance(r, int)]
    assert answers and set(answers) == {302}, record.responses
    if record.status == "failed":
        assert record.reason is not None and "redirects are not followed" in record.reason
    assert server.errors == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_huge_answer_is_read_only_up_to_a_bound(provider: str, hostile_receiver: Make) -> None:
    size = 300 << 20
    sent = [0]
    piece = b"x" * (1 << 20)

    async def huge(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        while sent[0] < size:
            writer.write(piece)
            await writer.drain()  # raises once the mock has hung up
            sent[0] += len(piece)

    receiver = await hostile_receiver(huge)
    server = MockServer(provider, time_scale=SCALE, seed=8)
    served = await start([server], ports={provider: 0})
    before = rss_mb()
    try:
        async with aiohttp.ClientSession() as session:
            await submit_delivery(session, provider, served.url(provider), receiver.url)
            await eventually(lambda: any(r.responses for r in server.deliveries.records()))
            grown = rss_mb() - before
            await _first_task_answers(session, provider, served.url(provider))
    finally:
        await served.close()
    (record,) = server.deliveries.records()
    assert record.status == "delivered" and record.responses[-1] == 200, record
    # What the receiver got into the socket before the mock hung up: buffers, not 300 MB.
    assert sent[0] < 64 << 20, f"{sent[0] >> 20} MB of the answer were read"
    assert grown < 48, f"RSS grew {grown:.0f} MB for a {size >> 20} MB answer"
    assert ANSWER_LIMIT <= 1 << 20
    assert server.errors == []
