"""The shared store in process: two MockServers on one real Redis answer as one mock."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from imagegen_conformance.mocks import MockRequest, MockServer
from imagegen_conformance.mocks.dify import DifyProvider, Workflow
from imagegen_conformance.mocks.engine import StoreUnavailable, share

AUTH = {"Authorization": "Bearer k"}
CREATE = "/v2/ai/ep/images/generations"

Pair = Callable[..., Awaitable[tuple[MockServer, MockServer]]]


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[Pair]:
    """``a, b = await pair("cloudsway", clock="manual")``: two mocks sharing the test's Redis."""
    made: list[MockServer] = []

    async def factory(provider: str, **kwargs: Any) -> tuple[MockServer, MockServer]:
        servers = []
        for _ in range(2):
            server = MockServer(provider, **kwargs)
            await share(server, redis_url)
            made.append(server)
            servers.append(server)
        return servers[0], servers[1]

    yield factory
    for server in made:
        await server.aclose()


def body(response: Any) -> Any:
    return json.loads(response.body)


async def create(server: MockServer) -> str:
    r = await server.request("POST", CREATE, json={"prompts": "a fox"}, headers=AUTH)
    assert r.status == 200, r.body
    return str(body(r)["taskId"])


async def poll(server: MockServer, task_id: str) -> Any:
    return await server.request("GET", f"/v2/ai/ep/images/tasks/{task_id}", headers=AUTH)


async def test_a_task_created_through_one_is_polled_to_completion_through_the_other(pair: Pair) -> None:
    a, b = await pair("cloudsway", clock="manual", seed=3)
    task_id = await create(a)
    assert body(await poll(b, task_id))["status"] == "pending"
    advanced = await a.request("POST", "/__mock/clock/advance", json={"seconds": 60})
    assert advanced.status == 200
    done = body(await poll(b, task_id))
    assert done["completed"] is True and len(done["imageUrls"]) == 1
    # The link was signed by B; A serves it: one signing secret.
    path = done["imageUrls"][0].split("127.0.0.1", 1)[1]
    image = await a.request("GET", path)
    assert image.status == 200 and image.headers["Content-Type"] == "image/png"
    # Both count the same two polls.
    view = body(await a.request("GET", f"/__mock/tasks/{task_id}"))
    assert view["polls"] == 2 and view["state"] == "completed"


async def test_two_mocks_with_one_seed_never_hand_out_the_same_id(pair: Pair) -> None:
    a, b = await pair("cloudsway", clock="manual", seed=5)
    ids = [await create(a), await create(b), await create(a), await create(b)]
    assert len(set(ids)) == 4


async def test_a_times_2_fault_fires_exactly_twice_across_both(pair: Pair) -> None:
    a, b = await pair("cloudsway", clock="manual")
    task_id = await create(a)
    added = await b.request("POST", "/__mock/faults", json={"spec": "http:503;op=getImageTask;times=2"})
    assert added.status == 201
    statuses = [(await poll(server, task_id)).status for server in (a, b) * 5]
    assert statuses.count(503) == 2 and statuses.count(200) == 8, statuses
    assert body(await a.request("GET", "/__mock/faults"))["active"] == []


async def test_concurrent_requests_share_a_counted_fault_exactly(pair: Pair) -> None:
    a, b = await pair("cloudsway", clock="manual")
    task_id = await create(a)
    await a.request("POST", "/__mock/faults", json={"spec": "http:500;op=getImageTask;times=7"})
    answers = await asyncio.gather(*(poll(s, task_id) for s in (a, b) * 30))
    assert [r.status for r in answers].count(500) == 7


