"""AceData Cloud Flux mock, in process: contract, validation, sync and async modes, errors."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import pytest
from acedatacloud import AceDataCloud
from openapi_spec_validator import validate
from PIL import Image

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer, mock_router
from imagegen_conformance.mocks.acedata import AceDataProvider
from imagegen_conformance.mocks.engine import FaultSpec, MockResponse

AUTH = {"Authorization": "Bearer ace-token"}
IMAGES = "/flux/images"
TASKS = "/flux/tasks"
# The seed's curl body, verbatim.
SEED_BODY = {
    "action": "generate",
    "prompt": "a white siamese cat",
    "size": "1024x1024",
    "count": 123,
    "model": "generate",
    "image_url": "<string>",
    "callback_url": "<string>",
}
ERROR_CODES: dict[int, dict[str, str]] = contracts.load("acedata").behaviour.raw["error_codes"]


def manual(**kwargs: Any) -> MockServer:
    return MockServer("acedata", clock="manual", seed=1, **kwargs)


def assert_error(response: MockResponse, status: int, code: str) -> str:
    """Check AceData's error envelope against the contract; return the message."""
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    body = response.json_body()
    validator = contracts.response_validator("acedata", "createFluxImages", status)
    assert validator is not None
    assert validator.issues(body) == []
    assert set(body) == {"success", "error", "trace_id"} and body["success"] is False
    assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    return message


