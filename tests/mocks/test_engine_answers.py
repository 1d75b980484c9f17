"""A finished task's answer is made once and served as the same bytes after (the polls' hot path).

What must still show through it: a fault on the request or on the task, drift, the task's
expiry, a different query, a reset. Time is driven by the manual clock.
"""

from __future__ import annotations

from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import DriftSpec, apply_drift

AUTH = {"Authorization": "Bearer k"}
CREATE = "/v2/ai/ep/images/generations"


async def _finished(server: MockServer, **headers: str) -> str:
    created = await server.request("POST", CREATE, json={"prompts": "a fox"}, headers={**AUTH, **headers})
    assert created.status == 200, created.body
    server.clock.advance(60)  # type: ignore[attr-defined]
    return f"/v2/ai/ep/images/tasks/{created.json_body()['taskId']}"


async def test_polls_of_a_finished_task_are_the_same_bytes_and_still_counted() -> None:
    server = MockServer("cloudsway", clock="manual", seed=1)
    poll = await _finished(server)
    first = await server.request("GET", poll, headers=AUTH)
    again = await server.request("GET", poll, headers=AUTH)
    assert first.json_body()["status"] == "completed"
    assert again.body == first.body and again.headers == first.headers
    assert len(server.answers) == 1
    assert [e.status for e in server.journal.entries()][-2:] == [200, 200]  # both journalled
    task = next(iter(server.tasks))
    assert task.polls == 2


async def test_a_fault_on_the_request_is_answered_not_the_kept_answer() -> None:
    server = MockServer("cloudsway", clock="manual", seed=1)
    poll = await _finished(server)
    kept = await server.request("GET", poll, headers=AUTH)
    failed = await server.request("GET", poll, headers={**AUTH, "X-Mock-Fault": "http:503"})
    assert failed.status == 503
    expired = await server.request("GET", poll, headers={**AUTH, "X-Mock-Fault": "expired_url"})
    assert expired.json_body()["imageUrls"] != kept.json_body()["imageUrls"]
    link = expired.json_body()["imageUrls"][0].split("127.0.0.1", 1)[-1].split("cloudsway.net", 1)[-1]
    assert (await server.request("GET", link)).status != 200  # an expired link, as asked
    assert (await server.request("GET", poll, headers=AUTH)).body == kept.body


async def test_a_fault_that_travels_with_the_task_is_never_kept() -> None:
    server = MockServer("cloudsway", clock="manual", seed=1)
    poll = await _finished(server, **{"X-Mock-Fault": "expired_url"})
    first = await server.request("GET", poll, headers=AUTH)
    assert first.status == 200 and server.answers == {}


async def test_drift_applies_on_top_of_a_kept_answer() -> None:
    server = MockServer("cloudsway", clock="manual", seed=1)
    poll = await _finished(server)
    kept = await server.request("GET", poll, headers=AUTH)
    apply_drift(server, [DriftSpec.parse("rename:status=state;op=getImageTask")])
    drifted = await server.request("GET", poll, headers=AUTH)
    assert "state" in drifted.json_body() and "status" not in drifted.json_body()
    assert "status" in kept.json_body()


async def test_an_expired_task_still_answers_404() -> None:
    server = MockServer("cloudsway", clock="manual", seed=1)
    poll = await _finished(server)
    assert (await server.request("GET", poll, headers=AUTH)).status == 200
    server.clock.advance(server.contract.behaviour.retention.task + 10)  # type: ignore[attr-defined, operator]
    assert (await server.request("GET", poll, headers=AUTH)).status == 404


async def test_reset_forgets_kept_answers() -> None:
    server = MockServer("cloudsway", clock="manual", seed=1)
    poll = await _finished(server)
    await server.request("GET", poll, headers=AUTH)
    server.reset()
    assert server.answers == {}
    assert (await server.request("GET", poll, headers=AUTH)).status == 404


async def test_fal_status_keeps_one_answer_per_query() -> None:
    server = MockServer("fal", clock="manual", seed=1)
    auth = {"Authorization": "Key k"}
    created = await server.request("POST", "/fal-ai/flux-1/dev", json={"prompt": "a fox"}, headers=auth,
                                   role="queue")
    request_id = created.json_body()["request_id"]
    server.clock.advance(600)  # type: ignore[attr-defined]
    status = f"/fal-ai/flux-1/requests/{request_id}/status"
    plain = await server.request("GET", status, headers=auth, role="queue")
    with_logs = await server.request("GET", status, headers=auth, query={"logs": "1"}, role="queue")
    assert plain.status == with_logs.status == 200
    assert plain.json_body()["status"] == with_logs.json_body()["status"] == "COMPLETED"
    assert len(server.answers) == 2  # the query is part of what is kept
    assert (await server.request("GET", status, headers=auth, query={"logs": "1"}, role="queue")).body \
        == with_logs.body