async def test_the_journal_through_either_lists_every_exchange(pair: Pair) -> None:
    a, b = await pair("cloudsway", clock="manual")
    task_id = await create(a)
    await poll(b, task_id)
    await poll(a, task_id)
    views = [body(await s.request("GET", "/__mock/journal")) for s in (a, b)]
    assert views[0] == views[1]
    exchanges = views[0]["exchanges"]
    assert [e["seq"] for e in exchanges] == [1, 2, 3]
    assert [e["operation"] for e in exchanges] == ["createImageTask", "getImageTask", "getImageTask"]
    assert exchanges[0]["request_headers"]["Authorization"] == "Bearer <redacted>"
    since = body(await b.request("GET", "/__mock/journal", query={"since": "2"}))
    assert [e["seq"] for e in since["exchanges"]] == [3]


async def test_a_reset_through_one_forgets_for_both(pair: Pair) -> None:
    a, b = await pair("cloudsway", clock="manual")
    task_id = await create(a)
    assert (await a.request("POST", "/__mock/reset")).status == 200
    assert (await poll(b, task_id)).status == 404
    assert body(await b.request("GET", "/__mock/tasks"))["tasks"] == []
    assert body(await b.request("GET", "/__mock/journal"))["exchanges"][-1]["status"] == 404


async def test_rate_limit_buckets_are_shared(pair: Pair) -> None:
    a, b = await pair("cloudsway", clock="manual", rate_limit="2/60")
    task_id = await create(a)  # one token
    assert (await poll(b, task_id)).status == 200  # the second
    limited = await poll(a, task_id)
    assert limited.status == 429 and limited.headers["Retry-After"] == "30"
    await b.request("POST", "/__mock/clock/advance", json={"seconds": 30})
    assert (await poll(a, task_id)).status == 200


async def test_a_mock_started_later_finds_every_task_at_the_current_time(redis_url: str) -> None:
    first = MockServer("cloudsway", clock="manual", seed=1)
    await share(first, redis_url)
    ids = [await create(first)]
    await first.request("POST", "/__mock/clock/advance", json={"seconds": 1.6})
    ids.append(await create(first))
    before = {i: body(await first.request("GET", f"/__mock/tasks/{i}"))["state"] for i in ids}
    await first.aclose()
    again = MockServer("cloudsway", clock="manual", seed=1)  # a restart: same Redis
    await share(again, redis_url)
    try:
        after = {i: body(await again.request("GET", f"/__mock/tasks/{i}"))["state"] for i in ids}
        assert after == before
        await again.request("POST", "/__mock/clock/advance", json={"seconds": 10})
        assert {body(await poll(again, i))["status"] for i in ids} == {"completed"}
    finally:
        await again.aclose()


async def test_a_task_is_forgotten_after_its_retention_and_its_key_expires(
    pair: Pair, redis_url: str
) -> None:
    a, b = await pair("cloudsway", clock="manual")
    task_id = await create(a)
    ttl = redis.Redis.from_url(redis_url).ttl(f"igc:cloudsway:task:{task_id}")
    retention = a.contract.behaviour.retention.task
    assert retention is not None and retention < ttl <= retention + 60 + 10
    await a.request("POST", "/__mock/clock/advance", json={"seconds": 10 + retention + 1})
    assert (await poll(b, task_id)).status == 404


async def test_acedata_tasks_named_in_the_body_are_found_through_the_other(pair: Pair) -> None:
    a, b = await pair("acedata", clock="manual")
    created = await a.request("POST", "/flux/images", headers=AUTH, json={
        "action": "generate", "prompt": "a fox", "model": "flux-dev", "async": True})
    task_id = body(created)["task_id"]
    await b.request("POST", "/__mock/clock/advance", json={"seconds": 600})
    got = await b.request("POST", "/flux/tasks", headers=AUTH, json={"action": "retrieve", "id": task_id})
    assert got.status == 200 and body(got)["response"]["success"] is True
    listed = await b.request("POST", "/flux/tasks", headers=AUTH, json={"action": "retrieve_batch"})
    assert [item["id"] for item in body(listed)["items"]] == [task_id]