async def submit(server: MockServer, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await server.request("POST", IMAGES, json=body, headers={**AUTH, **headers})
    assert response.status == 200, response.body
    data: dict[str, Any] = response.json_body()
    return data


async def retrieve(server: MockServer, task_id: str, **headers: str) -> dict[str, Any]:
    response = await server.request(
        "POST", TASKS, json={"action": "retrieve", "id": task_id}, headers={**AUTH, **headers}
    )
    assert response.status == 200, response.body
    record: dict[str, Any] = response.json_body()
    validator = contracts.response_validator("acedata", "retrieveFluxTasks", 200)
    assert validator is not None and validator.issues(record) == []
    return record


async def sync_request(server: MockServer, body: dict[str, Any], advance: float = 200,
                       **headers: str) -> MockResponse:
    """Send a sync request, let the manual clock pass ``advance`` seconds, return the answer."""
    pending = asyncio.ensure_future(server.request("POST", IMAGES, json=body, headers={**AUTH, **headers}))
    await asyncio.sleep(0.01)
    assert not pending.done(), "a sync request must wait for the generation time"
    server.clock.advance(advance)
    return await asyncio.wait_for(pending, 5)


def fault(spec: str) -> dict[str, str]:
    return {**AUTH, "X-Mock-Fault": spec}


async def download(server: MockServer, url: str) -> MockResponse:
    path = url.split("127.0.0.1", 1)[1]
    return await server.request("GET", path)


# --- the contract ------------------------------------------------------------------------


def test_openapi_is_valid_and_every_routed_operation_is_in_it() -> None:
    contract = contracts.load("acedata")
    validate(dict(contract.openapi))
    routed = {r.operation for r in AceDataProvider.routes()}
    assert routed == {"createFluxImages", "retrieveFluxTasks"}
    assert routed <= set(contract.operations)
    assert "downloadImage" in contract.operations


def test_contract_loads_with_lifecycle_options_quirks_and_scenarios() -> None:
    contract = contracts.load("acedata")
    lifecycle = contract.behaviour.lifecycle
    assert lifecycle is not None and lifecycle.terminal == ("succeeded", "failed")
    assert lifecycle.is_legal("pending", "failed") and not lifecycle.is_legal("succeeded", "pending")
    assert {"model_generate", "timings", "async_response", "pending_record", "ndjson"} <= set(
        contract.behaviour.options
    )
    quirk_ids = {q.id for q in contract.behaviour.quirks}
    assert set(contract.openapi["x-quirks"]) <= quirk_ids
    for scenario in contract.scenarios:
        for fault in scenario.faults:
            FaultSpec.parse(fault)
        validator = contracts.request_validator("acedata", "createFluxImages")
        assert validator is not None
        # A request the scenario expects to be refused with 400 breaks the schema; others fit it.
        invalid = scenario.expect.error_status == 400
        assert bool(validator.issues(dict(scenario.request))) is invalid, scenario.id


# --- the seed's example ------------------------------------------------------------------


async def test_seed_example_is_async_because_of_its_callback_and_reads_generate_as_flux_dev() -> None:
    server = manual()
    accepted = await submit(server, SEED_BODY)
    assert list(accepted) == ["task_id"]
    # "<string>" is no URL: the callback is refused at once, and said why.
    [delivery] = server.deliveries.records()
    assert delivery.status == "refused" and "http" in (delivery.reason or "")
    record = await retrieve(server, accepted["task_id"])
    assert record["response"] == {"success": True, "task_id": accepted["task_id"]}  # pending
    assert record["request"] == SEED_BODY  # echoed as sent
    server.clock.advance(121)
    record = await retrieve(server, accepted["task_id"])
    response = record["response"]
    assert response["success"] is True and response["task_id"] == accepted["task_id"]
    assert len(response["data"]) == 123
    assert {d["prompt"] for d in response["data"]} == {"a white siamese cat"}
    image = await download(server, response["data"][0]["image_url"])
    assert Image.open(io.BytesIO(bytes(image.body))).size == (1024, 1024)


async def test_model_generate_can_be_rejected_as_the_enum_says() -> None:
    server = manual(options={"model_generate": "reject"})
    response = await server.request("POST", IMAGES, json=SEED_BODY, headers=AUTH)
    assert assert_error(response, 400, "bad_request").startswith("model is invalid.")


# --- validation --------------------------------------------------------------------------

GOOD = {"action": "generate", "prompt": "a cat", "async": True}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param({"action": None}, "action is invalid", id="action-missing"),
        pytest.param({"action": "paint"}, "action is invalid", id="action-unknown"),
        pytest.param({"prompt": None}, "prompt is invalid", id="prompt-missing"),
        pytest.param({"prompt": ""}, "prompt is invalid", id="prompt-empty"),
        pytest.param({"prompt": 5}, "prompt is invalid", id="prompt-not-string"),
        pytest.param({"model": "flux-3"}, "model is invalid", id="model-unknown"),
        pytest.param({"size": "1000x1000"}, "multiple of 32", id="size-not-multiple-of-32"),
        pytest.param({"size": "1472x1024"}, "256 to 1440", id="size-above-1440"),
        pytest.param({"size": "224x256"}, "256 to 1440", id="size-below-256"),
        pytest.param({"size": "16:9"}, "takes WxH", id="ratio-for-flux-dev"),
        pytest.param({"size": "big"}, "size is invalid", id="size-garbage"),
        pytest.param({"size": 1024}, "size is invalid", id="size-not-string"),
        pytest.param({"model": "flux-pro-1.1", "size": "1024x1440x2"}, "size is invalid", id="size-3d"),
        pytest.param({"model": "flux-pro-1.1-ultra", "size": "1024x1024"}, "aspect ratio",
                     id="wxh-for-ultra"),
        pytest.param({"model": "flux-kontext-max", "size": "7:5"}, "aspect ratio", id="ratio-unknown"),
        pytest.param({"model": "flux-2-pro", "size": "32x1024"}, "from 64", id="flux2-below-64"),
        pytest.param({"model": "flux-2-flex", "size": "100x128"}, "multiple of 32", id="flux2-not-32"),
        pytest.param({"count": 0}, "count is invalid", id="count-zero"),
        pytest.param({"count": 1.5}, "count is invalid", id="count-fraction"),
        pytest.param({"count": 257}, "count is invalid", id="count-too-many"),
        pytest.param({"count": "2"}, "count is invalid", id="count-string"),
        pytest.param({"async": "yes"}, "async is invalid", id="async-not-boolean"),
        pytest.param({"callback_url": 7}, "callback_url is invalid", id="callback-not-string"),
        pytest.param({"action": "edit", "model": "flux-dev", "image_url": "https://x/y.png"},
                     "edit takes flux-kontext-pro or flux-kontext-max", id="edit-non-kontext"),
        pytest.param({"action": "edit", "model": "flux-kontext-pro"}, "image_url is invalid",
                     id="edit-without-image"),
        pytest.param({"action": "edit", "image_url": "<string>"}, "image_url is invalid",
                     id="edit-image-not-url"),
    ],
)
async def test_every_validation_rule_gets_a_400_bad_request(change: dict[str, Any], fragment: str) -> None:
    server = manual()
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    response = await server.request("POST", IMAGES, json=body, headers=AUTH)
    assert fragment in assert_error(response, 400, "bad_request")
    assert len(server.tasks) == 0


