"""A canary secret never appears in journals, reports, recordings or logs."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import httpx
import pytest
from rich.console import Console

from imagegen_conformance import harness
from imagegen_conformance.harness import CallableClient, RunOptions, load_client
from imagegen_conformance.mocks import MockServer, start

CANARY = "canary-" + secrets.token_hex(16)


Request = tuple[str, str, dict[str, str], object]


def _requests_with_the_canary(fal_url: str, cloudsway_url: str) -> list[Request]:
    """Every place a client may put a secret: the credential header, query keys, webhook URLs."""
    return [
        ("POST", f"{cloudsway_url}/v2/ai/x/images/generations?key={CANARY}",
         {"Authorization": f"Bearer {CANARY}"},
         {"prompts": "canary", "aspect_ratio": "1:1", "step": 4}),
        ("GET", f"{cloudsway_url}/v2/ai/x/images/tasks/unknown?api_key={CANARY}&token={CANARY}",
         {"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY, "Cookie": f"session={CANARY}"}, None),
        ("POST", f"{fal_url}/fal-ai/flux-1/dev?fal_webhook=http://127.0.0.1:9/hook%3Ftoken%3D{CANARY}",
         {"Authorization": f"Key {CANARY}"}, {"prompt": "canary"}),
        ("GET", f"{cloudsway_url}/__mock/journal", {"X-Admin-Token": CANARY}, None),
    ]


def _acedata_callback(acedata_url: str) -> Request:
    return ("POST", f"{acedata_url}/flux/images", {"Authorization": f"Bearer {CANARY}"},
            {"action": "generate", "prompt": "canary", "model": "flux-dev", "size": "512x512",
             "callback_url": f"http://127.0.0.1:9/cb?token={CANARY}"})


async def _send(session: aiohttp.ClientSession, reqs: list[Request]) -> None:
    for method, url, headers, body in reqs:
        async with session.request(method, url, headers=headers, json=body) as resp:
            await resp.read()


async def test_the_canary_is_absent_from_journals_and_the_admin_api() -> None:
    servers = [MockServer("cloudsway", seed=1, admin_token=CANARY), MockServer("fal", seed=1),
               MockServer("acedata", seed=1, admin_token=CANARY)]
    served = await start(servers, ports={"cloudsway": 0, "fal": 0, "acedata": 0})
    try:
        async with aiohttp.ClientSession() as session:
            reqs = _requests_with_the_canary(served.url("fal", "queue"), served.url("cloudsway"))
            reqs.append(_acedata_callback(served.url("acedata")))
            await _send(session, reqs)
            admin = {"X-Admin-Token": CANARY}
            dumps = []
            for server in servers:
                base = served.url(server.provider_id)
                for path in ("/__mock/journal", "/__mock/deliveries", "/__mock/tasks"):
                    async with session.get(base + path, headers=admin) as resp:
                        dumps.append(await resp.text())
                        assert resp.status == 200, (path, dumps[-1])
        await asyncio.sleep(0.1)  # the fal webhook delivery has been tried and recorded
    finally:
        await served.close()
    recorded = [json.dumps(e.to_dict()) for s in servers for e in s.journal.entries()]
    recorded += [json.dumps(d.to_dict()) for s in servers for d in s.deliveries.records()]
    assert len(recorded) >= 4
    for text in recorded + dumps:
        assert CANARY not in text, text[:500]
    assert any("<redacted>" in text for text in recorded)


def _leaky_client(environ: Mapping[str, str]) -> dict[str, object]:
    """A careless client: the key in query strings, polls without pause, and an error naming it."""
    key, base = environ["IMAGEGEN_API_KEY"], environ["IMAGEGEN_BASE_URL"]
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(timeout=10) as http:
        created = http.post(f"{base}/v2/ai/x/images/generations?key={key}",
                            json=json.loads(environ["IMAGEGEN_REQUEST"]), headers=auth).json()
        for _ in range(3):
            http.get(f"{base}/v2/ai/x/images/tasks/{created['taskId']}?token={key}", headers=auth)
    raise RuntimeError(f"gave up (key {key})")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", ["imagegen_conformance.clients.cloudsway:run", "leaky"])
def test_the_canary_is_absent_from_every_report_format(client: str) -> None:
    runner = CallableClient(_leaky_client) if client == "leaky" else load_client(client)
    report = asyncio.run(harness.run(RunOptions(
        "cloudsway", runner, scenarios=["happy-path", "rate-limited-create"], api_key=CANARY,
    )))
    assert report.results, "the run produced no results"
    terminal = io.StringIO()
    harness.render(report, "terminal", Console(file=terminal, width=200))
    texts = {"terminal": terminal.getvalue()}
    texts.update({fmt: harness.render(report, fmt) or "" for fmt in ("json", "junit", "html")})
    for fmt, text in texts.items():
        assert CANARY not in text, f"the {fmt} report leaks the key"
    if client == "leaky":  # the report does show the evidence, redacted
        assert not report.ok
        assert "<redacted>" in texts["json"] and "gave up" in texts["json"]
    else:  # the run did authenticate with the canary and passed
        assert report.ok, texts["terminal"]


@pytest.mark.timeout(60)
def test_the_canary_is_absent_from_recordings_and_logs(tmp_path: Path) -> None:
    record = tmp_path / "recording.jsonl"
    serve = subprocess.Popen(
        [sys.executable, "-m", "imagegen_conformance", "serve", "-p", "cloudsway,fal", "--port", "0",
         "--json",
         "--admin-token", CANARY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    proxy: subprocess.Popen[str] | None = None
    try:
        assert serve.stdout is not None
        urls = {}
        while len(urls) < 3:
            item = json.loads(serve.stdout.readline())
            urls[(item["provider"], item["role"])] = item["url"]
        proxy = subprocess.Popen(
            [sys.executable, "-m", "imagegen_conformance", "proxy", "-p", "cloudsway", "--target",
             urls[("cloudsway", "api")], "--port", "0", "--record", str(record)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proxy.stdout is not None
        banner = proxy.stdout.readline()
        proxy_url = banner.split(" proxy ", 1)[1].split(" -> ", 1)[0].strip()

        async def traffic() -> None:
            async with aiohttp.ClientSession() as session:
                # Through the proxy (recorded) and straight to the mocks (their logs).
                await _send(session, _requests_with_the_canary(urls[("fal", "queue")], proxy_url))
                await _send(session, _requests_with_the_canary(urls[("fal", "queue")],
                                                               urls[("cloudsway", "api")]))

        asyncio.run(traffic())
    finally:
        logs = []
        for proc in (proxy, serve):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=20)
                logs += [out, err]
    text = record.read_text()
    assert text.count('"exchange"') >= 3, text[:500]
    assert CANARY not in text
    for log in logs:
        assert CANARY not in log, log[:500]
    assert any("<redacted>" in log for log in logs) or "<redacted>" in text