async def test_a_fal_webhook_is_delivered_once_when_both_complete_it(pair: Pair, receiver: Any) -> None:
    # With --lifecycle polls the poll that completes a request sends its webhook: both mocks
    # complete it at once here, and exactly one delivers.
    a, b = await pair("fal", clock="manual", lifecycle="polls")
    headers = {"Authorization": "Key k"}
    submitted = await a.request("POST", "/fal-ai/flux-1/dev", json={"prompt": "a fox"}, headers=headers,
                                query={"fal_webhook": receiver.url}, role="queue")
    request_id = body(submitted)["request_id"]
    path = f"/fal-ai/flux-1/requests/{request_id}/status"
    for _ in range(6):
        await asyncio.gather(*(s.request("GET", path, headers=headers, role="queue") for s in (a, b)))
    await asyncio.wait_for(receiver.queue.get(), 5)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1
    for server in (a, b):
        deliveries = body(await server.request("GET", "/__mock/deliveries"))["deliveries"]
        assert [(d["status"], d["reference"]) for d in deliveries] == [("delivered", request_id)]


async def test_an_unreachable_store_is_one_line_naming_the_url() -> None:
    server = MockServer("cloudsway")
    with pytest.raises(StoreUnavailable) as caught:
        await share(server, "redis://127.0.0.1:1/0")
    message = str(caught.value)
    assert "\n" not in message and "redis://127.0.0.1:1/0" in message


# --- Dify: runs, stop, run detail, signed files and uploads on either worker -------------

DIFY = {"Authorization": "Bearer app-test"}
DIFY_RUN = {"inputs": {"prompt": "a fox", "model_name": "v1-5-pruned-emaonly"}, "user": "u"}


def sse_data(chunks: list[bytes]) -> list[Any]:
    return [json.loads(line[len(b"data: "):]) for chunk in chunks
            for line in chunk.split(b"\n") if line.startswith(b"data: ")]


async def dify_blocking(server: MockServer, other: MockServer, body: dict[str, Any]) -> Any:
    """A blocking run through ``server`` while the shared manual clock moves through ``other``."""
    pending = asyncio.ensure_future(server.request("POST", "/v1/workflows/run", headers=DIFY,
                                                  json={**body, "response_mode": "blocking"}))
    for _ in range(200):  # until the run, started at some moment of these, has ended
        await other.request("POST", "/__mock/clock/advance", json={"seconds": 30})
        await asyncio.wait([pending], timeout=0.02)
        if pending.done():
            break
    answer = await pending
    assert answer.status == 200, answer.body
    return body_of(answer)


def body_of(response: Any) -> Any:
    return json.loads(response.body)


async def test_a_dify_stream_through_one_is_stopped_through_the_other(pair: Pair, stream_reader: Any) -> None:
    a, b = await pair("dify", clock="manual", seed=2)
    response = await a.request("POST", "/v1/workflows/run", headers=DIFY,
                               json={**DIFY_RUN, "response_mode": "streaming"})
    assert response.is_stream and not isinstance(response.body, bytes)
    reader, chunks = stream_reader(response.body)
    while not sse_data(chunks):
        await asyncio.sleep(0.01)
    started = sse_data(chunks)[0]
    assert started["event"] == "workflow_started"
    stop = await b.request("POST", f"/v1/workflows/tasks/{started['task_id']}/stop",
                           json={"user": "u"}, headers=DIFY)
    assert body_of(stop) == {"result": "success"}
    await asyncio.wait_for(reader, 5)  # no clock advance: the stop through B ends A's stream
    last = sse_data(chunks)[-1]
    assert last["event"] == "workflow_finished" and last["data"]["status"] == "stopped"
    detail = await b.request("GET", f"/v1/workflows/run/{started['workflow_run_id']}", headers=DIFY)
    assert body_of(detail)["status"] == "stopped"


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
async def test_a_dify_run_and_its_signed_files_answer_through_the_other(pair: Pair, fmt: str) -> None:
    a, b = await pair("dify", clock="manual", seed=2)
    workflow = Workflow.load()
    workflow = dataclasses.replace(workflow, nodes=tuple(
        dataclasses.replace(n, images={**n.images, "format": fmt}) if n.images else n
        for n in workflow.nodes))
    for server in (a, b):  # every worker runs the same workflow file
        assert isinstance(server.provider, DifyProvider)
        server.provider.use_workflow(workflow)
    done = await dify_blocking(a, b, DIFY_RUN)
    assert done["data"]["status"] == "succeeded"
    detail = body_of(await b.request("GET", f"/v1/workflows/run/{done['workflow_run_id']}",
                                     headers=DIFY))
    assert detail["status"] == "succeeded"

    def files(outputs: dict[str, Any]) -> list[dict[str, Any]]:
        return [f for v in outputs.values() if isinstance(v, list) for f in v]

    signed_by_a, signed_by_b = files(done["data"]["outputs"]), files(detail["outputs"])
    assert signed_by_a and [f["related_id"] for f in signed_by_a] == [f["related_id"] for f in signed_by_b]
    for item, reader in [*((f, b) for f in signed_by_a), *((f, a) for f in signed_by_b)]:
        url = urlsplit(item["url"])
        image = await reader.request("GET", url.path, query=dict(parse_qsl(url.query)))
        assert image.status == 200 and image.headers["Content-Type"] == item["mime_type"]
        forged = dict(parse_qsl(url.query), sign="x" * 44)
        assert (await reader.request("GET", url.path, query=forged)).status == 403


