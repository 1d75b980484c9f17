"""AceData async tasks under arbitrary submit / retrieve / batch / clock / fault interleavings."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from imagegen_conformance.harness.stateful import MockMachine

AUTH = {"Authorization": "Bearer k"}


def state_of(record: dict[str, Any]) -> str:
    """The implicit state of a task record, as the reference describes it."""
    response = record.get("response")
    if not response or not ("data" in response or "error" in response):
        return "pending"  # no response, or the stub {"success": true, "task_id"} (the default)
    return "succeeded" if response.get("success") else "failed"


class AceDataTasks(MockMachine):
    provider = "acedata"
    max_advance = 90.0

    def __init__(self) -> None:
        super().__init__()
        self.count: dict[str, int] = {}

    @rule(target=MockMachine.keys, count=st.integers(1, 3), fault=st.sampled_from(["", "task_fail"]),
          size=st.sampled_from(["256x256", "512x768", "1024x1024"]))
    def submit(self, count: int, fault: str, size: str) -> str:
        headers = {**AUTH, **({"X-Mock-Fault": fault} if fault else {})}
        body = {"action": "generate", "prompt": "a cat", "size": size, "count": count, "async": True}
        response = self.call("POST", "/flux/images", json=body, headers=headers)
        assert response.status == 200, response.body
        task_id: str = response.json_body()["task_id"]
        self.count[task_id] = count
        return task_id

    @rule(task_id=MockMachine.keys)
    def retrieve(self, task_id: str) -> None:
        response = self.call("POST", "/flux/tasks", json={"action": "retrieve", "id": task_id},
                             headers=AUTH)
        assert response.status == 200, response.body
        self.check(task_id, response.json_body())

    @rule(ids=st.lists(MockMachine.keys, min_size=1, max_size=4, unique=True))
    def retrieve_batch(self, ids: list[str]) -> None:
        response = self.call("POST", "/flux/tasks", json={"action": "retrieve_batch", "ids": ids},
                             headers=AUTH)
        assert response.status == 200, response.body
        body = response.json_body()
        assert body["count"] == len(body["items"]) == len(ids)
        for record in body["items"]:
            self.check(record["id"], record)

    def check(self, task_id: str, record: dict[str, Any]) -> None:
        assert record["id"] == task_id
        state = state_of(record)
        self.observe(task_id, state)
        if state == "succeeded":
            assert len(record["response"]["data"]) == self.count[task_id]
        if state == "failed":
            error = record["response"]["error"]
            assert error["code"] and error["message"]

    @rule(fault=st.sampled_from(["http:500", "http:429", "http:401", "http:403", "rate_limit:2"]))
    def submit_under_fault(self, fault: str) -> None:
        response = self.call("POST", "/flux/images", headers={**AUTH, "X-Mock-Fault": fault},
                             json={"action": "generate", "prompt": "x", "async": True})
        body = response.json_body()
        assert response.status >= 400 and body["success"] is False
        assert body["error"]["code"] and "trace_id" in body


AceDataTasks.TestCase.settings = settings(
    max_examples=15, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAceDataTasks = AceDataTasks.TestCase
