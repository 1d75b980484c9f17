"""fal.ai queue mock, in process: contract, queue and runners, status codes, logs, results,
cancel, the sync host, validation, faults, webhooks, retention, and fal-client through respx."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from PIL import Image

from imagegen_conformance import contracts
from imagegen_conformance.mocks import FaultSpec, MockServer, mock_router
from imagegen_conformance.mocks.engine import MockResponse

AUTH = {"Authorization": "Key test-key"}
SUBMIT = "/fal-ai/flux-1/dev"
SEED_INPUT = {
    "prompt": "Extreme close-up of a single tiger eye, direct frontal view.",
    "image_size": "landscape_4_3",
    "num_inference_steps": 28,
    "guidance_scale": 3.5,
    "num_images": 1,
    "enable_safety_checker": True,
    "output_format": "jpeg",
    "acceleration": "regular",
}


def manual(**kwargs: Any) -> MockServer:
    return MockServer("fal", clock="manual", seed=1, **kwargs)


def path(request_id: str, suffix: str = "") -> str:
    return f"/fal-ai/flux-1/requests/{request_id}{suffix}"


def conforms(operation: str, response: MockResponse) -> Any:
    """The body, after checking it against the contract's schema for its status."""
    body = response.json_body()
    validator = contracts.response_validator("fal", operation, response.status)
    assert validator is not None, f"{operation} documents no {response.status}"
    assert validator.issues(body) == []
    return body


async def submit(
    server: MockServer, body: Any = None, *, query: dict[str, str] | None = None, **headers: str
) -> dict[str, Any]:
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    response = await server.request(
        "POST", SUBMIT, json=SEED_INPUT if body is None else body, headers={**AUTH, **extra}, query=query
    )
    assert response.status == 200, response.body
    assert response.headers["x-fal-request-id"] == response.json_body()["request_id"]
    result: dict[str, Any] = conforms("submitRequest", response)
    return result


async def status(server: MockServer, request_id: str, logs: str | None = None) -> MockResponse:
    query = {"logs": logs} if logs is not None else None
    return await server.request("GET", path(request_id, "/status"), headers=AUTH, query=query)


async def result(server: MockServer, request_id: str) -> MockResponse:
    return await server.request("GET", path(request_id), headers=AUTH)


async def finish(server: MockServer, request_id: str) -> MockResponse:
    server.clock.advance(600)
    return await result(server, request_id)


# --- contract -----------------------------------------------------------------------------


def test_openapi_document_is_valid() -> None:
    validate(dict(contracts.load("fal").openapi))


def test_every_routed_operation_exists_in_the_contract() -> None:
    server = manual()
    contract = contracts.load("fal")
    routed = {r.operation for r in server.routes}
    assert routed == {"submitRequest", "getRequestStatus", "streamRequestStatus", "getRequestResult",
                      "cancelRequest", "runSync", "streamRun", "getWebhookJwks"}
    assert routed | {"downloadImage"} == set(contract.operations)
    assert {r.role for r in server.routes} == {"queue", "run"}
    assert server.roles == ("queue", "run")


def test_quirks_scenarios_and_options_are_consistent() -> None:
    contract = contracts.load("fal")
    quirk_ids = {q.id for q in contract.behaviour.quirks}
    assert set(contract.openapi["x-quirks"]) == quirk_ids
    for scenario in contract.scenarios:
        for fault in scenario.faults:
            FaultSpec.parse(fault)
        for name, value in scenario.options.items():
            assert value in contract.behaviour.options[name].choices
    assert contract.behaviour.hosts == {"queue": "https://queue.fal.run", "run": "https://fal.run"}


# --- submit, status, result ---------------------------------------------------------------


async def test_submit_answers_the_seed_body_with_owner_app_urls() -> None:
    server = manual()
    body = await submit(server)
    assert list(body) == ["status", "request_id", "response_url", "status_url", "cancel_url", "logs",
                          "metrics", "queue_position"]
    rid = body["request_id"]
    assert body["status"] == "IN_QUEUE" and body["logs"] is None and body["metrics"] == {}
    assert body["queue_position"] == 0
    assert body["response_url"] == f"http://127.0.0.1/fal-ai/flux-1/requests/{rid}"
    assert body["status_url"] == body["response_url"] + "/status"
    assert body["cancel_url"] == body["response_url"] + "/cancel"
    # [V] the /dev subpath belongs to the submit only.
    response = await server.request("GET", f"/fal-ai/flux-1/dev/requests/{rid}/status", headers=AUTH)
    assert response.status == 404


async def test_status_codes_and_logs_present_in_every_status_body() -> None:
    server = manual()
    rid = (await submit(server))["request_id"]
    seen: list[tuple[str, int]] = []
    log_counts: list[int] = []
    for _ in range(40):
        plain = await status(server, rid)
        off = await status(server, rid, logs="false")
        on = await status(server, rid, logs="1")
        for response in (plain, off, on):
            body = conforms("getRequestStatus", response)
            assert "logs" in body
            assert response.status == (200 if body["status"] == "COMPLETED" else 202)
            assert response.headers["x-fal-request-id"] == rid
        assert plain.json_body()["logs"] is None and off.json_body()["logs"] is None
        on_body = on.json_body()
        if on_body["status"] != "IN_QUEUE":
            log_counts.append(len(on_body["logs"]))
        seen.append((on_body["status"], on.status))
        server.clock.advance(0.25)
    assert [s for s, _ in dict.fromkeys(seen)] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert log_counts == sorted(log_counts) and log_counts[0] < log_counts[-1]  # logs grow
    done = (await status(server, rid, logs="true")).json_body()
    assert done["metrics"]["inference_time"] > 0
    assert done["logs"][-1] == {"message": "Generation finished", "level": "INFO", "source": "USER",
                                "timestamp": done["logs"][-1]["timestamp"]}


