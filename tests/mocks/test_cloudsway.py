"""Cloudsway MaaS-Flux-1-schnell mock, in process: validation, lifecycle, clocks, faults, admin."""

from __future__ import annotations

import asyncio
import gc
import io
import json
from typing import Any

import pytest
from PIL import Image

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import MockResponse

AUTH = {"Authorization": "Bearer test-key"}
CREATE = "/v2/ai/lXynAhfbAiD/images/generations"
SEED_BODY = {
    "prompts": "A fruit basket containing dragon fruit, mango, guava, apple, and banana.",
    "aspect_ratio": "2:3",
    "batchsize": "2",
    "step": 10,
}


def query_path(task_id: str, endpoint: str = "lXynAhfbAiD") -> str:
    return f"/v2/ai/{endpoint}/images/tasks/{task_id}"


def manual(**kwargs: Any) -> MockServer:
    return MockServer("cloudsway", clock="manual", seed=1, **kwargs)


async def create(server: MockServer, body: dict[str, Any] | None = None, **headers: str) -> str:
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    response = await server.request("POST", CREATE, json=body or SEED_BODY, headers={**AUTH, **extra})
    assert response.status == 200, response.body
    task_id: str = response.json_body()["taskId"]
    return task_id


async def poll(server: MockServer, task_id: str) -> MockResponse:
    return await server.request("GET", query_path(task_id), headers=AUTH)


def assert_envelope(response: MockResponse, status: int) -> dict[str, Any]:
    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    validator = contracts.response_validator("cloudsway", "createImageTask", status)
    assert validator is not None
    body = response.json_body()
    assert validator.issues(body) == []
    return body["error"]  # type: ignore[no-any-return]


async def test_create_answers_the_seed_body() -> None:
    server = manual()
    response = await server.request("POST", CREATE, json=SEED_BODY, headers=AUTH)
    body = response.json_body()
    assert response.status == 200
    assert body["status"] == "success"
    assert set(body) == {"status", "taskId"}
    assert len(body["taskId"]) == 36 and body["taskId"].count("-") == 4


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("/v2/ai", id="seed-curl"),
        pytest.param("/v2/ai/v2/ai", id="template-doubles-v2-ai"),
    ],
)
async def test_documented_prefixes_reach_the_endpoint(prefix: str) -> None:
    server = manual()
    response = await server.request(
        "POST", f"{prefix}/ep1/images/generations", json={"prompts": "x"}, headers=AUTH
    )
    assert response.status == 200
    task_id = response.json_body()["taskId"]
    got = await server.request("GET", f"{prefix}/ep1/images/tasks/{task_id}", headers=AUTH)
    assert got.status == 200


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("", id="no-prefix"),
        pytest.param("/foo/bar", id="made-up"),
        pytest.param("/v1/ai", id="basepath-text-v1-ai"),
        pytest.param("/v2", id="endpoint-missing"),
    ],
)
async def test_other_prefixes_are_a_400_no_endpoint(prefix: str) -> None:
    server = manual()
    task_id = await create(server)
    created = await server.request(
        "POST", f"{prefix}/ep1/images/generations", json={"prompts": "x"}, headers=AUTH
    )
    polled = await server.request("GET", f"{prefix}/ep1/images/tasks/{task_id}", headers=AUTH)
    for response in (created, polled):
        error = assert_envelope(response, 400)
        assert error["code"] == "NO_ENDPOINT"
        assert "/v2/ai/{endpointPath}/images/" in error["message"]


async def test_prefixes_any_option_routes_on_the_suffix() -> None:
    server = manual(options={"prefixes": "any"})
    response = await server.request(
        "POST", "/foo/bar/ep1/images/generations", json={"prompts": "x"}, headers=AUTH
    )
    assert response.status == 200


async def test_lifecycle_pending_processing_completed_under_a_manual_clock() -> None:
    server = manual()
    task_id = await create(server)
    task = server.tasks.get(task_id)
    assert task is not None
    pending, processing = task.durations
    seen = [(await poll(server, task_id)).json_body()]
    server.clock.advance(pending + 0.001)
    seen.append((await poll(server, task_id)).json_body())
    server.clock.advance(processing)
    seen.append((await poll(server, task_id)).json_body())
    assert [(b["status"], b["completed"], len(b["imageUrls"])) for b in seen] == [
        ("pending", False, 0),
        ("processing", False, 0),
        ("completed", True, 2),
    ]
    validator = contracts.response_validator("cloudsway", "getImageTask", 200)
    assert validator is not None
    assert all(validator.issues(b) == [] for b in seen)