@pytest.mark.parametrize(
    "body",
    [pytest.param(b"", id="empty"), pytest.param(b"{nope", id="not-json"),
     pytest.param(b"[1, 2]", id="array"), pytest.param(b"\xff\xfe", id="not-utf8")],
)
@pytest.mark.parametrize("path", [IMAGES, TASKS])
async def test_bad_bodies_get_a_400_in_the_envelope(body: bytes, path: str) -> None:
    response = await manual().request("POST", path, body=body, headers=AUTH)
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    ("model", "size", "pixels"),
    [
        pytest.param("flux-dev", "1440x256", (1440, 256), id="flux-dev-extremes"),
        pytest.param("flux-pro", "512x768", (512, 768), id="flux-pro"),
        pytest.param("flux-2-klein", "64x2048", (64, 2048), id="flux2-small-side"),
        pytest.param("flux-kontext-pro", "1:1", (1024, 1024), id="kontext-1-1"),
        pytest.param("flux-kontext-max", "16:9", (1376, 768), id="kontext-16-9"),
        pytest.param("flux-kontext-pro", "9:21", (672, 1568), id="kontext-9-21"),
        pytest.param("flux-pro-1.1-ultra", "1:1", (2048, 2048), id="ultra-4mp"),
        pytest.param("flux-pro-1.1-ultra", None, (2048, 2048), id="ultra-default-ratio"),
        pytest.param("flux-2-max", None, (1024, 1024), id="flux2-default-size"),
    ],
)
async def test_sizes_by_model_give_images_of_that_size(
    model: str, size: str | None, pixels: tuple[int, int]
) -> None:
    server = manual()
    body = {**GOOD, "model": model} | ({"size": size} if size else {})
    task_id = (await submit(server, body))["task_id"]
    server.clock.advance(121)
    [item] = (await retrieve(server, task_id))["response"]["data"]
    image = await download(server, item["image_url"])
    assert image.status == 200 and image.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(bytes(image.body))).size == pixels


async def test_edit_makes_one_image_whatever_count_says_and_defaults_to_kontext() -> None:
    server = manual()
    body = {"action": "edit", "prompt": "night", "image_url": "https://e.com/a.png", "count": 4,
            "async": True}
    task_id = (await submit(server, body))["task_id"]
    server.clock.advance(121)
    record = await retrieve(server, task_id)
    assert len(record["response"]["data"]) == 1
    assert server.provider.describe_task(server.tasks.get(task_id))["model"] == "flux-kontext-pro"


# --- sync mode ---------------------------------------------------------------------------


