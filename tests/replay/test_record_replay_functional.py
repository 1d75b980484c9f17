"""Record a reference client's session through the proxy, replay it, run the client again."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from imagegen_conformance import contracts
from imagegen_conformance.harness.rules._profile import profile
from imagegen_conformance.harness.run._clients import CallableClient
from imagegen_conformance.harness.run._evaluate import build_env

CANARY = "imagegen-canary-replay-8c1d2e3f4a5b"
SCALE = "50"


async def _start_proxy(provider: str, target: str, record: Path, fmt: str, env: dict[str, str]
                       ) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagegen_conformance", "proxy", "-p", provider, "--target", target,
        "--port", "0",
        "--time-scale", SCALE, "--record", str(record), "--record-format", fmt, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    banner = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
    return proc, banner.split()[2]


async def _run_client(provider: str, scenario_id: str, url: str) -> dict[str, Any]:
    """The provider's reference client against ``url``; what it delivered, images hashed."""
    contract = contracts.load(provider)
    scenario = contract.scenario(scenario_id)
    roles = list(contract.behaviour.hosts)
    with tempfile.TemporaryDirectory() as out:
        env = build_env(contract, scenario, {roles[0]: url}, CANARY, out, float(SCALE))
        spec = profile(provider).reference_client
        assert spec is not None
        result = await CallableClient(spec).run(env, 30)
        assert result.ok, result.to_dict()
        images = [Path(i["path"] if isinstance(i, dict) else i) for i in result.raw_images]
        digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in images]
    output = dict(result.output)
    output.pop("images")
    return {"images": digests, "rest": output}


@pytest.mark.parametrize(("provider", "scenario", "fmt"), [
    ("fal", "happy-path", "jsonl"),          # returned status/response URLs, polls
    ("dify", "happy-path-streaming", "jsonl"),  # SSE with its timing, signed file links
    ("cloudsway", "happy-path", "har"),      # the HAR format replays too
])
async def test_a_recorded_session_replays_with_the_same_results(
    serve_process, probe_env, tmp_path: Path, provider: str, scenario: str, fmt: str
) -> None:
    urls = await serve_process("-p", provider, "--time-scale", SCALE, "--seed", "7")
    record = tmp_path / f"session.{fmt}"
    env = probe_env()
    proxy, proxy_url = await _start_proxy(provider, urls[provider], record, fmt, env)
    try:
        recorded = await _run_client(provider, scenario, proxy_url)
    finally:
        proxy.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proxy.communicate(), 20)
    text = record.read_text()
    assert CANARY not in text and CANARY not in out.decode() + err.decode()
    if fmt == "jsonl":
        lines = [json.loads(line) for line in text.splitlines()]
        assert "recording" in lines[0]
        assert sum("exchange" in line for line in lines) >= 2
    else:
        assert json.loads(text)["log"]["entries"]
    if provider == "dify":
        assert "sign=REDACTED" in text  # the signed file link was redacted ...

    replay = await serve_process("--replay", str(record), "--time-scale", SCALE)
    [(name, replay_url)] = replay.items()
    assert name == provider
    replayed = await _run_client(provider, scenario, replay_url)  # ... and still works here
    assert replayed == recorded


async def test_replay_answers_in_order_and_rewrites_the_base_url(tmp_path: Path) -> None:
    from imagegen_conformance.mocks.engine import Replay

    record = tmp_path / "r.jsonl"
    lines = [
        {"recording": {"provider": "fal", "target": "http://recorded:1", "proxy_url": "http://proxy:2"}},
        *({"exchange": {"provider": "fal", "method": "GET", "path": "/s", "status": 200,
                        "response_headers": {"Content-Type": "application/json"},
                        "response_body": json.dumps({"n": n, "url": "http://proxy:2/r"}),
                        "duration_ms": 1.0}} for n in (1, 2)),
    ]
    record.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    replay = Replay.load(record, time_scale=10)
    url = await replay.start()
    try:
        import httpx

        async with httpx.AsyncClient(base_url=url) as http:
            answers = [(await http.get("/s", params={"sign": "REDACTED"})).json() for _ in range(3)]
            missing = await http.get("/nowhere")
            health = (await http.get("/__mock/health")).json()
    finally:
        await replay.close()
    assert [a["n"] for a in answers] == [1, 2, 2]  # the n-th poll gets the n-th answer
    assert answers[0]["url"] == f"{url}/r"
    assert missing.status_code == 404 and "no answer" in missing.text
    assert health["provider"] == "fal" and health["replay"] is True