async def test_poll_driven_lifecycle_needs_no_clock() -> None:
    server = manual(lifecycle="polls")
    task_id = await create(server)
    states = [(await poll(server, task_id)).json_body()["status"] for _ in range(4)]
    assert states == ["processing", "processing", "completed", "completed"]


async def test_scaled_clock_finishes_a_task_in_a_fraction_of_its_provider_time() -> None:
    server = MockServer("cloudsway", clock="scaled", time_scale=200, seed=1)
    task_id = await create(server)
    task = server.tasks.get(task_id)
    assert task is not None
    await asyncio.sleep(sum(task.durations) / 200 + 0.05)
    assert (await poll(server, task_id)).json_body()["status"] == "completed"


async def test_completed_images_download_at_the_requested_size() -> None:
    server = manual()
    task_id = await create(server)
    server.clock.advance(60)
    urls = (await poll(server, task_id)).json_body()["imageUrls"]
    assert len(urls) == 2 and len(set(urls)) == 2
    for url in urls:
        assert url.startswith("http://127.0.0.1/images/") and url.endswith(".png")
        image = await server.request("GET", url.removeprefix("http://127.0.0.1"))
        assert image.status == 200 and image.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(image.body)).size == (512, 768)


SIZES = {
    "1:1": (1024, 1024), "2:3": (512, 768), "3:2": (768, 512), "3:4": (768, 1024),
    "4:3": (1024, 768), "16:9": (1280, 720), "9:16": (720, 1280),
}


@pytest.mark.parametrize(("ratio", "size"), SIZES.items(), ids=SIZES)
async def test_pixel_size_of_every_aspect_ratio(ratio: str, size: tuple[int, int]) -> None:
    server = manual()
    task_id = await create(server, {"prompts": "x", "aspect_ratio": ratio})
    server.clock.advance(60)
    (url,) = (await poll(server, task_id)).json_body()["imageUrls"]
    image = await server.request("GET", url.removeprefix("http://127.0.0.1"))
    assert Image.open(io.BytesIO(image.body)).size == size


async def test_english_page_9_16_size_is_selectable() -> None:
    server = manual(options={"ratio_9_16": "720x1080"})
    task_id = await create(server, {"prompts": "x", "aspect_ratio": "9:16"})
    server.clock.advance(60)
    (url,) = (await poll(server, task_id)).json_body()["imageUrls"]
    image = await server.request("GET", url.removeprefix("http://127.0.0.1"))
    assert Image.open(io.BytesIO(image.body)).size == (720, 1080)


def test_unknown_option_value_lists_valid_values() -> None:
    with pytest.raises(ValueError, match="valid values are 720x1280, 720x1080"):
        manual(options={"ratio_9_16": "1x1"})


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param({}, "prompts is required", id="prompts-missing"),
        pytest.param({"prompts": ""}, "prompts is required", id="prompts-empty"),
        pytest.param({"prompts": 5}, "prompts is required", id="prompts-not-string"),
        pytest.param({"prompts": "x", "batchsize": 0}, "batchsize must be", id="batchsize-0"),
        pytest.param({"prompts": "x", "batchsize": 9}, "batchsize must be", id="batchsize-9"),
        pytest.param({"prompts": "x", "batchsize": "9"}, "batchsize must be", id="batchsize-string-9"),
        pytest.param({"prompts": "x", "batchsize": "two"}, "batchsize must be", id="batchsize-word"),
        pytest.param({"prompts": "x", "batchsize": 1.5}, "batchsize must be", id="batchsize-float"),
        pytest.param({"prompts": "x", "aspect_ratio": "5:4"}, "aspect_ratio must be", id="ratio"),
        pytest.param({"prompts": "x", "step": 3}, "step must be", id="step-3"),
        pytest.param({"prompts": "x", "step": 11}, "step must be", id="step-11"),
        pytest.param({"prompts": "x", "step": "4"}, "step must be", id="step-string"),
        pytest.param({"prompts": "x", "seed": "zero"}, "seed must be", id="seed-string"),
    ],
)
async def test_every_validation_rule_gets_a_400(body: dict[str, Any], fragment: str) -> None:
    server = manual()
    response = await server.request("POST", CREATE, json=body, headers=AUTH)
    error = assert_envelope(response, 400)
    assert fragment in error["message"]
    assert len(server.tasks) == 0


async def test_invalid_aspect_ratio_uses_the_size_error_code() -> None:
    response = await manual().request("POST", CREATE, json={"prompts": "x", "aspect_ratio": "1:2"},
                                      headers=AUTH)
    assert assert_envelope(response, 400)["code"] == "AI_IMAGE_SIZE_ERROR"