async def test_sync_request_waits_the_generation_time_and_answers_count_images() -> None:
    server = manual()
    body = {"action": "generate", "prompt": "a fox", "model": "flux-pro-1.1", "size": "768x1024", "count": 3}
    response = await sync_request(server, body)
    assert response.status == 200
    result = response.json_body()
    validator = contracts.response_validator("acedata", "createFluxImages", 200)
    assert validator is not None and validator.issues(result) == []
    assert result["success"] is True and len(result["data"]) == 3
    seeds = [d["seed"] for d in result["data"]]
    assert seeds == list(range(seeds[0], seeds[0] + 3))
    assert all(isinstance(d["timings"]["inference"], float) for d in result["data"])
    images = [await download(server, d["image_url"]) for d in result["data"]]
    assert len({bytes(i.body) for i in images}) == 3  # each index is its own image
    assert Image.open(io.BytesIO(bytes(images[0].body))).size == (768, 1024)
    # The sync task's record is retrievable and already holds the same response.
    record = await retrieve(server, result["task_id"])
    assert record["response"]["data"][0]["image_url"] == result["data"][0]["image_url"]
    assert record["elapsed"] == pytest.approx(record["finished_at"] - record["created_at"], abs=0.01)


async def test_sync_request_is_still_pending_before_the_generation_time() -> None:
    server = manual()
    body = {**GOOD, "async": False}
    pending = asyncio.ensure_future(server.request("POST", IMAGES, json=body, headers=AUTH))
    await asyncio.sleep(0.01)
    server.clock.advance(59)  # the phase is drawn from 60-120 s
    await asyncio.sleep(0.01)
    assert not pending.done()
    server.clock.advance(62)
    assert (await asyncio.wait_for(pending, 5)).status == 200


async def test_sync_task_failure_answers_500_api_error() -> None:
    server = manual()
    response = await sync_request(server, {**GOOD, "async": False}, **{"X-Mock-Fault": "task_fail"})
    assert assert_error(response, 500, "api_error") == "fetch failed"


async def test_sync_task_that_never_finishes_times_out_with_504() -> None:
    server = manual()
    response = await sync_request(server, {**GOOD, "async": False}, advance=600,
                                  **{"X-Mock-Fault": "never_finish"})
    assert_error(response, 504, "timeout")


async def test_timings_can_be_a_timestamp() -> None:
    server = manual(options={"timings": "timestamp"})
    result = (await sync_request(server, {**GOOD, "async": False})).json_body()
    timings = result["data"][0]["timings"]
    created = server.tasks.get(result["task_id"]).created_at  # type: ignore[union-attr]
    assert isinstance(timings, int) and created + 59 <= timings <= created + 121


# --- async mode and the task record ------------------------------------------------------


async def test_async_task_record_is_pending_then_succeeded() -> None:
    server = manual()
    accepted = await submit(server, GOOD)
    assert list(accepted) == ["task_id"]
    record = await retrieve(server, accepted["task_id"])
    assert record["response"] == {"success": True, "task_id": accepted["task_id"]}
    assert "finished_at" not in record
    assert record["id"] == accepted["task_id"] and len(record["_id"]) == 24
    assert record["request"] == GOOD
    server.clock.advance(121)
    record = await retrieve(server, accepted["task_id"])
    assert record["response"]["success"] is True and len(record["response"]["data"]) == 1
    assert record["response"]["trace_id"] == record["trace_id"]
    assert record["finished_at"] > record["created_at"]


async def test_async_full_response_option() -> None:
    server = manual(options={"async_response": "full"})
    accepted = await submit(server, GOOD)
    assert set(accepted) == {"success", "task_id", "trace_id"} and accepted["success"] is True


async def test_pending_record_absent_option() -> None:
    server = manual(options={"pending_record": "absent"})
    task_id = (await submit(server, GOOD))["task_id"]
    record = await retrieve(server, task_id)
    assert "response" not in record and "finished_at" not in record


async def test_failed_async_task_has_success_false_and_an_error() -> None:
    server = manual()
    task_id = (await submit(server, GOOD, **{"X-Mock-Fault": "task_fail"}))["task_id"]
    server.clock.advance(121)
    response = (await retrieve(server, task_id))["response"]
    assert response["success"] is False and "data" not in response
    assert response["error"] == {"code": "api_error", "message": "fetch failed"}


async def test_never_finishing_task_stays_pending() -> None:
    server = manual()
    task_id = (await submit(server, GOOD, **{"X-Mock-Fault": "never_finish"}))["task_id"]
    server.clock.advance(10_000)
    record = await retrieve(server, task_id)
    assert "data" not in record["response"] and "finished_at" not in record


