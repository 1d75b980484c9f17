"""The recorder's redaction of streams and keys, and a replayed stream's timing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from harness._record import Recorder
from mocks.engine import Exchange, Replay

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
