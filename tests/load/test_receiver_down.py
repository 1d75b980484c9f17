"""A webhook or callback receiver that is down: bounded retries, then recorded as failed."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from imagegen_conformance.contracts import load
from imagegen_conformance.mocks import MockServer, start

pytestmark = pytest.mark.soak  # `python -m pytest -q -m soak`; CI runs it after the default suite

# fal's 10 attempts over about 2 h of provider time take 3.6 s; each attempt's 15 s timeout
# becomes 7.5 ms, so a busy loop may see an attempt time out instead of being refused.
SCALE = 2_000.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _submit(session: aiohttp.ClientSession, provider: str, base: str, target: str) -> None:
    if provider == "fal":
        async with session.post(f"{base}/fal-ai/flux-1/dev", params={"fal_webhook": target},
                                json={"prompt": "down"}, headers={"Authorization": "Key k"}) as r:
            assert r.status == 200, await r.text()
    else:
        body = {"action": "generate", "prompt": "down", "model": "flux-dev", "size": "512x512",
                "callback_url": target}
        async with session.post(f"{base}/flux/images", json=body,
                                headers={"Authorization": "Bearer k"}) as r:
            assert r.status == 200, await r.text()


async def _finished(server: MockServer, count: int, timeout: float = 20.0) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        records = server.deliveries.records()
        if len(records) == count and all(r.status != "pending" for r in records):
            return records
        await asyncio.sleep(0.02)
    raise AssertionError(f"deliveries still pending: {server.deliveries.records()}")


@pytest.mark.timeout(40)
@pytest.mark.parametrize(("provider", "section"), [("fal", "webhooks"), ("acedata", "callbacks")])
async def test_a_receiver_that_is_down_gets_bounded_retries_then_failed(
    provider: str, section: str, receiver: Any
) -> None:
    attempts = int(load(provider).behaviour.raw[section]["attempts"])
    server = MockServer(provider, time_scale=SCALE, seed=5)
    served = await start([server], ports={provider: 0})
    receiver.default_status = 503  # down
    try:
        base = served.url(provider)
        refused = f"http://127.0.0.1:{_closed_port()}/hook?token=s3cret"
        async with aiohttp.ClientSession() as session:
            for n in range(5):
                await _submit(session, provider, base, refused)
                await _submit(session, provider, base, f"{receiver.url}/{n}")
            records = await _finished(server, 10)
            async with session.get(f"{base}/__mock/deliveries") as r:
                listed = (await r.json())["deliveries"]
        # Nothing keeps retrying in the background once every delivery is decided.
        await asyncio.sleep(0.2)
        assert not server.background
    finally:
        await served.close()

    for record in records:
        assert record.status == "failed", record
        assert record.attempts == attempts, record
        assert len(record.responses) == attempts
        assert record.reason and str(attempts) in record.reason
        assert "s3cret" not in record.url
    down = [r for r in records if r.url.startswith("http://127.0.0.1") and "/hook?" in r.url]
    assert len(down) == 5
    assert {resp for r in down for resp in r.responses} <= {"ClientConnectorError", "TimeoutError"}
    answered = [r for r in records if r not in down]
    assert {resp for r in answered for resp in r.responses} <= {503, "TimeoutError"}
    assert 5 <= len(receiver.received) <= 5 * attempts  # the receiver saw the bound at most, never more
    assert sorted(d["status"] for d in listed) == ["failed"] * 10