async def test_poll_driven_lifecycle_finishes_after_two_polls() -> None:
    server = manual(lifecycle="polls")
    task_id = (await submit(server, GOOD))["task_id"]
    seen = ["finished_at" in await retrieve(server, task_id) for _ in range(4)]
    assert seen == [False, False, True, True]


async def test_retrieve_batch_keeps_order_omits_unknown_and_pages() -> None:
    server = manual()
    ids = [(await submit(server, {**GOOD, "prompt": f"p{i}"}))["task_id"] for i in range(3)]
    response = await server.request(
        "POST", TASKS, json={"action": "retrieve_batch", "ids": [ids[2], "nope", ids[0]]}, headers=AUTH
    )
    batch = response.json_body()
    assert batch["count"] == 2 and [r["id"] for r in batch["items"]] == [ids[2], ids[0]]
    paged = await server.request(
        "POST", TASKS, json={"action": "retrieve_batch", "ids": ids, "offset": 1, "limit": 1}, headers=AUTH
    )
    assert [r["id"] for r in paged.json_body()["items"]] == [ids[1]]
    listed = await server.request("POST", TASKS, json={"action": "retrieve_batch"}, headers=AUTH)
    assert [r["id"] for r in listed.json_body()["items"]] == ids[::-1]  # newest first
    others = await server.request("POST", TASKS, json={"action": "retrieve_batch"},
                                  headers={"Authorization": "Bearer someone-else"})
    assert others.json_body() == {"items": [], "count": 0}  # a listing shows the caller's own


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param({"action": "retrieve", "id": "missing"}, 404, "not_found", id="unknown-id"),
        pytest.param({"action": "retrieve"}, 400, "bad_request", id="retrieve-without-id"),
        pytest.param({"action": "delete_all"}, 400, "bad_request", id="unknown-action"),
        pytest.param({"id": "x"}, 400, "bad_request", id="no-action"),
        pytest.param({"action": "retrieve_batch", "ids": "a,b"}, 400, "bad_request", id="ids-not-list"),
    ],
)
async def test_task_retrieval_errors(body: dict[str, Any], status: int, code: str) -> None:
    response = await manual().request("POST", TASKS, json=body, headers=AUTH)
    assert_error(response, status, code)


async def test_expired_url_fault_gives_links_that_are_refused() -> None:
    server = manual()
    task_id = (await submit(server, GOOD))["task_id"]
    server.clock.advance(121)
    record = await retrieve(server, task_id, **{"X-Mock-Fault": "expired_url"})
    assert (await download(server, record["response"]["data"][0]["image_url"])).status == 403
    fresh = await retrieve(server, task_id)
    assert (await download(server, fresh["response"]["data"][0]["image_url"])).status == 200


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [pytest.param(s, c, id=f"{s}-{c}") for s, codes in ERROR_CODES.items() for c in codes],
)
@pytest.mark.parametrize("path", [IMAGES, TASKS])
async def test_every_error_code_is_reachable_through_the_fault_model(
    status: int, code: str, path: str
) -> None:
    server = manual()
    response = await server.request("POST", path, json=GOOD, headers=fault(f"http:{status}:{code}"))
    assert assert_error(response, status, code) == ERROR_CODES[status][code]


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 429, 500, 502, 503, 504])
async def test_http_fault_without_code_uses_the_status_default(status: int) -> None:
    response = await manual().request("POST", IMAGES, json=GOOD, headers=fault(f"http:{status}"))
    assert_error(response, status, str(contracts.load("acedata").behaviour.errors[status].code))


async def test_rate_limit_fault_answers_429_too_many_requests_with_retry_after() -> None:
    response = await manual().request("POST", IMAGES, json=GOOD, headers=fault("rate_limit:2"))
    assert_error(response, 429, "too_many_requests")
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({}, 400, "no_token", id="missing"),
        pytest.param({"Authorization": "Token abc"}, 401, "invalid_token", id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer wrong"}, 401, "invalid_token", id="unknown-key"),
    ],
)
async def test_auth_failures(headers: dict[str, str], status: int, code: str) -> None:
    server = manual(api_keys=["ace-token"])
    response = await server.request("POST", IMAGES, json=GOOD, headers=headers)
    assert_error(response, status, code)
    assert (await server.request("POST", IMAGES, json=GOOD, headers=AUTH)).status == 200


