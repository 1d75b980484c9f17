"""fal's queue under arbitrary submit / status / cancel / result / clock interleavings."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from imagegen_conformance.harness.stateful import MockMachine

AUTH = {"Authorization": "Key k"}
RUNNERS = 2
STATUS_CODE = {"IN_QUEUE": 202, "IN_PROGRESS": 202, "COMPLETED": 200}
BODIES = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=20)},
    optional={
        "num_images": st.integers(1, 4),
        "num_inference_steps": st.integers(1, 50),
        "image_size": st.sampled_from(["square", "square_hd", "landscape_4_3", "portrait_16_9"]),
        "output_format": st.sampled_from(["jpeg", "png"]),
    },
)


class FalQueue(MockMachine):
    provider = "fal"
    server_options = {"options": {"runners": str(RUNNERS)}}
    max_advance = 8.0

    def __init__(self) -> None:
        super().__init__()
        self.positions: dict[str, list[int]] = {}

    def status(self, request_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/fal-ai/flux-1/requests/{request_id}/status", headers=AUTH)
        body: dict[str, Any] = response.json_body()
        assert response.status == STATUS_CODE[body["status"]], (response.status, body)
        assert "logs" in body  # fal-client indexes it directly
        return body

    @rule(target=MockMachine.keys, body=BODIES)
    def submit(self, body: dict[str, Any]) -> str:
        response = self.call("POST", "/fal-ai/flux-1/dev", json=body, headers=AUTH)
        assert response.status == 200, response.body
        data = response.json_body()
        assert data["status"] == "IN_QUEUE" and data["logs"] is None and data["metrics"] == {}
        assert data["status_url"].endswith(f"/fal-ai/flux-1/requests/{data['request_id']}/status")
        self.observe(data["request_id"], "IN_QUEUE")
        self.positions[data["request_id"]] = [data["queue_position"]]
        return str(data["request_id"])

    @rule(request_id=MockMachine.keys)
    def poll(self, request_id: str) -> None:
        body = self.status(request_id)
        self.observe(request_id, body["status"])
        if body["status"] == "IN_QUEUE":
            self.positions[request_id].append(body["queue_position"])

    @rule(request_id=MockMachine.keys)
    def cancel(self, request_id: str) -> None:
        response = self.call("PUT", f"/fal-ai/flux-1/requests/{request_id}/cancel", headers=AUTH)
        assert response.status in (200, 202, 400), response.body
        expected = {200: "OK", 202: "CANCELLATION_REQUESTED", 400: "ALREADY_COMPLETED"}[response.status]
        assert response.json_body()["status"] == expected

    @rule(request_id=MockMachine.keys)
    def result(self, request_id: str) -> None:
        state = self.status(request_id)["status"]
        response = self.call("GET", f"/fal-ai/flux-1/requests/{request_id}", headers=AUTH)
        if state != "COMPLETED":
            assert response.status == 400
        else:
            assert response.status in (200, 499), response.body  # 499: it was cancelled

    @invariant()
    def queue_positions_never_rise(self) -> None:
        for positions in self.positions.values():
            assert positions == sorted(positions, reverse=True), positions

    @invariant()
    def never_more_in_progress_than_runners(self) -> None:
        now = self.server.clock.now()
        running = [t for t in self.server.tasks if t.state(now) == "IN_PROGRESS"]
        assert len(running) <= RUNNERS


FalQueue.TestCase.settings = settings(
    max_examples=15, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFalQueue = FalQueue.TestCase