async def test_result_before_completion_then_the_output() -> None:
    server = manual()
    rid = (await submit(server, {**SEED_INPUT, "seed": 42, "num_images": 2}))["request_id"]
    early = await result(server, rid)
    assert early.status == 400 and early.json_body() == {"detail": "Request is still in progress"}
    done = await finish(server, rid)
    assert done.headers["x-fal-request-id"] == rid
    out = conforms("getRequestResult", done)
    assert out["seed"] == 42 and out["prompt"] == SEED_INPUT["prompt"]
    assert out["has_nsfw_concepts"] == [False, False] and out["timings"]["inference"] > 0
    assert [(i["width"], i["height"], i["content_type"]) for i in out["images"]] == [
        (1024, 768, "image/jpeg")
    ] * 2
    first, second = [await server.request("GET", i["url"].removeprefix("http://127.0.0.1"))
                     for i in out["images"]]
    assert first.status == second.status == 200
    assert first.body[:2] == b"\xff\xd8" and first.body != second.body  # real, distinct JPEGs


async def test_result_before_completion_can_answer_202_with_the_status() -> None:
    server = manual(options={"in_progress_result": "202"})
    rid = (await submit(server))["request_id"]
    early = await result(server, rid)
    assert early.status == 202 and early.json_body()["status"] == "IN_QUEUE"


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param("square_hd", (1024, 1024), id="square_hd"),
        pytest.param("square", (512, 512), id="square"),
        pytest.param("portrait_4_3", (768, 1024), id="portrait_4_3"),
        pytest.param("portrait_16_9", (576, 1024), id="portrait_16_9"),
        pytest.param("landscape_4_3", (1024, 768), id="landscape_4_3"),
        pytest.param("landscape_16_9", (1024, 576), id="landscape_16_9"),
        pytest.param({"width": 640, "height": 360}, (640, 360), id="custom-object"),
    ],
)
async def test_image_sizes_and_png_bytes(size: Any, expected: tuple[int, int]) -> None:
    server = manual()
    rid = (await submit(server, {"prompt": "p", "image_size": size, "output_format": "png"}))["request_id"]
    image = (await finish(server, rid)).json_body()["images"][0]
    assert (image["width"], image["height"]) == expected and image["content_type"] == "image/png"
    data = await server.request("GET", image["url"].removeprefix("http://127.0.0.1"))
    assert Image.open(io.BytesIO(data.body)).size == expected
    assert data.body[:4] == b"\x89PNG"


async def test_sync_mode_answers_data_uris() -> None:
    server = manual()
    rid = (await submit(server, {"prompt": "p", "image_size": "square", "sync_mode": True}))["request_id"]
    server.clock.advance(60)
    image = (await result(server, rid)).json_body()["images"][0]
    head, _, data = image["url"].partition(",")
    assert head == "data:image/jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (512, 512)


# --- queue and runners --------------------------------------------------------------------


async def _walk(server: MockServer, ids: list[str], steps: int, step: float) -> dict[str, Any]:
    """Poll every request at every step; collect positions, states and the running count."""
    positions: dict[str, list[int]] = {rid: [] for rid in ids}
    running_counts: list[int] = []
    done_at: dict[str, int] = {}
    for t in range(steps):
        running = 0
        for rid in ids:
            response = await status(server, rid)
            body = response.json_body()
            assert response.status == (200 if body["status"] == "COMPLETED" else 202)
            assert "logs" in body
            if body["status"] == "IN_QUEUE":
                positions[rid].append(body["queue_position"])
            elif body["status"] == "IN_PROGRESS":
                running += 1
            else:
                done_at.setdefault(rid, t)
        running_counts.append(running)
        server.clock.advance(step)
    return {"positions": positions, "running": running_counts, "done_at": done_at}


async def test_queue_position_never_rises_and_runners_bound_in_progress() -> None:
    server = manual(options={"runners": "2"})
    ids = [(await submit(server, {"prompt": f"p{i}", "num_images": 1 + i % 3}))["request_id"]
           for i in range(10)]
    first = await status(server, ids[-1])
    assert first.json_body()["queue_position"] == 9  # everyone ahead is still queued
    walk = await _walk(server, ids, 200, 0.5)
    assert max(walk["running"]) == 2  # the bound is reached and never passed
    for rid, seen in walk["positions"].items():
        assert seen == sorted(seen, reverse=True), (rid, seen)
    assert len(walk["done_at"]) == 10
    # First in, first out: a later request never starts before an earlier one.
    tasks = [server.tasks.get(rid) for rid in ids]
    starts = [t.created_at + t.durations[0] for t in tasks if t is not None]
    assert len(starts) == 10 and starts == sorted(starts)


async def test_queue_position_counts_exactly_the_earlier_requests_still_queued() -> None:
    server = manual(options={"runners": "2"})
    ids = []
    for i in range(24):
        headers = {"x_fal_request_timeout": "6"} if i % 7 == 3 else {}
        body = {"prompt": f"p{i}", "num_images": 1 + i % 4}
        ids.append((await submit(server, body, **headers))["request_id"])
    for rid in ids[5:20:4]:
        assert (await server.request("PUT", path(rid, "/cancel"), headers=AUTH)).status in (200, 202)
    compared = 0
    for _ in range(80):
        now = server.clock.now()
        tasks = [t for t in (server.tasks.get(rid) for rid in ids) if t is not None]
        for task in tasks:
            body = (await status(server, task.id)).json_body()
            if body["status"] != "IN_QUEUE":
                continue
            ahead = [t for t in tasks if t.data["seq"] < task.data["seq"] and t.state(now) == "IN_QUEUE"]
            assert body["queue_position"] == len(ahead)
            compared += 1
        server.clock.advance(0.75)
    assert compared > 100


