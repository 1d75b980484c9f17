"""The recorder's redaction of streams and keys, and a replayed stream's timing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from imagegen_conformance.harness.proxy._record import Recorder
from imagegen_conformance.mocks.engine import Exchange, Replay

KEY = "sk-live-canary-5d6e7f8091"


def _stream_exchange() -> Exchange:
    return Exchange(
        seq=1, provider="dify", role="api", operation="runWorkflow", method="POST",
        path="/v1/workflows/run", query=[], request_headers={"Authorization": "Bearer <redacted>"},
        request_body='{"inputs": {}}', started_at=time.time(), provider_time=0.0, status=200,
        response_headers={"Content-Type": "text/event-stream"}, duration_ms=5.0, complete=True,
    )


def _record(tmp_path: Path, fmt: str) -> str:
    path = tmp_path / f"r.{fmt}"
    recorder = Recorder(path, fmt, provider="dify", target="http://upstream:1", secrets=(KEY,))
    recorder.started("http://127.0.0.1:9")
    ex = _stream_exchange()
    # A signed link split across two chunks, a key echoed in an event, a character split in two.
    chunks = [(0.0, b'data: {"url": "http://127.0.0.1:9/files/a.png?sign=SECRETSIG'),
              (0.05, b'1234&x=1", "who": "' + KEY.encode() + b'"}\n\n'),
              (0.3, 'data: {"event": "workflow_finished", "t": "\u4e00'.encode()[:-1]),
              (0.31, '\u4e00'.encode()[-1:] + b'"}\n\n')]
    recorder.on_raw(ex, b"", chunks)
    recorder.on_exchange(ex)
    recorder.close()
    return path.read_text()


def test_streams_are_redacted_as_whole_events(tmp_path: Path) -> None:
    for fmt in ("jsonl", "har"):
        text = _record(tmp_path, fmt)
        assert "SECRETSIG" not in text and "1234&" not in text, fmt
        assert KEY not in text, fmt
        assert "sign=REDACTED" in text, fmt
    line = json.loads(_record(tmp_path, "jsonl").splitlines()[1])
    events = line["replay"]["chunks"]
    assert [t for t, _ in events] == [0.05, 0.31]  # each event at the moment its end arrived
    assert "\u4e00" in events[1][1]


async def test_a_replayed_stream_keeps_its_spacing_under_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(_record(tmp_path, "jsonl"))
    replay = Replay.load(path, time_scale=2.0)  # 0.26 s recorded between the events -> 0.13 s
    url = await replay.start()
    try:
        arrivals = []
        async with httpx.AsyncClient() as http, http.stream("POST", url + "/v1/workflows/run") as r:
            started = time.monotonic()
            async for chunk in r.aiter_text():
                arrivals.append((time.monotonic() - started, chunk))
    finally:
        await replay.close()
    body = "".join(c for _, c in arrivals)
    assert f"{url}/files/a.png?sign=REDACTED" in body  # the recorded proxy URL was rewritten
    assert "workflow_finished" in body
    last_event = next(t for t, c in arrivals if "workflow_finished" in c)
    assert last_event >= 0.12  # the recorded gap, scaled; never answered all at once


async def test_links_to_a_live_target_are_rewritten_so_follow_ups_are_seen(tmp_path: Path) -> None:
    # In front of a live endpoint the proxy sends the endpoint's own Host, so returned links
    # (fal's status_url, response_url) name the endpoint; rewritten, the polls come back.
    from imagegen_conformance import contracts
    from imagegen_conformance.harness.proxy._proxy import ValidatingProxy
    from imagegen_conformance.harness.run._clients import CallableClient
    from imagegen_conformance.harness.run._evaluate import build_env
    from imagegen_conformance.mocks import MockServer, start

    server = MockServer("fal", clock="scaled", time_scale=50, seed=3)
    served = await start([server], ports={"fal": 0})
    target = served.url("fal")
    proxy = ValidatingProxy("fal", target, time_scale=50, preserve_host=False, rewrite_links=True)
    url = await proxy.start()
    try:
        contract = contracts.load("fal")
        env = build_env(contract, contract.scenario("happy-path"), {"queue": url}, "k:s",
                        str(tmp_path), 50.0)
        result = await CallableClient("imagegen_conformance.clients.fal:run").run(env, 30)
    finally:
        await proxy.close()
        await served.close()
    assert result.ok, result.to_dict()
    seen = [e.operation for e in proxy.journal.entries()]
    assert "getRequestStatus" in seen and "getRequestResult" in seen, seen
    assert not proxy.deviations, [str(d) for d in proxy.deviations]