async def test_unknown_path_and_wrong_method_get_404_no_api() -> None:
    # [I] AceData documents no 405: a path asked with another method is an API that does not exist.
    server = manual()
    assert_error(await server.request("POST", "/flux/videos2", json=GOOD, headers=AUTH), 404, "no_api")
    assert_error(await server.request("GET", TASKS, headers=AUTH), 404, "no_api")


async def test_configured_rate_limit_answers_429() -> None:
    server = manual(rate_limit="2/60")
    for _ in range(2):
        await submit(server, GOOD)
    response = await server.request("POST", IMAGES, json=GOOD, headers=AUTH)
    assert_error(response, 429, "too_many_requests")
    assert int(response.headers["Retry-After"]) > 0


async def test_huge_body_is_a_400_bad_request() -> None:
    body = b'{"action":"generate","prompt":"' + b"x" * 1_100_000 + b'"}'
    response = await manual().request("POST", IMAGES, body=body, headers=AUTH)
    assert "exceeds" in assert_error(response, 400, "bad_request")


async def test_store_full_of_live_tasks_answers_500_busy() -> None:
    server = manual(max_tasks=2)
    for _ in range(2):
        await submit(server, GOOD)
    response = await server.request("POST", IMAGES, json=GOOD, headers=AUTH)
    assert_error(response, 500, "busy")


async def ndjson_lines(server: MockServer, response: MockResponse, step: float) -> list[Any]:
    """Read a stream in process, moving the manual clock by ``step`` while a line is awaited."""
    assert not isinstance(response.body, bytes | bytearray)
    stream = response.body.__aiter__()
    lines = []
    while True:
        pending = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.001)
        while not pending.done():
            server.clock.advance(step)
            await asyncio.sleep(0.001)
        try:
            lines.append(json.loads(pending.result()))
        except StopAsyncIteration:
            return lines


async def test_ndjson_truncate_fault_ends_the_stream_without_its_last_line() -> None:
    server = manual(options={"ndjson": "progress"})
    headers = {**AUTH, "Accept": "application/x-ndjson", "X-Mock-Fault": "truncate:1"}
    response = await server.request("POST", IMAGES, json={**GOOD, "async": False}, headers=headers)
    lines = await ndjson_lines(server, response, 200)
    assert len(lines) == 1 and "progress" in lines[0]


async def test_ndjson_that_never_finishes_ends_with_a_504_line() -> None:
    server = manual(options={"ndjson": "progress"})
    headers = {**AUTH, "Accept": "application/x-ndjson", "X-Mock-Fault": "never_finish"}
    response = await server.request("POST", IMAGES, json={**GOOD, "async": False}, headers=headers)
    lines = await ndjson_lines(server, response, 10)
    assert len(lines) == 61  # a line every 10 s for 600 s, then the 504 line
    assert [line["progress"] for line in lines[:-1]] == [0] * (len(lines) - 1)
    assert lines[-1]["success"] is False and lines[-1]["error"]["code"] == "timeout"


def test_the_sdk_runs_in_process_under_the_real_host() -> None:
    server = MockServer("acedata", time_scale=5000, seed=2)
    with mock_router(server):
        client = AceDataCloud(api_token="t", base_url="https://api.acedata.cloud")
        handle = client.flux.generate(size="512x512", action="generate", prompt="x",
                                      wait=True, poll_interval=0.01)
        [url] = handle.urls()
        assert url.startswith("https://api.acedata.cloud/images/")
        image = httpx.get(url)
        assert Image.open(io.BytesIO(image.content)).size == (512, 512)
        client.close()
    assert server.errors == []