@pytest.mark.parametrize("batchsize", [1, 8, "1", "8"])
async def test_batchsize_bounds_accept_numbers_and_numeric_strings(batchsize: int | str) -> None:
    server = manual()
    task_id = await create(server, {"prompts": "x", "batchsize": batchsize})
    server.clock.advance(60)
    assert len((await poll(server, task_id)).json_body()["imageUrls"]) == int(batchsize)


async def test_english_capitalised_step_is_read_and_step_can_be_required() -> None:
    server = manual()
    task_id = await create(server, {"prompts": "x", "Step": 6})
    task = server.tasks.get(task_id)
    assert task is not None and task.data["step"] == 6
    strict = manual(options={"step_required": "true"})
    response = await strict.request("POST", CREATE, json={"prompts": "x"}, headers=AUTH)
    assert "step is required" in assert_envelope(response, 400)["message"]


@pytest.mark.parametrize(
    "body",
    [pytest.param(b"{not json", id="malformed"), pytest.param(b"", id="empty"),
     pytest.param(b"[1, 2]", id="array"), pytest.param(b"\xff\xfe", id="not-utf8")],
)
async def test_bad_bodies_get_a_400_in_the_envelope(body: bytes) -> None:
    server = manual()
    response = await server.request("POST", CREATE, body=body,
                                    headers={**AUTH, "Content-Type": "application/json"})
    assert assert_envelope(response, 400)["code"] == "Bad Request"


async def test_huge_body_is_refused_in_the_envelope() -> None:
    server = manual()
    body = json.dumps({"prompts": "x" * (server.max_body + 10)}).encode()
    response = await server.request("POST", CREATE, body=body, headers=AUTH)
    assert_envelope(response, 413)


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        pytest.param({}, "missing", id="missing"),
        pytest.param({"Authorization": "Basic abc"}, "Bearer scheme", id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer "}, "Bearer scheme", id="empty-key"),
        pytest.param({"Authorization": "Bearer wrong"}, "invalid", id="unknown-key"),
    ],
)
async def test_auth_failures_answer_401(headers: dict[str, str], fragment: str) -> None:
    server = manual(api_keys=["right"])
    response = await server.request("POST", CREATE, json={"prompts": "x"}, headers=headers)
    assert fragment in assert_envelope(response, 401)["message"]
    ok = await server.request("POST", CREATE, json={"prompts": "x"},
                              headers={"Authorization": "Bearer right"})
    assert ok.status == 200


async def test_any_well_formed_key_is_accepted_without_configured_keys() -> None:
    response = await manual().request("POST", CREATE, json={"prompts": "x"},
                                      headers={"Authorization": "Bearer anything"})
    assert response.status == 200


async def test_unknown_task_gets_404() -> None:
    server = manual()
    assert_envelope(await poll(server, "3374b3b0-d069-4831-a76b-ebab4df14457"), 404)


async def test_task_is_found_whatever_endpoint_path_the_query_uses() -> None:
    # The seed queries with lXynAhfbOiD a task it created under lXynAhfbAiD.
    server = manual()
    task_id = await create(server)
    other = await server.request("GET", query_path(task_id, endpoint="lXynAhfbOiD"), headers=AUTH)
    assert other.status == 200


async def test_unknown_path_and_wrong_method_get_404() -> None:
    server = manual()
    assert_envelope(await server.request("GET", "/v2/ai/x/nothing", headers=AUTH), 404)
    assert_envelope(await server.request("DELETE", CREATE, headers=AUTH), 404)


async def test_openai_error_shape_is_selectable() -> None:
    server = manual(options={"error_shape": "openai"})
    response = await server.request("POST", CREATE, json={}, headers=AUTH)
    error = assert_envelope(response, 400)
    assert error["type"] == "invalid_request_error"


async def test_tasks_expire_after_retention() -> None:
    server = manual()
    task_id = await create(server)
    server.clock.advance(86_400 + 60)
    assert_envelope(await poll(server, task_id), 404)


# --- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 429, 500, 503, 504])
async def test_http_fault_answers_every_documented_status_in_the_envelope(status: int) -> None:
    server = manual()
    response = await server.request("POST", CREATE, json=SEED_BODY,
                                    headers={**AUTH, "X-Mock-Fault": f"http:{status}"})
    error = assert_envelope(response, status)
    assert error["code"] == contracts.load("cloudsway").behaviour.errors[status].code
    assert len(server.tasks) == 0


