"""Dify workflow runs under arbitrary run / stream / stop / detail / download / clock interleavings."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from imagegen_conformance.harness.stateful import MockMachine
from imagegen_conformance.mocks.engine import MockResponse

AUTH = {"Authorization": "Bearer app-k"}
FILES_VALID_FOR = 300.0


class DifyRuns(MockMachine):
    provider = "dify"
    max_advance = 200.0

    def __init__(self) -> None:
        super().__init__()
        self.final: dict[str, str] = {}
        self.files: dict[str, list[str]] = {}

    def events(self, response: MockResponse, stop_after_first: str | None = None) -> list[Any]:
        """Read an SSE body to its end, advancing the clock; optionally stop the run first."""
        assert not isinstance(response.body, bytes)
        body = response.body

        async def read() -> list[Any]:
            out: list[Any] = []
            buffer = b""
            while True:
                nxt = asyncio.ensure_future(body.__anext__())
                while not nxt.done():
                    self.server.clock.advance(1.0)
                    await asyncio.sleep(0)
                try:
                    buffer += nxt.result()
                except StopAsyncIteration:
                    return out
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    if frame.startswith(b"data: "):
                        out.append(json.loads(frame[6:]))
                        if stop_after_first and len(out) == 1:
                            await self.server.request(
                                "POST", f"/v1/workflows/tasks/{out[0]['task_id']}/stop",
                                json={"user": "u"}, headers=AUTH)

        return self.loop.run_until_complete(read())

    def run_request(self, mode: str, fault: str) -> Any:
        headers = {**AUTH, **({"X-Mock-Fault": fault} if fault else {})}
        return self.server.request("POST", "/v1/workflows/run", headers=headers, json={
            "inputs": {"prompt": "a calm man"}, "response_mode": mode, "user": "u"})

    @rule(target=MockMachine.keys, fault=st.sampled_from(["", "task_fail"]))
    def run_blocking(self, fault: str) -> str:
        response = self.run(self.run_request("blocking", fault))
        assert response.status == 200, response.body
        data = response.json_body()["data"]
        assert data["status"] in ("succeeded", "failed")
        self.observe(data["id"], data["status"])
        self.final[data["id"]] = data["status"]
        self.files[data["id"]] = [f["url"] for f in (data["outputs"] or {}).get("files", [])]
        return str(data["id"])

    @rule(target=MockMachine.keys, stop=st.booleans())
    def run_streaming(self, stop: bool) -> str:
        response = self.run(self.run_request("streaming", ""))
        assert response.status == 200
        events = self.events(response, stop_after_first="stop" if stop else None)
        names = [e["event"] for e in events]
        assert names[0] == "workflow_started" and names[-1] == "workflow_finished", names
        assert names.count("node_started") >= names.count("node_finished")
        finished = events[-1]["data"]
        assert finished["status"] == ("stopped" if stop else "succeeded"), (stop, finished)
        self.observe(finished["id"], finished["status"])
        self.final[finished["id"]] = finished["status"]
        self.files[finished["id"]] = []
        return str(finished["id"])

    @rule(run_id=MockMachine.keys)
    def detail(self, run_id: str) -> None:
        response = self.run(self.server.request("GET", f"/v1/workflows/run/{run_id}", headers=AUTH))
        assert response.status == 200
        body = response.json_body()
        assert body["status"] == self.final[run_id]
        assert isinstance(body["inputs"], str) and json.loads(body["inputs"])["prompt"] == "a calm man"

    @rule(run_id=MockMachine.keys)
    def download(self, run_id: str) -> None:
        for url in self.files[run_id]:
            parts = urlsplit(url)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            issued = float(query["timestamp"])
            response = self.run(self.server.request("GET", parts.path, query=query))
            fresh = self.server.clock.now() - issued <= FILES_VALID_FOR
            assert response.status == (200 if fresh else 403), (response.status, fresh)



DifyRuns.TestCase.settings = settings(
    max_examples=10, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDifyRuns = DifyRuns.TestCase