async def test_cancel_while_queued_frees_the_slot_for_later_requests() -> None:
    async def run(cancel: bool) -> tuple[float, dict[str, Any]]:
        server = manual(options={"runners": "1"})
        ids = [(await submit(server, {"prompt": f"p{i}"}))["request_id"] for i in range(5)]
        if cancel:
            for rid in ids[1:3]:
                response = await server.request("PUT", path(rid, "/cancel"), headers=AUTH)
                assert response.status == 200
                assert conforms("cancelRequest", response) == {"status": "OK"}
        walk = await _walk(server, ids, 120, 0.5)
        assert max(walk["running"]) == 1
        for seen in walk["positions"].values():
            assert seen == sorted(seen, reverse=True)
        last = server.tasks.get(ids[-1])
        assert last is not None
        return last.created_at + sum(last.durations), walk

    end_full, _ = await run(cancel=False)
    end_cut, walk = await run(cancel=True)
    assert end_cut < end_full
    assert walk["positions"][list(walk["positions"])[-1]][0] == 2  # only two uncancelled ahead


@pytest.mark.parametrize(
    ("option", "answer"),
    [pytest.param("ok", (200, "OK"), id="docs-ok"),
     pytest.param("cancellation_requested", (202, "CANCELLATION_REQUESTED"), id="third-party-202")],
)
async def test_cancel_answers_and_what_a_cancelled_request_reads(
    option: str, answer: tuple[int, str]
) -> None:
    server = manual(options={"cancel_queued": option})
    rid = (await submit(server))["request_id"]
    response = await server.request("PUT", path(rid, "/cancel"), headers=AUTH)
    assert (response.status, conforms("cancelRequest", response)["status"]) == answer
    after = await status(server, rid)
    body = conforms("getRequestStatus", after)
    assert after.status == 200 and body["status"] == "COMPLETED"
    assert (body["error"], body["error_type"]) == ("Request cancelled by the client.", "request_cancelled")
    gone = await result(server, rid)
    assert gone.status == 499 and conforms("getRequestResult", gone) == {
        "detail": "Request cancelled by the client."}
    again = await server.request("PUT", path(rid, "/cancel"), headers=AUTH)
    assert again.status == 400 and conforms("cancelRequest", again) == {"status": "ALREADY_COMPLETED"}
    missing = await server.request("PUT", path("no-such-id", "/cancel"), headers=AUTH)
    assert missing.status == 404 and conforms("cancelRequest", missing) == {"status": "NOT_FOUND"}


@pytest.mark.parametrize(("option", "outcome"), [("completes", 200), ("stops", 499)])
async def test_cancel_in_progress_follows_the_option(option: str, outcome: int) -> None:
    server = manual(options={"cancel_in_progress": option})
    rid = (await submit(server))["request_id"]
    server.clock.advance(1.05)
    assert (await status(server, rid)).json_body()["status"] == "IN_PROGRESS"
    response = await server.request("PUT", path(rid, "/cancel"), headers=AUTH)
    assert response.status == 202
    assert (await finish(server, rid)).status == outcome


async def test_polls_lifecycle_moves_per_poll_and_respects_runners() -> None:
    server = MockServer("fal", clock="manual", seed=1, lifecycle="polls", options={"runners": "1"})
    a = (await submit(server))["request_id"]
    b = (await submit(server))["request_id"]
    assert [(await status(server, a)).json_body()["status"] for _ in range(2)] == ["IN_QUEUE", "IN_PROGRESS"]
    # b has had its polls but the only runner is busy: it waits, first in line.
    for _ in range(3):
        body = (await status(server, b)).json_body()
        assert (body["status"], body["queue_position"]) == ("IN_QUEUE", 0)
    assert [(await status(server, a)).json_body()["status"] for _ in range(3)] == [
        "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"
    ]
    assert (await status(server, b)).json_body()["status"] == "IN_PROGRESS"
    assert (await result(server, a)).status == 200


async def _read_events(chunks: AsyncIterator[bytes], server: MockServer) -> list[dict[str, Any]]:
    """Read SSE data events to the end, advancing the manual clock while the stream waits."""
    events: list[dict[str, Any]] = []

    async def next_chunk() -> bytes:
        return await chunks.__anext__()

    while True:
        pending = asyncio.ensure_future(next_chunk())
        while not pending.done():
            await asyncio.sleep(0.005)
            if not pending.done():
                server.clock.advance(0.5)
        try:
            chunk = pending.result()
        except StopAsyncIteration:
            return events
        if chunk.startswith(b"data: "):
            events.append(json.loads(chunk[6:]))


def _check_events(events: list[dict[str, Any]], *, logs: bool = True) -> None:
    assert list(dict.fromkeys(e["status"] for e in events)) == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert events[0]["queue_position"] == 0
    validator = contracts.response_validator("fal", "getRequestStatus", 200)
    assert validator is not None and all(validator.issues(e) == [] for e in events)
    if not logs:
        assert [e["status"] for e in events] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
        assert all(e["logs"] is None for e in events)
        return
    # Each line once, as it appears: appended up, the events give exactly the polled logs.
    lines = [line for e in events for line in e["logs"] or []]
    assert [line["message"] for line in lines] == (
        ["Starting generation"] + [f"Step {k}/28" for k in range(1, 29)] + ["Generation finished"]
    )
    assert all(e["logs"] for e in events if e["status"] == "IN_PROGRESS")