async def test_http_fault_can_name_the_provider_code() -> None:
    server = manual()
    response = await server.request("POST", CREATE, json=SEED_BODY,
                                    headers={**AUTH, "X-Mock-Fault": "http:400:NO_PASSAGEWAY"})
    assert assert_envelope(response, 400)["code"] == "NO_PASSAGEWAY"


async def test_rate_limit_fault_sets_retry_after() -> None:
    server = manual()
    response = await server.request("POST", CREATE, json=SEED_BODY,
                                    headers={**AUTH, "X-Mock-Fault": "rate_limit:2.5"})
    assert_envelope(response, 429)
    assert response.headers["Retry-After"] == "3"


async def test_configured_rate_limit_answers_429_until_tokens_refill() -> None:
    server = manual(rate_limit="2/10")
    for _ in range(2):
        assert (await server.request("POST", CREATE, json=SEED_BODY, headers=AUTH)).status == 200
    limited = await server.request("POST", CREATE, json=SEED_BODY, headers=AUTH)
    assert_envelope(limited, 429)
    assert limited.headers["Retry-After"] == "5"
    server.clock.advance(5)
    assert (await server.request("POST", CREATE, json=SEED_BODY, headers=AUTH)).status == 200


async def test_latency_fault_delays_the_answer() -> None:
    server = manual()
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await server.request("POST", CREATE, json=SEED_BODY,
                                    headers={**AUTH, "X-Mock-Fault": "latency:150"})
    assert response.status == 200
    assert loop.time() - started >= 0.14


async def test_reset_fault_drops_the_connection() -> None:
    response = await manual().request("POST", CREATE, json=SEED_BODY,
                                      headers={**AUTH, "X-Mock-Fault": "reset"})
    assert response.action == "reset"


async def test_malformed_fault_answers_broken_json() -> None:
    response = await manual().request("POST", CREATE, json=SEED_BODY,
                                      headers={**AUTH, "X-Mock-Fault": "malformed"})
    assert response.status == 200
    with pytest.raises(json.JSONDecodeError):
        response.json_body()


async def test_task_fail_fault_ends_the_task_failed() -> None:
    server = manual()
    task_id = await create(server, X_Mock_Fault="task_fail")
    server.clock.advance(60)
    body = (await poll(server, task_id)).json_body()
    assert body == {"status": "failed", "completed": False, "imageUrls": [],
                    "message": "Image generation failed."}


async def test_never_finish_fault_keeps_the_task_processing() -> None:
    server = manual()
    task_id = await create(server, X_Mock_Fault="never_finish")
    server.clock.advance(10_000)
    body = (await poll(server, task_id)).json_body()
    assert (body["status"], body["completed"]) == ("processing", False)


async def test_expired_url_fault_gives_links_that_are_refused() -> None:
    server = manual()
    task_id = await create(server, X_Mock_Fault="expired_url")
    server.clock.advance(60)
    (u1, _u2) = (await poll(server, task_id)).json_body()["imageUrls"]
    image = await server.request("GET", u1.removeprefix("http://127.0.0.1"))
    assert image.status == 403


async def test_forged_image_link_is_refused() -> None:
    response = await manual().request("GET", "/images/WzEsMV0.AAAAAAAAAAAAAAAAAAAAAA.png")
    assert response.status == 404