async def test_a_dify_upload_through_one_is_read_and_used_through_the_other(pair: Pair) -> None:
    a, b = await pair("dify", clock="manual", seed=2, options={"release": "current"})  # source_url
    boundary = "b0undary"
    data = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    form = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cat.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + data + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="user"\r\n\r\nu\r\n'
            f"--{boundary}--\r\n").encode()
    uploaded = await a.request("POST", "/v1/files/upload", body=form, headers={
        **DIFY, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert uploaded.status == 201, uploaded.body
    meta = body_of(uploaded)
    url = urlsplit(meta["source_url"])
    preview = await b.request("GET", url.path, query=dict(parse_qsl(url.query)))
    assert preview.status == 200 and preview.body == data
    files = [{"type": "image", "transfer_method": "local_file", "upload_file_id": meta["id"]}]
    assert (await dify_blocking(b, a, {**DIFY_RUN, "files": files}))["data"]["status"] == "succeeded"
    unknown = [{**files[0], "upload_file_id": "00000000-0000-4000-8000-000000000000"}]
    refused = await b.request("POST", "/v1/workflows/run", headers=DIFY,
                              json={**DIFY_RUN, "response_mode": "blocking", "files": unknown})
    assert refused.status == 400


async def test_a_store_password_never_shows_in_the_error() -> None:
    server = MockServer("cloudsway")
    with pytest.raises(StoreUnavailable) as caught:
        await share(server, "redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(caught.value)
    assert "redis://:<redacted>@127.0.0.1:1/0" in str(caught.value)


async def test_a_yunyx_presigned_link_made_by_one_downloads_through_the_other(pair: Pair) -> None:
    a, b = await pair("yunyx", time_scale=1000)  # a synchronous answer waits on the clock
    made = await a.request("POST", "/v1/images/generations", headers=AUTH, json={
        "model": "FLUX.1-schnell", "prompt": "a fox", "image_size": "1024x1024"})
    assert made.status == 200, made.body
    url = body(made)["images"][0]["url"]
    path, _, query = url.split("127.0.0.1", 1)[1].partition("?")
    from urllib.parse import parse_qsl

    got = await b.request("GET", path, query=dict(parse_qsl(query)))
    assert got.status == 200, got.body[:200]


async def test_fal_webhooks_and_links_are_signed_with_one_key_across_workers(
    pair: Pair, receiver: Any
) -> None:
    # No --signing-secret: the first mock's random key is put in Redis and both use it.
    a, b = await pair("fal", clock="manual", lifecycle="polls")
    jwks = [body(await s.request("GET", "/.well-known/jwks.json", role="queue")) for s in (a, b)]
    assert jwks[0] == jwks[1]
    headers = {"Authorization": "Key k"}
    submitted = await a.request("POST", "/fal-ai/flux-1/dev", json={"prompt": "a fox"}, headers=headers,
                                query={"fal_webhook": receiver.url}, role="queue")
    request_id = body(submitted)["request_id"]
    for _ in range(6):
        await a.request("GET", f"/fal-ai/flux-1/requests/{request_id}/status", headers=headers,
                        role="queue")
    await asyncio.wait_for(receiver.queue.get(), 5)
    got = receiver.received[0]
    lower = {k.lower(): v for k, v in got["headers"].items()}
    message = "\n".join([lower["x-fal-webhook-request-id"], lower["x-fal-webhook-user-id"],
                         lower["x-fal-webhook-timestamp"], hashlib.sha256(got["raw"]).hexdigest()])
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwks[1]["keys"][0]["x"]))
    public.verify(bytes.fromhex(lower["x-fal-webhook-signature"]), message.encode())  # raises if not
    # An image link made by one downloads through the other.
    result = await a.request("GET", f"/fal-ai/flux-1/requests/{request_id}", headers=headers, role="queue")
    url = body(result)["images"][0]["url"]
    image = await b.request("GET", "/files/" + url.split("/files/", 1)[1], role="queue")
    assert image.status == 200 and image.headers["Content-Type"] == "image/jpeg"


async def test_a_cached_finished_answer_follows_faults_clock_and_reset_set_through_the_other(
    pair: Pair,
) -> None:
    # A finished task's answer is cached per worker (Call.answer_once), but every request loads
    # the task, the run faults and the manual clock from Redis first: the cache never answers
    # for a state another worker changed.
    a, b = await pair("cloudsway", clock="manual")
    task_id = await create(a)
    await b.request("POST", "/__mock/clock/advance", json={"seconds": 60})
    first = await poll(a, task_id)
    assert body(first)["completed"] is True and a.answers  # made once, kept
    assert (await poll(a, task_id)).body == first.body
    await b.request("POST", "/__mock/faults", json={"spec": "http:503;op=getImageTask"})
    assert (await poll(a, task_id)).status == 503
    await b.request("DELETE", "/__mock/faults")
    assert (await poll(a, task_id)).body == first.body
    retention = a.contract.behaviour.retention.task
    assert retention is not None
    await b.request("POST", "/__mock/clock/advance", json={"seconds": retention + 1})
    assert (await poll(a, task_id)).status == 404  # expired for both, cached or not
    again = await create(a)
    await b.request("POST", "/__mock/clock/advance", json={"seconds": 60})
    assert body(await poll(a, again))["completed"] is True
    await b.request("POST", "/__mock/reset")
    assert (await poll(a, again)).status == 404  # at once, not after A hears of the reset


async def test_the_store_bound_counts_the_tasks_of_every_worker(pair: Pair, redis_url: str) -> None:
    a, b = await pair("cloudsway", clock="manual", max_tasks=3)
    for server in (a, b, a):
        await create(server)
    refused = await b.request("POST", CREATE, json={"prompts": "one too many"}, headers=AUTH)
    assert refused.status == 503, refused.body  # cloudsway's overload answer, as in one process
    assert body(refused) == body(a.provider.overloaded(refused_request(a)))
    # Expired tasks no longer count: past their timelines and the retention, both take new ones.
    retention = a.contract.behaviour.retention.task
    assert retention is not None
    await a.request("POST", "/__mock/clock/advance", json={"seconds": 60 + retention + 1})
    assert await create(b) and await create(a)
    assert redis.Redis.from_url(redis_url).zcard("igc:cloudsway:live") == 2  # trimmed, not scanned


def refused_request(server: MockServer) -> MockRequest:
    return MockRequest.build("POST", CREATE, role=server.roles[0])


# --- fal: one runner queue for every worker ---------------------------------------------

FAL = {"Authorization": "Key k"}


async def fal_submit(server: MockServer, prompt: str, **headers: str) -> Any:
    r = await server.request("POST", "/fal-ai/flux-1/dev", json={"prompt": prompt},
                             headers={**FAL, **headers}, role="queue")
    assert r.status == 200, r.body
    return body(r)


async def fal_status(server: MockServer, request_id: str) -> Any:
    return body(await server.request("GET", f"/fal-ai/flux-1/requests/{request_id}/status",
                                     headers=FAL, role="queue"))


async def test_fal_runners_and_queue_positions_hold_across_workers(pair: Pair) -> None:
    a, b = await pair("fal", clock="manual", seed=4, options={"runners": "2"})
    submitted = [await fal_submit((a, b)[i % 2], f"p{i}") for i in range(8)]
    ids = [s["request_id"] for s in submitted]
    # At submit, everyone ahead is still queued, whichever worker took them.
    assert [s["queue_position"] for s in submitted] == list(range(8))
    positions: dict[str, list[int]] = {rid: [] for rid in ids}
    most_running = 0
    for step in range(120):
        seen = [await fal_status((a, b)[(step + i) % 2], rid) for i, rid in enumerate(ids)]
        running = sum(1 for s in seen if s["status"] == "IN_PROGRESS")
        most_running = max(most_running, running)
        queued = [s for s in seen if s["status"] == "IN_QUEUE"]
        for s in queued:
            positions[s["request_id"]].append(s["queue_position"])
        # Exactly the earlier requests still queued are ahead (first in, first out).
        assert sorted(s["queue_position"] for s in queued) == list(range(len(queued)))
        if all(s["status"] == "COMPLETED" for s in seen):
            break
        await (a, b)[step % 2].request("POST", "/__mock/clock/advance", json={"seconds": 0.5})
    else:
        raise AssertionError("the requests did not complete")
    assert most_running == 2  # the bound is reached, never passed, over both workers
    for rid, seen_positions in positions.items():
        assert seen_positions == sorted(seen_positions, reverse=True), rid


async def test_fal_cancel_through_one_leaves_the_line_of_both(pair: Pair) -> None:
    a, b = await pair("fal", clock="manual", seed=4, options={"runners": "1"})
    ids = [(await fal_submit((a, b)[i % 2], f"p{i}"))["request_id"] for i in range(4)]
    assert (await fal_status(a, ids[3]))["queue_position"] == 3
    cancelled = await b.request("PUT", f"/fal-ai/flux-1/requests/{ids[2]}/cancel", headers=FAL,
                                role="queue")
    assert cancelled.status in (200, 202)
    assert (await fal_status(a, ids[3]))["queue_position"] == 2
    assert (await fal_status(a, ids[2]))["status"] == "COMPLETED"


async def test_fal_polls_lifecycle_takes_one_runner_across_workers(pair: Pair) -> None:
    a, b = await pair("fal", clock="manual", lifecycle="polls", options={"runners": "1"})
    first = (await fal_submit(a, "one"))["request_id"]
    second = await fal_submit(b, "two")
    assert second["queue_position"] == 1
    assert [(await fal_status(a, first))["status"] for _ in range(2)] == ["IN_QUEUE", "IN_PROGRESS"]
    # The second has had its polls (through the other worker) but the only runner is busy.
    for _ in range(3):
        seen = await fal_status(b, second["request_id"])
        assert (seen["status"], seen["queue_position"]) == ("IN_QUEUE", 0)
    assert [(await fal_status(b, first))["status"] for _ in range(3)] == [
        "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
    assert (await fal_status(a, second["request_id"]))["status"] == "IN_PROGRESS"


async def test_dify_numbers_its_runs_in_one_sequence_across_workers(pair: Pair) -> None:
    a, b = await pair("dify", clock="manual", options={"release": "seed"})
    numbers = []
    for server in (a, b, a, b):
        response = await server.request("POST", "/v1/workflows/run", headers=DIFY,
                                        json={**DIFY_RUN, "response_mode": "streaming"})
        assert response.is_stream and not isinstance(response.body, bytes)
        stream = response.body
        first = await stream.__anext__()
        await stream.aclose()
        numbers.append(sse_data([first])[0]["data"]["sequence_number"])
    assert numbers == [1, 2, 3, 4]
    await b.request("POST", "/__mock/reset")
    response = await a.request("POST", "/v1/workflows/run", headers=DIFY,
                               json={**DIFY_RUN, "response_mode": "streaming"})
    assert not isinstance(response.body, bytes)
    first = await response.body.__anext__()
    await response.body.aclose()
    assert sse_data([first])[0]["data"]["sequence_number"] == 1  # a reset starts it again


async def test_fal_cancel_through_one_brings_the_starts_behind_forward_on_both(pair: Pair) -> None:
    a, b = await pair("fal", clock="manual", seed=4, options={"runners": "1"})
    ids = [(await fal_submit((a, b)[i % 2], f"p{i}"))["request_id"] for i in range(5)]

    async def view(server: MockServer, rid: str) -> Any:
        return body(await server.request("GET", f"/__mock/tasks/{rid}"))

    def end(seen: Any) -> float:
        return float(seen["created_at"] + seen["data"]["queue_wait"] + seen["data"]["run_seconds"])

    last_before = end(await view(a, ids[4]))
    runs = [(await view(b, rid))["data"]["run_seconds"] for rid in ids[1:3]]
    for rid in ids[1:3]:  # one runner, everyone queued: each cancel frees its whole run
        cancelled = await b.request("PUT", f"/fal-ai/flux-1/requests/{rid}/cancel", headers=FAL,
                                    role="queue")
        assert body(cancelled) == {"status": "OK"}
    for server in (a, b):
        assert end(await view(server, ids[4])) == pytest.approx(last_before - sum(runs), abs=1e-6)
    running_most = 0
    for step in range(80):
        seen = [await fal_status((a, b)[step % 2], rid) for rid in ids]
        running_most = max(running_most, sum(1 for s in seen if s["status"] == "IN_PROGRESS"))
        if all(s["status"] == "COMPLETED" for s in seen):
            break
        await a.request("POST", "/__mock/clock/advance", json={"seconds": 0.5})
    assert running_most == 1 and all(s["status"] == "COMPLETED" for s in seen)


async def test_fal_webhook_of_a_request_moved_forward_by_a_cancel_elsewhere_comes_at_its_new_end(
    pair: Pair, receiver: Any
) -> None:
    a, b = await pair("fal", clock="manual", seed=4, options={"runners": "1"})
    first = (await fal_submit(b, "p0"))["request_id"]
    hooked = await a.request("POST", "/fal-ai/flux-1/dev", json={"prompt": "p1"}, headers=FAL,
                             query={"fal_webhook": receiver.url}, role="queue")
    request_id = body(hooked)["request_id"]
    await b.request("PUT", f"/fal-ai/flux-1/requests/{first}/cancel", headers=FAL, role="queue")
    seen = body(await b.request("GET", f"/__mock/tasks/{request_id}"))
    new_end = seen["created_at"] + seen["data"]["queue_wait"] + seen["data"]["run_seconds"]
    now = body(await a.request("GET", "/__mock/clock"))["now"]
    # At the new end, seconds before the old one, the webhook is sent, once (A, which took the
    # request, heard of its new timeline; B, which moved it, waits for that end too).
    await b.request("POST", "/__mock/clock/advance", json={"seconds": new_end - now + 0.01})
    delivered = await asyncio.wait_for(receiver.queue.get(), 5)
    assert delivered["request_id"] == request_id and delivered["status"] == "OK"
    deliveries = body(await a.request("GET", "/__mock/deliveries"))["deliveries"]
    assert [d["reference"] for d in deliveries] == [request_id]


async def test_a_dify_blocking_run_is_seen_and_stopped_through_the_other_while_it_waits(pair: Pair) -> None:
    a, b = await pair("dify", clock="manual", seed=2, options={"stop_blocking": "true"})
    pending = asyncio.ensure_future(a.request("POST", "/v1/workflows/run", headers=DIFY,
                                              json={**DIFY_RUN, "response_mode": "blocking"}))
    listed: list[Any] = []
    for _ in range(300):  # until A's request has begun: then the run is in Redis while it waits
        await asyncio.sleep(0.01)
        listed = body(await b.request("GET", "/__mock/tasks"))["tasks"]
        if listed:
            break
    (run,) = listed
    detail = await b.request("GET", f"/v1/workflows/run/{run['id']}", headers=DIFY)
    assert body(detail)["status"] == "running"
    stop = await b.request("POST", f"/v1/workflows/tasks/{run['data']['task_id']}/stop",
                           json={"user": "u"}, headers=DIFY)
    assert body(stop) == {"result": "success"}
    answer = await asyncio.wait_for(pending, 5)  # no clock advance: the stop through B ends it
    assert body(answer)["data"]["status"] == "stopped"
    assert body(await a.request("GET", f"/v1/workflows/run/{run['id']}", headers=DIFY))["status"] == "stopped"


async def test_dify_runs_and_their_files_answer_after_every_worker_restarts(redis_url: str) -> None:
    before = [MockServer("dify", clock="manual", seed=2) for _ in range(2)]
    for server in before:
        await share(server, redis_url)
    done = await dify_blocking(before[0], before[1], DIFY_RUN)
    for server in before:
        await server.aclose()
    after = MockServer("dify", clock="manual", seed=2)  # a restart: a new process, same Redis
    await share(after, redis_url)
    try:
        detail = await after.request("GET", f"/v1/workflows/run/{done['workflow_run_id']}",
                                     headers=DIFY)
        assert body(detail)["status"] == "succeeded"
        (item,) = [f for v in done["data"]["outputs"].values() if isinstance(v, list) for f in v]
        url = urlsplit(item["url"])  # signed before the restart, with the key kept in Redis
        image = await after.request("GET", url.path, query=dict(parse_qsl(url.query)))
        assert image.status == 200 and image.headers["Content-Type"] == item["mime_type"]
    finally:
        await after.aclose()


async def test_a_dify_body_nested_too_deep_is_refused_in_difys_words_on_a_shared_store(pair: Pair) -> None:
    # The shared store looks for upload ids in the body before the engine parses it: that look
    # is as strict and as depth-bounded as the engine's own parser.
    a, _ = await pair("dify", clock="manual", seed=2)
    nested = b"[" * 50_000 + b"]" * 50_000
    deep = b'{"user": "u", "inputs": {}, "files": [{"upload_file_id": ' + nested + b"}]}"
    response = await a.request("POST", "/v1/workflows/run", body=deep,
                               headers={**DIFY, "Content-Type": "application/json"})
    assert response.status == 400 and json.loads(response.body)["code"] == "bad_request"
    assert not a.errors


async def test_redis_lost_inside_a_handler_is_the_providers_503_not_a_mock_crash(own_redis: Any) -> None:
    # Dify takes its run number from Redis inside the handler; Redis goes away at that moment.
    server = MockServer("dify", clock="manual", seed=2)
    await share(server, own_redis.url)
    runs = server.provider
    assert isinstance(runs, DifyProvider)
    take = runs._sequence.take
    assert take is not None

    async def take_while_redis_dies(name: str) -> int:
        own_redis.stop()
        return await take(name)

    runs._sequence.take = take_while_redis_dies
    try:
        response = await server.request("POST", "/v1/workflows/run", headers=DIFY, json={
            "inputs": {"prompt": "p"}, "user": "u", "response_mode": "streaming"})
        assert response.status == 503 and response.headers["X-Mock-Error"] == "store-unavailable"
        assert server.errors == []  # an outage of the store, not a bug of the mock
    finally:
        own_redis.start()
        await server.aclose()