@pytest.mark.parametrize("logs", [pytest.param(True, id="logs"), pytest.param(False, id="no-logs")])
async def test_status_stream_sends_state_changes_and_each_log_line_once(logs: bool) -> None:
    server = manual()
    rid = (await submit(server))["request_id"]
    response = await server.request("GET", path(rid, "/status/stream"), headers=AUTH,
                                    query={"logs": "1" if logs else "0"})
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["x-fal-request-id"] == rid
    assert not isinstance(response.body, bytes)
    events = await _read_events(response.body, server)
    _check_events(events, logs=logs)
    if logs:
        polled = (await status(server, rid, "1")).json_body()["logs"]
        assert [line for e in events for line in e["logs"] or []] == polled


async def test_a_quiet_status_stream_sends_a_comment_every_15_seconds() -> None:
    server = manual(options={"runners": "1"})
    await submit(server, query=None, X_Mock_Fault="never_finish")
    rid = (await submit(server))["request_id"]  # waits behind a request that never ends
    server.clock.advance(2)  # the endless one has started: nothing changes any more
    response = await server.request("GET", path(rid, "/status/stream"), headers=AUTH)
    assert not isinstance(response.body, bytes)
    chunks = response.body
    first = await chunks.__anext__()
    assert json.loads(first[6:])["status"] == "IN_QUEUE"
    pending = asyncio.ensure_future(chunks.__anext__())
    await asyncio.sleep(0.01)
    server.clock.advance(14.9)
    await asyncio.sleep(0.01)
    assert not pending.done()
    server.clock.advance(0.2)
    assert await asyncio.wait_for(pending, 1) == b": ping\n\n"
    await chunks.aclose()  # type: ignore[attr-defined]


# --- sync host ----------------------------------------------------------------------------


async def test_sync_host_answers_the_output_after_inference_time() -> None:
    server = MockServer("fal", time_scale=2000, seed=1)
    response = await server.request("POST", SUBMIT, json={**SEED_INPUT, "num_images": 3}, headers=AUTH,
                                    role="run")
    out = conforms("runSync", response)
    assert len(out["images"]) == 3 and response.headers["x-fal-request-id"]
    invalid = await server.request("POST", SUBMIT, json={"num_images": 2}, headers=AUTH, role="run")
    assert invalid.status == 422
    assert conforms("runSync", invalid)["detail"][0]["loc"] == ["body", "prompt"]
    # The same path on the sync host has no queue routes.
    assert (await server.request("GET", path("x", "/status"), headers=AUTH, role="run")).status == 404


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        pytest.param({"image_size": "square"}, ["body", "prompt"], "missing", id="prompt-missing"),
        pytest.param({"prompt": 3}, ["body", "prompt"], "string_type", id="prompt-not-string"),
        pytest.param({"prompt": "p", "num_images": 0}, ["body", "num_images"], "greater_than_equal",
                     id="num-images-0"),
        pytest.param({"prompt": "p", "num_images": 5}, ["body", "num_images"], "less_than_equal",
                     id="num-images-5"),
        pytest.param({"prompt": "p", "num_inference_steps": 51}, ["body", "num_inference_steps"],
                     "less_than_equal", id="steps-51"),
        pytest.param({"prompt": "p", "guidance_scale": 0.5}, ["body", "guidance_scale"],
                     "greater_than_equal", id="guidance-low"),
        pytest.param({"prompt": "p", "output_format": "gif"}, ["body", "output_format"], "literal_error",
                     id="format-gif"),
        pytest.param({"prompt": "p", "acceleration": "turbo"}, ["body", "acceleration"], "literal_error",
                     id="acceleration-turbo"),
        pytest.param({"prompt": "p", "image_size": "huge"}, ["body", "image_size"], "union_tag_invalid",
                     id="size-name"),
        pytest.param({"prompt": "p", "image_size": {"width": 0, "height": 10}}, ["body", "image_size"],
                     "union_tag_invalid", id="size-object"),
        pytest.param({"prompt": "p", "num_images": "many"}, ["body", "num_images"], "int_type",
                     id="num-images-word"),
        pytest.param({"prompt": "p", "sync_mode": "maybe"}, ["body", "sync_mode"], "bool_type",
                     id="sync-mode-word"),
        pytest.param(["prompt"], ["body"], "model_attributes_type", id="body-list"),
    ],
)
async def test_invalid_input_is_queued_then_fails_at_result_with_422(
    body: Any, loc: list[str], kind: str
) -> None:
    server = manual()
    rid = (await submit(server, body))["request_id"]
    done = await finish(server, rid)
    assert (await status(server, rid)).json_body()["status"] == "COMPLETED"  # no FAILED status
    assert done.status == 422 and done.headers["X-Fal-Retryable"] == "false"
    detail = conforms("getRequestResult", done)["detail"]
    assert (detail[0]["loc"], detail[0]["type"]) == (loc, kind)
    assert detail[0]["msg"]


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"{not json", "json_invalid"), (b"", "missing")], ids=["broken-json", "empty"]
)
async def test_unparseable_bodies_fail_at_result(raw: bytes, kind: str) -> None:
    server = manual()
    headers = {**AUTH, "Content-Type": "application/json"}
    response = await server.request("POST", SUBMIT, body=raw, headers=headers)
    assert response.status == 200
    done = await finish(server, response.json_body()["request_id"])
    assert done.status == 422 and done.json_body()["detail"][0]["type"] == kind