async def test_run_fault_with_operation_and_times_fires_only_there() -> None:
    server = manual(faults=["http:503;op=getImageTask;times=2"])
    task_id = await create(server)
    statuses = [(await poll(server, task_id)).status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [e.faults for e in server.journal.entries()][-3:] == [
        ["http:503;op=getImageTask;times=2"], ["http:503;op=getImageTask;times=2"], []
    ]


async def test_bad_fault_header_is_a_clear_mock_error() -> None:
    response = await manual().request("POST", CREATE, json=SEED_BODY,
                                      headers={**AUTH, "X-Mock-Fault": "explode"})
    assert response.status == 400
    assert "unknown fault 'explode'" in response.json_body()["mock_error"]


async def test_scenario_header_applies_the_scenarios_faults() -> None:
    server = manual()
    task_id = await create(server, X_Mock_Scenario="task-fails")
    server.clock.advance(60)
    assert (await poll(server, task_id)).json_body()["status"] == "failed"


# --- admin API -------------------------------------------------------------------------


async def test_admin_api_reset_journal_faults_clock_tasks() -> None:
    server = manual()
    task_id = await create(server)
    journal = (await server.request("GET", "/__mock/journal")).json_body()
    assert [e["operation"] for e in journal["exchanges"]] == ["createImageTask"]
    assert journal["exchanges"][0]["request_headers"]["Authorization"] == "Bearer <redacted>"

    tasks = (await server.request("GET", "/__mock/tasks")).json_body()["tasks"]
    assert [(t["id"], t["state"]) for t in tasks] == [(task_id, "pending")]

    advanced = await server.request("POST", "/__mock/clock/advance", json={"seconds": 60})
    assert advanced.status == 200
    one = (await server.request("GET", f"/__mock/tasks/{task_id}")).json_body()
    assert (one["state"], one["terminal"]) == ("completed", True)

    added = await server.request("POST", "/__mock/faults", json={"spec": "http:500;times=1"})
    assert added.status == 201
    assert (await poll(server, task_id)).status == 500
    assert (await poll(server, task_id)).status == 200

    assert (await server.request("POST", "/__mock/reset")).status == 200
    assert (await server.request("GET", "/__mock/tasks")).json_body() == {"tasks": []}
    assert (await server.request("GET", "/__mock/journal")).json_body()["exchanges"] == []


async def test_admin_api_errors_are_explicit() -> None:
    server = manual()
    assert (await server.request("GET", "/__mock/tasks/nope")).status == 404
    assert (await server.request("POST", "/__mock/clock/advance", json={"seconds": -1})).status == 400
    bad = await server.request("POST", "/__mock/faults", json={"spec": "nope"})
    assert bad.status == 400 and "Valid faults" in bad.json_body()["error"]
    scaled = MockServer("cloudsway", clock="scaled", time_scale=5)
    refused = await scaled.request("POST", "/__mock/clock/advance", json={"seconds": 1})
    assert refused.status == 409 and "--clock manual" in refused.json_body()["error"]
    assert (await server.request("GET", "/__mock/nothing")).status == 404


async def test_admin_token_is_required_when_configured() -> None:
    server = manual(admin_token="s3cret")
    assert (await server.request("GET", "/__mock/health")).status == 401
    ok = await server.request("GET", "/__mock/health", headers={"X-Admin-Token": "s3cret"})
    assert ok.status == 200 and ok.json_body()["provider"] == "cloudsway"


async def test_journal_is_bounded() -> None:
    server = MockServer("cloudsway", clock="manual", journal_size=5)
    for _ in range(12):
        await server.request("GET", query_path("x"), headers=AUTH)
    entries = server.journal.entries()
    assert len(entries) == 5 and entries[-1].seq == 12


async def test_a_handler_crash_is_recorded_and_answered_in_the_envelope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = manual()

    async def broken(*_: object) -> MockResponse:
        raise KeyError("boom")

    monkeypatch.setattr(server.provider, "create", broken)
    response = await server.request("POST", CREATE, json=SEED_BODY, headers=AUTH)
    assert_envelope(response, 500)
    assert response.headers["X-Mock-Error"] == "handler-crashed"
    assert "KeyError" in (server.journal.entries()[-1].error or "")
    assert server.errors == [f"POST {CREATE}: KeyError('boom')"]


async def test_ten_thousand_pending_tasks_need_no_coroutine_or_timer() -> None:
    # A slowed clock (1/1000) keeps every task pending while real timers would be visible.
    server = MockServer("cloudsway", clock="scaled", time_scale=0.001, seed=3)
    loop = asyncio.get_running_loop()
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
    ids = [await create(server, {"prompts": f"p{i}"}) for i in range(10_000)]
    assert len(server.tasks) == 10_000
    assert len(asyncio.all_tasks()) == tasks_before
    assert len(loop._scheduled) == timers_before  # type: ignore[attr-defined]
    states = {(await poll(server, i)).json_body()["status"] for i in ids[:50]}
    assert states == {"pending"}


async def test_store_full_of_live_tasks_answers_503_and_keeps_them() -> None:
    server = MockServer("cloudsway", clock="manual", max_tasks=3)
    ids = [await create(server) for _ in range(3)]
    full = await server.request("POST", CREATE, json=SEED_BODY, headers=AUTH)
    assert_envelope(full, 503)
    assert all(server.tasks.get(i) is not None for i in ids)


async def test_rate_limit_counts_api_calls_not_image_downloads() -> None:
    server = manual(rate_limit="2/60")
    task_id = await create(server)
    server.clock.advance(60)
    urls = (await poll(server, task_id)).json_body()["imageUrls"]
    for _ in range(3):
        image = await server.request("GET", urls[0].removeprefix("http://127.0.0.1"))
        assert image.status == 200
    assert (await poll(server, task_id)).status == 200
    assert_envelope(await poll(server, task_id), 429)
