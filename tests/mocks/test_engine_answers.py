"""A finished task's answer is made once and served as the same bytes after (the polls' hot path).

What must still show through it: a fault on the request or on the task, drift, the task's
expiry, a different query, a reset. Time is driven by the manual clock.
"""

from __future__ import annotations

import json

from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import DriftSpec, MockRequest, apply_drift, key_fingerprint

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


# --- AceData polls by POST: the body is checked once, the answer still follows the task -----

ACE_AUTH = {"Authorization": "Bearer k"}


async def _ace_finished(server: MockServer) -> str:
    created = await server.request("POST", "/flux/images", headers=ACE_AUTH, json={
        "action": "generate", "prompt": "a fox", "model": "flux-dev", "size": "1024x1024", "async": True})
    assert created.status == 200, created.body
    server.clock.advance(600)  # type: ignore[attr-defined]
    task_id: str = created.json_body()["task_id"]
    return task_id


async def test_acedata_polls_by_post_are_the_same_answer_counted_and_journalled() -> None:
    server = MockServer("acedata", clock="manual", seed=1)
    task_id = await _ace_finished(server)
    retrieve = {"action": "retrieve", "id": task_id}
    first = await server.request("POST", "/flux/tasks", json=retrieve, headers=ACE_AUTH)
    again = await server.request("POST", "/flux/tasks", json=retrieve, headers=ACE_AUTH)
    assert first.status == again.status == 200 and again.body == first.body
    assert first.json_body()["response"]["success"] is True
    assert server.tasks.get(task_id).polls == 2  # type: ignore[union-attr]
    polls = server.journal.entries()[-2:]
    assert [e.response_body for e in polls] == [first.body.decode()] * 2  # type: ignore[union-attr]
    assert [e.request_body for e in polls] == [json.dumps(retrieve, ensure_ascii=False)] * 2


async def test_acedata_a_bad_poll_body_is_refused_every_time_and_a_good_one_never_is() -> None:
    server = MockServer("acedata", clock="manual", seed=1)
    task_id = await _ace_finished(server)
    for _ in range(2):
        bad = await server.request("POST", "/flux/tasks", json={"action": "retrieve", "id": 5},
                                   headers=ACE_AUTH)
        assert bad.status == 400 and bad.json_body()["error"]["code"] == "bad_request"
    unknown = {"action": "retrieve", "id": "no-such-task"}
    for _ in range(2):
        assert (await server.request("POST", "/flux/tasks", json=unknown, headers=ACE_AUTH)).status == 404
    good = {"action": "retrieve", "id": task_id}
    assert (await server.request("POST", "/flux/tasks", json=good, headers=ACE_AUTH)).status == 200
    # The same bytes after the task expired: 404, the body's check being kept changes nothing.
    server.clock.advance(server.contract.behaviour.retention.task + 10)  # type: ignore[attr-defined, operator]
    assert (await server.request("POST", "/flux/tasks", json=good, headers=ACE_AUTH)).status == 404


async def test_acedata_a_fault_on_a_post_poll_is_answered_not_the_kept_answer() -> None:
    server = MockServer("acedata", clock="manual", seed=1)
    task_id = await _ace_finished(server)
    retrieve = {"action": "retrieve", "id": task_id}
    kept = await server.request("POST", "/flux/tasks", json=retrieve, headers=ACE_AUTH)
    failed = await server.request("POST", "/flux/tasks", json=retrieve,
                                  headers={**ACE_AUTH, "X-Mock-Fault": "http:503"})
    assert failed.status == 503
    assert server.journal.entries()[-1].response_body == failed.body.decode()  # type: ignore[union-attr]
    assert (await server.request("POST", "/flux/tasks", json=retrieve, headers=ACE_AUTH)).body == kept.body


def test_a_checked_body_is_a_fresh_copy_for_every_request() -> None:
    server = MockServer("acedata", clock="manual", seed=1)
    raw = json.dumps({"action": "retrieve", "id": "t1"}).encode()

    def read() -> dict[str, object]:
        request = MockRequest.build("POST", "/flux/tasks", body=raw,
                                    headers={"Content-Type": "application/json"})
        body = server.bodies.read(server.provider, server.contract, request, "retrieveFluxTasks")
        assert body.ok and body.data is not None
        return body.data

    first = read()
    first["id"] = "changed by a handler"
    assert read() == {"action": "retrieve", "id": "t1"}
    nested = MockRequest.build("POST", "/flux/tasks", body=b'{"action": "retrieve", "ids": ["a"]}')
    server.bodies.read(server.provider, server.contract, nested, "retrieveFluxTasks")
    assert len(server.bodies._kept) == 1  # a body holding a list is never kept


async def test_the_journal_names_each_credential_and_follows_a_new_signing_key() -> None:
    server = MockServer("cloudsway", clock="manual", seed=1)
    for key in ("one", "two", "one"):
        await server.request("GET", "/v2/ai/ep/images/tasks/x", headers={"Authorization": f"Bearer {key}"})
    ids = [e.key_id for e in server.journal.entries()]
    assert ids[0] == ids[2] != ids[1] and all(i and i.startswith("key-") for i in ids)
    assert key_fingerprint(server.secret, "one") == ids[0]
    server.secret = bytes(32)  # share() takes the key every worker uses
    await server.request("GET", "/v2/ai/ep/images/tasks/x", headers={"Authorization": "Bearer one"})
    assert server.journal.entries()[-1].key_id == key_fingerprint(bytes(32), "one") != ids[0]


async def test_acedata_an_option_shows_in_the_kept_answer_of_the_same_poll() -> None:
    answers = []
    for timings in ("object", "timestamp"):
        server = MockServer("acedata", clock="manual", seed=1, options={"timings": timings})
        task_id = await _ace_finished(server)
        retrieve = {"action": "retrieve", "id": task_id}
        for _ in range(2):  # made, then kept
            answer = await server.request("POST", "/flux/tasks", json=retrieve, headers=ACE_AUTH)
        answers.append(answer.json_body()["response"]["data"][0]["timings"])
    assert isinstance(answers[0], dict) and isinstance(answers[1], int)


async def test_acedata_drift_applies_on_top_of_a_kept_post_poll() -> None:
    server = MockServer("acedata", clock="manual", seed=1)
    task_id = await _ace_finished(server)
    retrieve = {"action": "retrieve", "id": task_id}
    kept = await server.request("POST", "/flux/tasks", json=retrieve, headers=ACE_AUTH)
    apply_drift(server, [DriftSpec.parse("drop:trace_id;op=retrieveFluxTasks")])
    drifted = await server.request("POST", "/flux/tasks", json=retrieve, headers=ACE_AUTH)
    assert "trace_id" in kept.json_body() and "trace_id" not in drifted.json_body()