async def test_lax_numbers_and_seed_spellings_are_accepted_by_default() -> None:
    server = manual()
    body = {"prompt": "p", "num_images": "2", "num_inference_steps": 0, "output_format": "JPEG",
            "acceleration": "default", "enable_safety_checker": "false"}
    rid = (await submit(server, body))["request_id"]
    out = (await finish(server, rid)).json_body()
    assert len(out["images"]) == 2 and out["images"][0]["content_type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("options", "body"),
    [
        ({"enum_values": "strict"}, {"prompt": "p", "output_format": "JPEG"}),
        ({"enum_values": "strict"}, {"prompt": "p", "acceleration": "default"}),
        ({"steps_min": "1"}, {"prompt": "p", "num_inference_steps": 0}),
    ],
    ids=["strict-format-case", "strict-acceleration-default", "steps-min-1"],
)
async def test_reference_strictness_is_selectable(options: dict[str, str], body: dict[str, Any]) -> None:
    server = manual(options=options)
    rid = (await submit(server, body))["request_id"]
    assert (await finish(server, rid)).status == 422


async def test_acceleration_default_changes_inference_time() -> None:
    times = []
    for default in ("regular", "none"):
        server = manual(options={"acceleration_default": default})
        rid = (await submit(server, {"prompt": "p"}))["request_id"]
        times.append((await finish(server, rid)).json_body()["timings"]["inference"])
    assert times[1] / times[0] == pytest.approx(1 / 0.75, rel=1e-3)


# --- errors and faults --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "status", "error_type"),
    [
        ("http:503", 503, "runner_scheduling_failure"),
        ("http:504", 504, "request_timeout"),
        ("http:503:runner_disconnected", 503, "runner_disconnected"),
        ("http:504:startup_timeout", 504, "startup_timeout"),
    ],
)
async def test_infrastructure_faults_carry_error_type(spec: str, status: int, error_type: str) -> None:
    server = manual()
    rid = (await submit(server))["request_id"]
    response = await server.request("GET", path(rid, "/status"), headers={**AUTH, "X-Mock-Fault": spec})
    body = conforms("getRequestStatus", response)
    assert response.status == status and body["error_type"] == error_type
    assert response.headers["X-Fal-Error-Type"] == error_type and body["detail"]
    assert response.headers["x-fal-request-id"] == rid


@pytest.mark.parametrize(
    ("headers", "option", "status"),
    [({}, "required", 401), ({"Authorization": "Bearer x"}, "optional", 401),
     ({"Authorization": "Key "}, "optional", 401), ({"Authorization": "Key "}, "required", 401)],
    ids=["missing-required", "bearer", "empty-key", "empty-key-required"],
)
async def test_auth_errors_answer_401_with_detail(headers: dict[str, str], option: str, status: int) -> None:
    server = manual(options={"auth": option})
    response = await server.request("POST", SUBMIT, json=SEED_INPUT, headers=headers)
    assert response.status == status and conforms("submitRequest", response)["detail"]


async def test_public_model_takes_requests_without_a_key_by_default() -> None:
    server = manual()
    answer = await server.request("POST", SUBMIT, json=SEED_INPUT)
    assert answer.status == 200
    rid = answer.json_body()["request_id"]
    server.clock.advance(600)
    for method, suffix in (("GET", "/status"), ("GET", "")):
        assert (await server.request(method, path(rid, suffix))).status == 200
    # A key that is sent is still checked.
    strict = manual(api_keys=["good"])
    bad = {"Authorization": "Key bad"}
    assert (await strict.request("POST", SUBMIT, json=SEED_INPUT, headers=bad)).status == 401
    assert (await strict.request("POST", SUBMIT, json=SEED_INPUT)).status == 200


async def test_configured_keys_refuse_others() -> None:
    server = manual(api_keys=["good"])
    response = await server.request("POST", SUBMIT, json=SEED_INPUT, headers={"Authorization": "Key bad"})
    assert response.status == 401
    ok = await server.request("POST", SUBMIT, json=SEED_INPUT, headers={"Authorization": "Key good"})
    assert ok.status == 200


async def test_unknown_ids_paths_and_huge_bodies() -> None:
    server = manual()
    for response in (await status(server, "nope"), await result(server, "nope")):
        assert response.status == 404 and response.json_body() == {"detail": "Request not found"}
    other = await server.request("POST", "/fal-ai/other-model", json=SEED_INPUT, headers=AUTH)
    assert other.status == 404 and other.json_body() == {"detail": "Not Found"}
    huge = await server.request("POST", SUBMIT, body=b"x" * (10 * 1024 * 1024 + 1), headers=AUTH)
    assert huge.status == 413 and "detail" in huge.json_body()
    assert server.errors == []


async def test_task_fail_ends_completed_with_the_model_error_at_result() -> None:
    server = manual()
    rid = (await submit(server, X_Mock_Fault="task_fail"))["request_id"]
    server.clock.advance(600)
    final = await status(server, rid)
    assert final.status == 200 and final.json_body()["status"] == "COMPLETED"
    done = await result(server, rid)
    assert done.status == 422 and conforms("getRequestResult", done)["detail"][0]["loc"] == ["body"]


async def test_never_finish_keeps_a_runner_busy() -> None:
    server = manual(options={"runners": "1"})
    stuck = (await submit(server, X_Mock_Fault="never_finish"))["request_id"]
    behind = (await submit(server))["request_id"]
    server.clock.advance(3000)
    assert (await status(server, stuck)).json_body()["status"] == "IN_PROGRESS"
    body = (await status(server, behind)).json_body()
    assert (body["status"], body["queue_position"]) == ("IN_QUEUE", 0)


async def test_a_forgotten_never_finishing_request_frees_its_runner() -> None:
    server = manual(options={"runners": "1"})
    stuck = (await submit(server, X_Mock_Fault="never_finish"))["request_id"]
    behind = (await submit(server))["request_id"]
    server.clock.advance(3700)  # past the retention: the store forgets the stuck request
    await submit(server)
    assert (await status(server, stuck)).status == 404
    server.clock.advance(0.5)
    assert (await status(server, behind)).json_body()["status"] == "IN_PROGRESS"


