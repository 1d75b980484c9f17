"""Arbitrary interleavings of create, poll, clock advance and faults never break behaviour.yaml."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from imagegen_conformance import contracts
from imagegen_conformance.harness.stateful import MockMachine
from imagegen_conformance.harness.strategies import invalid_requests, requests

AUTH = {"Authorization": "Bearer k"}
TASK_VALIDATOR = contracts.response_validator("cloudsway", "getImageTask", 200)
ERROR_VALIDATOR = contracts.response_validator("cloudsway", "getImageTask", 503)
FAULTS = ["http:503", "http:500", "http:429", "rate_limit:2", "malformed", "reset", "latency:1"]


class CloudswayLifecycle(MockMachine):
    provider = "cloudsway"
    max_advance = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.batch: dict[str, int] = {}

    @rule(target=MockMachine.keys, body=requests("cloudsway", "createImageTask"),
          fault=st.sampled_from(["", "task_fail", "never_finish"]))
    def create(self, body: Any, fault: str) -> str:
        headers = {**AUTH, **({"X-Mock-Fault": fault} if fault else {})}
        response = self.call("POST", "/v2/ai/ep/images/generations", json=body, headers=headers)
        assert response.status == 200, response.body
        task_id: str = response.json_body()["taskId"]
        self.batch[task_id] = int(body.get("batchsize", 1))
        return task_id

    @rule(bad=invalid_requests("cloudsway", "createImageTask"))
    def create_invalid(self, bad: Any) -> None:
        before = len(self.server.tasks)
        # Negative generation also yields bodies that are not JSON at all: send them raw.
        payload = {"body": bad.body} if isinstance(bad.body, bytes) else {"json": bad.body}
        response = self.call("POST", "/v2/ai/ep/images/generations", headers=AUTH, **payload)
        assert response.status == bad.expected_status
        assert ERROR_VALIDATOR is not None and ERROR_VALIDATOR.issues(response.json_body()) == []
        assert len(self.server.tasks) == before

    @rule(task_id=MockMachine.keys)
    def poll(self, task_id: str) -> None:
        response = self.call("GET", f"/v2/ai/ep/images/tasks/{task_id}", headers=AUTH)
        assert response.status == 200
        body = response.json_body()
        assert TASK_VALIDATOR is not None and TASK_VALIDATOR.issues(body) == []
        self.observe(task_id, body["status"])
        if body["status"] == "completed":
            assert len(body["imageUrls"]) == self.batch[task_id]

    @rule(task_id=MockMachine.keys, fault=st.sampled_from(FAULTS))
    def poll_under_fault(self, task_id: str, fault: str) -> None:
        response = self.call("GET", f"/v2/ai/ep/images/tasks/{task_id}",
                             headers={**AUTH, "X-Mock-Fault": fault})
        if fault == "reset":
            assert response.action == "reset"
        elif fault == "malformed" or fault.startswith("latency"):
            assert response.status == 200
        else:
            expected = 429 if fault.startswith("rate_limit") else int(fault.split(":")[1])
            assert response.status == expected
            assert ERROR_VALIDATOR is not None and ERROR_VALIDATOR.issues(response.json_body()) == []


CloudswayLifecycle.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCloudswayLifecycle = CloudswayLifecycle.TestCase
