"""Callback and webhook targets outside loopback and the allow-list are refused, never contacted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imagegen_conformance.mocks import MockServer, start
from imagegen_conformance.mocks.engine import refusal

OUTSIDE = [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.0.0.1/hook",
    "http://192.168.1.1/hook",
    "http://0.0.0.0:80/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number: not a literal address
    "http://localhost.evil.example/hook",
    "http://127.0.0.1.nip.io/hook",
    "https://hooks.example.com/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/",
    "ftp://127.0.0.1/",
    "http:///no-host",
    "not a url",
]


@pytest.mark.parametrize("url", OUTSIDE)
def test_refusal_names_every_target_outside_loopback(url: str) -> None:
    assert refusal(url, frozenset()) is not None


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/h", "http://localhost/h", "http://[::1]:8/h",
                                 "https://127.0.0.5/h"])
def test_loopback_targets_are_allowed(url: str) -> None:
    assert refusal(url, frozenset()) is None


def test_the_allow_list_admits_exactly_its_hosts() -> None:
    allowed = frozenset({"hooks.example.com"})
    assert refusal("https://hooks.example.com/h", allowed) is None
    assert refusal("https://evil.example.com/h", allowed) is not None
    assert refusal("https://hooks.example.com.evil.example/h", allowed) is not None
    assert refusal("file://hooks.example.com/etc/passwd", allowed) is not None


@pytest.mark.timeout(30)
async def test_webhooks_and_callbacks_to_outside_targets_are_recorded_refused(receiver: Any) -> None:
    # 1000x: fal's request ends in milliseconds, its webhook is due at once.
    fal = MockServer("fal", time_scale=1000.0, seed=2)
    acedata = MockServer("acedata", time_scale=1000.0, seed=2)
    served = await start([fal, acedata], ports={"fal": 0, "acedata": 0})
    try:
        targets = [u for u in OUTSIDE if "://" in u] + [receiver.url]
        for url in targets:
            submitted = await fal.request("POST", "/fal-ai/flux-1/dev", query={"fal_webhook": url},
                                          json={"prompt": "p"}, headers={"Authorization": "Key k"},
                                          role="queue")
            assert submitted.status == 200
            created = await acedata.request(
                "POST", "/flux/images", headers={"Authorization": "Bearer k"},
                json={"action": "generate", "prompt": "p", "model": "flux-dev", "size": "512x512",
                      "callback_url": url},
            )
            assert created.status == 200
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline and len(receiver.received) < 2:
            await asyncio.sleep(0.05)
    finally:
        await served.close()
    # The loopback receiver got both deliveries; nothing else was sent anywhere.
    assert [r["path"] for r in receiver.received] == ["/hook", "/hook"]
    for server in (fal, acedata):
        records = server.deliveries.records()
        refused = [r for r in records if r.status == "refused"]
        assert len(refused) == len(targets) - 1, [(r.url, r.status) for r in records]
        assert all(r.attempts == 0 and r.reason for r in refused)
        assert [r.status for r in records if r not in refused] == ["delivered"]