async def test_admin_lists_requests_with_their_queue_data() -> None:
    server = manual(options={"runners": "1"})
    ids = [(await submit(server, {"prompt": f"p{i}", "image_size": "square"}))["request_id"]
           for i in range(2)]
    listing = (await server.request("GET", "/__mock/tasks")).json_body()
    tasks = listing["tasks"] if isinstance(listing, dict) else listing
    by_id = {t["id"]: t for t in tasks}
    assert set(by_id) == set(ids)
    first, second = by_id[ids[0]]["data"], by_id[ids[1]]["data"]
    assert first["kind"] == "queue" and first["size"] == "512x512" and first["prompt"] == "p0"
    assert second["queue_wait"] > first["queue_wait"] + first["run_seconds"] - 1.0
    # A never-finishing request and a webhook with a secret still list as strict JSON.
    await submit(server, query={"fal_webhook": "http://127.0.0.1:9/hook?token=s3cret"},
                 X_Mock_Fault="never_finish")
    raw = (await server.request("GET", "/__mock/tasks")).body
    assert isinstance(raw, bytes) and b"s3cret" not in raw

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    listed = json.loads(raw, parse_constant=refuse)
    stuck = [t for t in (listed["tasks"] if isinstance(listed, dict) else listed) if t["id"] not in ids]
    assert stuck[0]["data"]["run_seconds"] is None and stuck[0]["data"]["webhook_sent"] is False


async def test_start_timeout_header_ends_a_waiting_request_with_request_timeout() -> None:
    server = manual(options={"runners": "1"})
    await submit(server, X_Mock_Fault="never_finish")
    rid = (await submit(server, x_fal_request_timeout="5"))["request_id"]
    server.clock.advance(4)
    assert (await status(server, rid)).json_body()["status"] == "IN_QUEUE"
    server.clock.advance(2)
    body = (await status(server, rid)).json_body()
    assert (body["status"], body["error_type"]) == ("COMPLETED", "request_timeout")
    done = await result(server, rid)
    assert done.status == 504 and done.headers["X-Fal-Error-Type"] == "request_timeout"
    assert conforms("getRequestResult", done)["error_type"] == "request_timeout"


async def test_expired_url_fault_gives_refused_links() -> None:
    server = manual()
    rid = (await submit(server))["request_id"]
    server.clock.advance(600)
    done = await server.request("GET", path(rid), headers={**AUTH, "X-Mock-Fault": "expired_url"})
    image = await server.request("GET", done.json_body()["images"][0]["url"].removeprefix("http://127.0.0.1"))
    assert image.status == 403


async def test_results_expire_after_retention() -> None:
    server = manual()
    small = (await submit(server, {"prompt": "p", "image_size": "square"}))["request_id"]
    large = (await submit(server, {"prompt": "p", "image_size": "square", "sync_mode": True}))["request_id"]
    server.clock.advance(600)  # both finished minutes ago: past 6 min for the large one
    assert (await result(server, small)).status == 200
    assert (await result(server, large)).status == 404  # [V] >= 10 KB: kept 6 min only
    server.clock.advance(3600)
    assert (await result(server, small)).status == 404
    assert (await status(server, small)).status == 404


# --- webhooks -----------------------------------------------------------------------------


async def _advance_until(server: MockServer, done: Any, step: float = 1.0, limit: int = 400) -> None:
    for _ in range(limit):
        if done():
            return
        server.clock.advance(step)
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_webhook_posts_the_output_when_the_request_ends(receiver: Any) -> None:
    url, got, _ = receiver.url, receiver.queue, receiver.statuses
    server = manual()
    try:
        body = await submit(server, query={"fal_webhook": url})
        rid = body["request_id"]
        assert body["gateway_request_id"] == rid
        await asyncio.sleep(0.05)
        assert got.empty()  # nothing before the request ends
        await _advance_until(server, lambda: not got.empty(), step=0.5)
        task = server.tasks.get(rid)
        assert task is not None and task.finished_at(server.clock.now()) is not None
        payload = got.get_nowait()
        assert (payload["request_id"], payload["status"], payload["error"]) == (rid, "OK", None)
        assert payload["payload"]["images"][0]["url"].startswith("http://127.0.0.1/files/")
    finally:
        await server.aclose()


async def test_webhook_error_payload_duplicate_and_late(receiver: Any) -> None:
    url, got, _ = receiver.url, receiver.queue, receiver.statuses
    server = manual()
    try:
        rid = (await submit(server, {"prompt": "p", "num_images": 7}, query={"fal_webhook": url},
                            X_Mock_Fault="duplicate_webhook,late_webhook:100"))["request_id"]
        server.clock.advance(60)
        await asyncio.sleep(0.05)
        assert got.empty()  # ended, but the late fault holds it back 100 s
        await _advance_until(server, lambda: got.qsize() == 2, step=10)
        first, second = got.get_nowait(), got.get_nowait()
        assert first == second
        assert (first["request_id"], first["status"]) == (rid, "ERROR")
        assert first["error"] == "Invalid status code: 422"
        assert first["payload"]["detail"][0]["loc"] == ["body", "num_images"]
    finally:
        await server.aclose()


async def test_webhook_is_retried_with_a_bound(receiver: Any) -> None:
    url, got, fail = receiver.url, receiver.queue, receiver.statuses
    server = manual()
    fail.extend([500] * 20)
    try:
        rid = (await submit(server, query={"fal_webhook": url}))["request_id"]
        await _advance_until(
            server, lambda: any(d.status == "failed" for d in server.deliveries.records()), step=300
        )
        [record] = server.deliveries.records()
        assert record.reference == rid and record.attempts == 10 and got.qsize() == 10
    finally:
        await server.aclose()


async def test_cancel_sends_the_webhook_at_once_and_outside_hosts_are_refused(receiver: Any) -> None:
    url, got, _ = receiver.url, receiver.queue, receiver.statuses
    server = manual()
    try:
        rid = (await submit(server, query={"fal_webhook": url}))["request_id"]
        await server.request("PUT", path(rid, "/cancel"), headers=AUTH)
        payload = await asyncio.wait_for(got.get(), 5)
        assert (payload["status"], payload["error"]) == ("ERROR", "Invalid status code: 499")
        assert payload["payload"] == {"detail": "Request cancelled by the client."}
        await submit(server, query={"fal_webhook": "https://example.com/hook"})
        server.clock.advance(600)
        await asyncio.sleep(0.05)
        refused = [d for d in server.deliveries.records() if d.status == "refused"]
        assert len(refused) == 1 and "example.com" in (refused[0].reason or "")
    finally:
        await server.aclose()


async def test_polls_lifecycle_sends_the_webhook_on_the_completing_poll(receiver: Any) -> None:
    url, got, _ = receiver.url, receiver.queue, receiver.statuses
    server = MockServer("fal", clock="manual", seed=1, lifecycle="polls")
    try:
        rid = (await submit(server, query={"fal_webhook": url}))["request_id"]
        states = [(await status(server, rid)).json_body()["status"] for _ in range(5)]
        assert states[-1] == "COMPLETED"
        payload = await asyncio.wait_for(got.get(), 5)
        assert payload["status"] == "OK"
    finally:
        await server.aclose()


# --- the official fal-client, in process through respx ------------------------------------


def test_fal_client_subscribe_through_respx_under_the_real_hosts() -> None:
    import fal_client

    # fal-client keeps its real hosts in this process (the env override is for subprocesses).
    assert fal_client.client.QUEUE_URL_FORMAT == "https://queue.fal.run/"
    server = MockServer("fal", time_scale=100, seed=5)
    client = fal_client.SyncClient(key="test-key")
    updates: list[Any] = []
    with mock_router(server):
        out = client.subscribe("fal-ai/flux-1/dev", arguments={"prompt": "respx", "image_size": "square"},
                               with_logs=True, on_queue_update=updates.append, interval=0.02)
        image = httpx.get(out["images"][0]["url"])
        sync = client.run("fal-ai/flux-1/dev", arguments={"prompt": "sync", "image_size": "square"})
    assert out["images"][0]["url"].startswith("https://queue.fal.run/files/")
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (512, 512)
    assert isinstance(updates[-1], fal_client.Completed) and updates[-1].logs
    assert sync["prompt"] == "sync"
    hosts = {(e.role, e.operation) for e in server.journal.entries()}
    assert ("queue", "submitRequest") in hosts and ("queue", "getRequestResult") in hosts
    assert ("run", "runSync") in hosts
    assert server.errors == []


async def test_fal_client_async_subscribe_through_respx() -> None:
    import fal_client

    server = MockServer("fal", time_scale=100, seed=6)
    client = fal_client.AsyncClient(key="test-key")
    with mock_router(server):
        out = await client.subscribe("fal-ai/flux-1/dev", arguments={"prompt": "async"}, interval=0.02)
    assert out["prompt"] == "async" and len(out["images"]) == 1
    assert not math.isnan(out["timings"]["inference"])


def test_fal_client_traffic_passes_the_harness_schema_and_rules() -> None:
    import fal_client

    from imagegen_conformance import harness
    # fal-client sleeps in real seconds: the mock runs in real time, so its polls are judged at
    # the gaps it really left (a loaded machine only makes them longer), and each request
    # moves one step per poll, so how far it got never depends on how fast the machine is.
    server = MockServer("fal", time_scale=1, lifecycle="polls", seed=8)
    client = fal_client.SyncClient(key="test-key")
    with mock_router(server):
        client.subscribe("fal-ai/flux-1/dev", arguments={"prompt": "judged", "num_images": 2},
                         with_logs=True, on_queue_update=lambda _: None)
        handle = client.submit("fal-ai/flux-1/dev", arguments={"prompt": "bad", "num_images": 9})
        with pytest.raises(fal_client.FalClientHTTPError):
            handle.get()
    contract = contracts.load("fal")
    exchanges = server.journal.entries()
    assert {e.operation for e in exchanges} >= {"submitRequest", "getRequestStatus", "getRequestResult"}
    # The only schema deviation is the client's own bad input; the mock's answers all conform.
    [deviation] = harness.validate_all(contract, exchanges)
    assert (deviation.rule, deviation.side, deviation.path) == (
        "schema.request", harness.Side.CLIENT, "request.body$.num_images"
    )
    assert harness.check_rules(harness.RuleContext(contract, exchanges)) == []


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_FIELDS = ["prompt", "image_size", "num_inference_steps", "guidance_scale", "num_images", "seed",
           "enable_safety_checker", "output_format", "acceleration", "sync_mode"]


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=6) | _JSON)
async def test_any_json_body_gets_a_fal_answer_and_never_crashes(body: Any) -> None:
    server = MockServer("fal", clock="manual", seed=3)
    response = await server.request("POST", SUBMIT, json=body, headers=AUTH)
    assert response.status == 200
    rid = response.json_body()["request_id"]
    done = await finish(server, rid)
    assert done.status in (200, 422)
    conforms("getRequestResult", done)
    if done.status == 422:  # the sync host rejects the same input at once, identically
        sync = await server.request("POST", SUBMIT, json=body, headers=AUTH, role="run")
        assert sync.status == 422 and sync.json_body() == done.json_body()
    assert server.errors == []


async def test_whole_float_image_size_is_an_integer_size_and_its_image_renders() -> None:
    # Regression (schemathesis): {"width": 1.0, "height": 156.0} crashed the image download.
    server = manual()
    body = {"prompt": "x", "image_size": {"width": 1.0, "height": 156.0}}
    rid = (await submit(server, body))["request_id"]
    done = await finish(server, rid)
    image = conforms("getRequestResult", done)["images"][0]
    assert (image["width"], image["height"]) == (1, 156)
    assert isinstance(image["width"], int)
    link = image["url"][image["url"].index("/files/"):]
    picture = await server.request("GET", link)
    assert picture.status == 200
    assert Image.open(io.BytesIO(picture.body)).size == (1, 156)
    assert server.errors == []


@pytest.mark.parametrize("value", ["WviHegJcX Ox:b/T9%/]tfX.i8", "d7bA", "", "nan", "inf", "-1e308", "-5"])
async def test_garbage_request_timeout_header_is_no_timeout(value: str) -> None:
    # Regression (schemathesis): a garbage or negative x-fal-request-timeout never crashes, and
    # the request runs to its output as if the header were absent.
    server = manual()
    rid = (await submit(server, x_fal_request_timeout=value))["request_id"]
    done = await finish(server, rid)
    assert done.status == 200, done.body
    conforms("getRequestResult", done)
    assert server.errors == []


async def test_the_stream_schema_takes_one_payload_or_one_parsed_sse_event() -> None:
    # Regression (schemathesis ST108): Schemathesis validates {event, data} per SSE event, the
    # harness validates the data's JSON; the one schema serves both.
    from imagegen_conformance.harness.rules._validate import body_validator

    validator = body_validator("fal", "streamRequestStatus", 200, "text/event-stream")
    assert validator is not None
    server = manual()
    payload = await submit(server)
    assert validator.issues(payload) == []
    assert validator.issues({"event": "message", "data": json.dumps(payload)}) == []
    assert validator.issues({**payload, "status": "FAILED"}) != []
    assert validator.issues({"event": "queue", "data": json.dumps(payload)}) != []
    assert validator.issues({"event": "message", "data": payload}) != []
    schemas = contracts.load("fal").openapi["components"]["schemas"]
    data = schemas["QueueStatusEvent"]["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    assert data["contentSchema"] == {"$ref": "#/components/schemas/QueueStatus"}


# --- fal.run/<app>/stream and the webhook keys ---------------------------------------------


async def _stream_events(server: MockServer, body: dict[str, Any]) -> list[Any]:
    response = await server.request("POST", SUBMIT + "/stream", json=body, headers=AUTH, role="run")
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    assert not isinstance(response.body, bytes)
    events = []
    validator = contracts.response_validator("fal", "streamRun", 200)
    assert validator is not None
    async for chunk in response.body:
        if chunk.startswith(b"data: "):
            events.append(json.loads(chunk[6:]))
            assert validator.issues(events[-1]) == []
    return events


@pytest.mark.parametrize(
    ("option", "partial_keys"),
    [pytest.param("previews", {"images", "timings", "seed", "has_nsfw_concepts", "prompt"}, id="previews"),
     pytest.param("progress", {"progress", "message"}, id="progress")],
)
async def test_stream_route_sends_partials_then_the_output(option: str, partial_keys: set[str]) -> None:
    server = MockServer("fal", clock="manual", seed=1, lifecycle="polls", options={"stream_events": option})
    *partials, final = await _stream_events(server, {"prompt": "partial", "num_images": 2})
    assert len(partials) == 3 and all(set(p) == partial_keys for p in partials)
    assert final["prompt"] == "partial" and len(final["images"]) == 2
    assert final["images"][0]["url"].startswith("http://127.0.0.1/files/")


async def test_stream_route_refuses_bad_input_at_once_and_streams_a_failure_body() -> None:
    server = MockServer("fal", clock="manual", seed=1, lifecycle="polls")
    bad = await server.request("POST", SUBMIT + "/stream", json={"num_images": 9}, headers=AUTH, role="run")
    assert bad.status == 422 and conforms("streamRun", bad)["detail"][0]["type"] == "missing"
    response = await server.request("POST", SUBMIT + "/stream", json={"prompt": "x"},
                                    headers={**AUTH, "X-Mock-Fault": "task_fail"}, role="run")
    assert not isinstance(response.body, bytes)
    chunks = [chunk async for chunk in response.body]
    assert json.loads(chunks[-1][6:])["detail"][0]["type"] == "runtime_error"


@pytest.mark.parametrize(("option", "padded"), [("padded", True), ("unpadded", False)])
async def test_jwks_publishes_the_webhook_key(option: str, padded: bool) -> None:
    server = manual(options={"jwks_x": option}, signing_secret="s")
    response = await server.request("GET", "/.well-known/jwks.json")  # no key needed
    [key] = conforms("getWebhookJwks", response)["keys"]
    assert key["x"].endswith("=") is padded
    raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
    assert raw == server.provider.webhook_signer.public_bytes  # type: ignore[attr-defined]
    twin = manual(options={"jwks_x": option}, signing_secret="s")
    again = await twin.request("GET", "/.well-known/jwks.json")
    assert again.json_body() == response.json_body()  # --signing-secret repeats the key
    other = await manual(options={"jwks_x": option}).request("GET", "/.well-known/jwks.json")
    assert other.json_body() != response.json_body()  # never derived from --seed
