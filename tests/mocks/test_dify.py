"""Dify workflow mock, in process: contract, validation, blocking runs, signed files, faults, uploads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from openapi_spec_validator import validate
from PIL import Image

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.dify import DifyProvider, Workflow, WorkflowError
from imagegen_conformance.mocks.engine import MockResponse

AUTH = {"Authorization": "Bearer app-test"}
RUN = "/v1/workflows/run"
# The seed's curl body, verbatim.
SEED_BODY: dict[str, Any] = {
    "inputs": {"prompt": "一个胸有成竹的男人", "model_name": "chilloutmix_NiPrunedFp32Fix"},
    "response_mode": "blocking",
    "user": "alg123",
}
SEED_FILE_KEYS = [
    "__variant", "tenant_id", "type", "transfer_method", "url", "related_id", "filename",
    "extension", "mime_type",
]
MODELS = [
    "chilloutmix_NiPrunedFp32Fix", "dosmix_", "ghostmix_v20Bakedvae", "rundiffusionFX_v10",
    "v1-5-pruned-emaonly",
]
CONTRACT_DIR = Path(contracts.__file__).parent / "dify"


def manual(**kwargs: Any) -> MockServer:
    return MockServer("dify", clock="manual", seed=1, **kwargs)


def provider(server: MockServer) -> DifyProvider:
    assert isinstance(server.provider, DifyProvider)
    return server.provider


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def blocking(
    server: MockServer, body: dict[str, Any] | None = None, *, advance: float = 60.0,
    headers: dict[str, str] | None = None,
) -> MockResponse:
    """Start a blocking run, move the manual clock on, and return its answer."""
    pending = asyncio.ensure_future(
        server.request("POST", RUN, json=body or SEED_BODY, headers={**AUTH, **(headers or {})})
    )
    await settle()
    server.clock.advance(advance)
    return await asyncio.wait_for(pending, 5)


def envelope(response: MockResponse, status: int, code: str) -> str:
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    body = response.json_body()
    assert response.body == json.dumps(body).encode() + b"\n"  # flask-restful's output_json
    assert set(body) == {"code", "message", "status"}
    assert body["code"] == code
    assert body["status"] == status
    validator = contracts.response_validator("dify", "runWorkflow", status)
    assert validator is not None and validator.issues(body) == []
    return str(body["message"])


def split_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query))


# --- the contract ----------------------------------------------------------------------


def test_openapi_is_valid() -> None:
    validate(yaml.safe_load((CONTRACT_DIR / "openapi.yaml").read_text("utf-8")))


def test_every_routed_operation_is_in_the_contract_and_back() -> None:
    contract = contracts.load("dify")
    routed = {r.operation for r in DifyProvider.routes()}
    assert None not in routed
    assert routed == set(contract.operations)


def test_contract_loads_with_options_quirks_and_error_codes() -> None:
    behaviour = contracts.load("dify").behaviour
    assert behaviour.auth.scheme == "Bearer"
    assert {"gateway_timeout", "file_urls", "total_steps", "stop_blocking"} <= set(behaviour.options)
    assert "blocking-gateway-timeout" in {q.id for q in behaviour.quirks}
    codes = behaviour.raw["error_codes"]
    for code in ("invalid_param", "app_unavailable", "provider_not_initialize",
                 "provider_quota_exceeded", "model_currently_not_support",
                 "completion_request_error", "not_workflow_app", "unauthorized", "forbidden",
                 "not_found", "too_many_requests", "internal_server_error"):
        assert code in codes


def test_scenarios_name_known_faults_and_operations() -> None:
    contract = contracts.load("dify")
    from imagegen_conformance.mocks.engine import FaultSpec

    for scenario in contract.scenarios:
        for fault in scenario.faults:
            spec = FaultSpec.parse(fault)
            assert spec.operation is None or spec.operation in contract.operations


def test_default_workflow_reproduces_the_seed_form() -> None:
    wf = Workflow.load()
    kinds = [next(iter(e)) for e in wf.user_input_form]
    assert kinds == ["text-input", "select"]
    prompt, model = (next(iter(e.values())) for e in wf.user_input_form)
    assert prompt["variable"] == "prompt" and prompt["required"] is True
    assert model["variable"] == "model_name" and model["required"] is False
    assert model["options"] == MODELS and model["default"] == "v1-5-pruned-emaonly"
    assert [n.type for n in wf.nodes] == ["start", "tool", "end"]


# --- blocking runs -------------------------------------------------------------------


async def test_seed_request_answers_the_seed_body() -> None:
    server = manual()
    response = await blocking(server)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json_body()
    validator = contracts.response_validator("dify", "runWorkflow", 200)
    assert validator is not None and validator.issues(body) == []
    assert list(body) == ["task_id", "workflow_run_id", "data"]
    data = body["data"]
    assert list(data) == [
        "id", "workflow_id", "status", "outputs", "error", "elapsed_time", "total_tokens",
        "total_steps", "created_at", "finished_at",
    ]
    assert data["id"] == body["workflow_run_id"] != body["task_id"]
    assert data["workflow_id"] == "aa4896ce-61eb-4873-8e8d-b18789bbd41b"
    assert data["status"] == "succeeded" and data["error"] is None
    assert data["total_tokens"] == 536 and data["total_steps"] == 5
    assert 12.0 < data["elapsed_time"] < 26.0
    assert data["finished_at"] - data["created_at"] == int(data["elapsed_time"]) or (
        data["finished_at"] - data["created_at"] == int(data["elapsed_time"]) + 1
    )
    (file,) = data["outputs"]["files"]
    assert list(file) == SEED_FILE_KEYS
    assert file["__variant"] == "FileVar" and file["transfer_method"] == "tool_file"
    assert file["tenant_id"] == "a28e2d2e-0eb5-49a6-8742-16369a5c22bd"
    assert (file["filename"], file["extension"], file["mime_type"]) == ("image", ".png", "image/png")
    assert re.fullmatch(
        r"/files/tools/" + re.escape(file["related_id"])
        + r"\.png\?timestamp=\d+&nonce=[0-9a-f]{32}&sign=[A-Za-z0-9_-]{43}=",
        file["url"],
    )
    assert server.errors == []


async def test_blocking_answer_waits_for_the_run() -> None:
    server = manual()
    pending = asyncio.ensure_future(server.request("POST", RUN, json=SEED_BODY, headers=AUTH))
    await settle()
    server.clock.advance(5)
    await settle()
    assert not pending.done()
    server.clock.advance(30)
    response = await asyncio.wait_for(pending, 5)
    assert response.json_body()["data"]["status"] == "succeeded"


async def test_response_mode_omitted_means_blocking() -> None:
    server = manual()
    body = {k: v for k, v in SEED_BODY.items() if k != "response_mode"}
    response = await blocking(server, body)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json_body()["data"]["status"] == "succeeded"


async def test_model_name_defaults_to_v1_5() -> None:
    server = manual()
    response = await blocking(server, {"inputs": {"prompt": "a cat"}, "user": "u"})
    run_id = response.json_body()["workflow_run_id"]
    detail = await server.request("GET", f"/v1/workflows/run/{run_id}", headers=AUTH)
    assert json.loads(detail.json_body()["inputs"]) == {
        "prompt": "a cat", "model_name": "v1-5-pruned-emaonly",
    }


@pytest.mark.parametrize("model", MODELS)
async def test_each_seed_model_is_accepted(model: str) -> None:
    server = manual()
    response = await blocking(server, {"inputs": {"prompt": "p", "model_name": model}, "user": "u"})
    assert response.json_body()["data"]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        pytest.param({"inputs": {"prompt": "p"}}, "invalid_param", "Arg user must be provided.",
                     id="missing-user"),
        pytest.param({"inputs": {"prompt": "p"}, "user": ""}, "invalid_param",
                     "Arg user must be provided.", id="empty-user"),
        pytest.param({"inputs": {}, "user": "u"}, "invalid_param",
                     "prompt is required in input form", id="missing-prompt"),
        pytest.param({"inputs": {"prompt": 5}, "user": "u"}, "invalid_param",
                     "prompt in input form must be a string", id="prompt-not-string"),
        pytest.param({"inputs": {"prompt": "x" * 4001}, "user": "u"}, "invalid_param",
                     "prompt in input form must be less than 4000 characters", id="prompt-too-long"),
        pytest.param({"inputs": {"prompt": "p", "model_name": "sdxl"}, "user": "u"}, "invalid_param",
                     f"model_name in input form must be one of the following: {MODELS}",
                     id="unknown-model"),
        pytest.param({"inputs": {"prompt": "p"}, "user": "u",
                      "files": [{"type": "image", "transfer_method": "local_file",
                                 "upload_file_id": "nope"}]},
                     "invalid_param", "Invalid upload file",
                     id="unknown-upload"),
    ],
)
async def test_bad_run_bodies_get_invalid_param(body: dict[str, Any], code: str, message: str) -> None:
    server = manual()
    response = await server.request("POST", RUN, json=body, headers=AUTH)
    assert envelope(response, 400, code) == message
    assert len(server.tasks) == 0


@pytest.mark.parametrize("mode", ["blocking", "streaming"])
async def test_inputs_as_a_list_of_pairs_with_odd_keys_run_as_reqparse_makes_them(mode: str) -> None:
    # reqparse's type=dict takes pairs; a key that is not a string is written as json.dumps does.
    server = manual()
    pairs = [["prompt", "x"], [1, "y"], [None, "z"], [2.5, "t"]]
    body = {"inputs": pairs, "user": "u", "response_mode": mode}
    if mode == "blocking":
        response = await blocking(server, body)
        assert response.json_body()["data"]["status"] == "succeeded"
    else:
        response = await server.request("POST", RUN, json=body, headers=AUTH)
        assert response.status == 200
    assert not server.errors
    (task,) = list(server.tasks)
    assert {k: task.data["inputs"][k] for k in ("prompt", "1", "null", "2.5")} == {
        "prompt": "x", "1": "y", "null": "z", "2.5": "t"}


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        pytest.param({"user": "u"}, "inputs", "Missing required parameter in the JSON body",
                     id="missing-inputs"),
        pytest.param({"user": "u", "inputs": None}, "inputs", "Must not be null!", id="null-inputs"),
        pytest.param({"user": "u", "inputs": "p"}, "inputs",
                     "dictionary update sequence element #0 has length 1; 2 is required",
                     id="inputs-a-string"),
        pytest.param({"user": "u", "inputs": 5}, "inputs", "'int' object is not iterable",
                     id="inputs-a-number"),
        pytest.param({"user": "u", "inputs": {"prompt": "p"}, "files": 3}, "files",
                     "'int' object is not iterable", id="files-a-number"),
        pytest.param({"user": "u", "inputs": {"prompt": "p"}, "response_mode": "fast"},
                     "response_mode", "fast is not a valid choice", id="bad-response-mode"),
        pytest.param({"user": "u", "inputs": {"prompt": "p"}, "response_mode": None},
                     "response_mode", "None is not a valid choice", id="null-response-mode"),
        pytest.param({"user": "u", "inputs": 5, "response_mode": "fast"}, "inputs",
                     "'int' object is not iterable", id="inputs-refused-first"),
    ],
)
@pytest.mark.parametrize("release", ["seed", "current"])
async def test_reqparse_refusals_name_the_argument(
    body: dict[str, Any], param: str, message: str, release: str
) -> None:
    """[V] libs/external_api.py: {code: invalid_param, message, params} (+ status later)."""
    server = manual(options={"release": release})
    response = await server.request("POST", RUN, json=body, headers=AUTH)
    assert response.status == 400 and response.headers["Content-Type"] == "application/json"
    expected: dict[str, Any] = {"code": "invalid_param", "message": message, "params": param}
    if release == "current":
        expected["status"] = 400
    assert response.json_body() == expected and list(response.json_body()) == list(expected)
    assert response.body == json.dumps(expected).encode() + b"\n"
    validator = contracts.response_validator("dify", "runWorkflow", 400)
    assert validator is not None and validator.issues(response.json_body()) == []
    assert len(server.tasks) == 0


async def test_bad_files_entry_names_the_field() -> None:
    server = manual()
    body = {"inputs": {"prompt": "p"}, "user": "u", "files": [{"type": "image", "transfer_method": "x"}]}
    message = envelope(await server.request("POST", RUN, json=body, headers=AUTH), 400, "invalid_param")
    assert message.startswith("files[0]")


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"], ids=["broken", "empty", "array", "binary"]
)
async def test_non_json_bodies_get_bad_request(raw: bytes) -> None:
    server = manual()
    response = await server.request(
        "POST", RUN, body=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    message = envelope(response, 400, "bad_request")
    assert "could not understand" in message
    assert server.errors == []


# --- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, "Authorization header must be provided and start with 'Bearer'", id="missing"),
        pytest.param({"Authorization": "Basic abc"}, "Authorization scheme must be 'Bearer'",
                     id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer wrong"}, "Access token is invalid", id="unknown-key"),
    ],
)
async def test_auth_failures_are_401_unauthorized(headers: dict[str, str], message: str) -> None:
    server = manual(api_keys=["app-test"])
    response = await server.request("POST", RUN, json=SEED_BODY, headers=headers)
    assert envelope(response, 401, "unauthorized") == message


async def test_file_links_need_no_auth_but_api_routes_do() -> None:
    server = manual()
    response = await server.request("GET", "/v1/parameters")
    assert response.status == 401


# --- signed file links ---------------------------------------------------------------


async def test_output_link_downloads_a_png_and_is_signed_as_dify_does() -> None:
    server = manual()
    file = (await blocking(server)).json_body()["data"]["outputs"]["files"][0]
    path, query = split_url(file["url"])
    # Recompute the signature independently: HMAC-SHA256 over Dify's message, urlsafe base64.
    message = f"file-preview|{file['related_id']}|{query['timestamp']}|{query['nonce']}".encode()
    expected = base64.urlsafe_b64encode(hmac.new(server.secret, message, hashlib.sha256).digest())
    assert query["sign"] == expected.decode()
    response = await server.request("GET", path, query=query)
    assert response.status == 200 and response.headers["Content-Type"] == "image/png"
    assert isinstance(response.body, bytes)
    image = Image.open(io.BytesIO(response.body))
    assert (image.format, image.size) == ("PNG", (512, 512))
    head = await server.request("HEAD", path, query=query)
    assert head.status == 200 and head.body == b""


@pytest.mark.parametrize("field", ["sign", "nonce", "timestamp"])
async def test_tampered_link_is_403(field: str) -> None:
    server = manual()
    file = (await blocking(server)).json_body()["data"]["outputs"]["files"][0]
    path, query = split_url(file["url"])
    value = query[field]
    query[field] = ("A" if value[0] != "A" else "B") + value[1:]
    if field == "timestamp":
        query[field] = str(int(value) - 1)
    response = await server.request("GET", path, query=query)
    assert response.status == 403
    assert response.json_body() == {"code": "forbidden", "message": "Invalid request.", "status": 403}


async def test_link_without_signature_is_403() -> None:
    server = manual()
    file = (await blocking(server)).json_body()["data"]["outputs"]["files"][0]
    path, _ = split_url(file["url"])
    assert (await server.request("GET", path)).status == 403


async def test_link_is_valid_300_provider_seconds() -> None:
    server = manual()
    file = (await blocking(server)).json_body()["data"]["outputs"]["files"][0]
    path, query = split_url(file["url"])
    server.clock.advance(300 - (server.clock.now() - int(query["timestamp"])))
    assert (await server.request("GET", path, query=query)).status == 200
    server.clock.advance(1.5)
    assert (await server.request("GET", path, query=query)).status == 403


async def test_run_detail_signs_fresh_links() -> None:
    server = manual()
    body = (await blocking(server)).json_body()
    server.clock.advance(400)
    detail = await server.request("GET", f"/v1/workflows/run/{body['workflow_run_id']}", headers=AUTH)
    path, query = split_url(detail.json_body()["outputs"]["files"][0]["url"])
    assert (await server.request("GET", path, query=query)).status == 200


async def test_expired_url_fault_gives_a_dead_link() -> None:
    server = manual()
    response = await blocking(server, headers={"X-Mock-Fault": "expired_url"})
    path, query = split_url(response.json_body()["data"]["outputs"]["files"][0]["url"])
    assert (await server.request("GET", path, query=query)).status == 403


async def test_absolute_file_urls_option() -> None:
    server = manual(options={"file_urls": "absolute"})
    file = (await blocking(server)).json_body()["data"]["outputs"]["files"][0]
    assert file["url"].startswith("http://127.0.0.1/files/tools/")


async def test_unknown_file_with_valid_signature_is_404() -> None:
    server = manual()
    prov = provider(server)
    ts, nonce = str(int(server.clock.now())), "0" * 32
    query = {"timestamp": ts, "nonce": nonce, "sign": prov._sign("nope", ts, nonce)}
    response = await server.request("GET", "/files/tools/nope.png", query=query)
    assert response.status == 404 and response.json_body()["code"] == "not_found"


# --- gateway limit, failures, stop ---------------------------------------------------


async def test_behind_cloudflare_a_blocking_run_is_cut_at_100_seconds_and_goes_on() -> None:
    server = manual(options={"gateway_timeout": "100"})
    provider(server).use_workflow(slow_workflow(150.0))
    pending = asyncio.ensure_future(server.request("POST", RUN, json=SEED_BODY, headers=AUTH))
    await settle()
    server.clock.advance(99)
    await settle()
    assert not pending.done()
    server.clock.advance(1.5)
    response = await asyncio.wait_for(pending, 5)
    assert response.status == 524
    assert response.body == b"error code: 524"
    (task,) = list(server.tasks)
    server.clock.advance(60)
    detail = await server.request("GET", f"/v1/workflows/run/{task.id}", headers=AUTH)
    assert detail.json_body()["status"] == "succeeded"


async def test_self_hosted_by_default_nginx_cuts_a_blocking_run_at_3600_seconds() -> None:
    server = manual()  # the seed's self-hosted Dify behind docker compose's nginx
    provider(server).use_workflow(slow_workflow(4000.0))
    pending = asyncio.ensure_future(server.request("POST", RUN, json=SEED_BODY, headers=AUTH))
    await settle()
    server.clock.advance(3599)
    await settle()
    assert not pending.done()  # far past Cloudflare's 100 s and gunicorn's 360 s
    server.clock.advance(1.5)
    response = await asyncio.wait_for(pending, 5)
    assert (response.status, response.headers["Content-Type"]) == (504, "text/html")
    assert isinstance(response.body, bytes) and b"<title>504 Gateway Time-out</title>" in response.body
    (task,) = list(server.tasks)
    server.clock.advance(500)
    detail = await server.request("GET", f"/v1/workflows/run/{task.id}", headers=AUTH)
    assert detail.json_body()["status"] == "succeeded"


async def test_gateway_timeout_off_waits_however_long() -> None:
    server = manual(options={"gateway_timeout": "off"})
    provider(server).use_workflow(slow_workflow(150.0))
    pending = asyncio.ensure_future(server.request("POST", RUN, json=SEED_BODY, headers=AUTH))
    await settle()
    server.clock.advance(120)
    await settle()
    assert not pending.done()
    server.clock.advance(40)
    response = await asyncio.wait_for(pending, 5)
    assert response.status == 200 and response.json_body()["data"]["status"] == "succeeded"


async def test_never_finish_blocking_gets_524() -> None:
    server = manual(options={"gateway_timeout": "60"})
    response = await blocking(server, headers={"X-Mock-Fault": "never_finish"}, advance=61)
    assert response.status == 524


async def test_node_failure_in_blocking_mode() -> None:
    server = manual()
    response = await blocking(server, headers={"X-Mock-Fault": "task_fail"})
    data = response.json_body()["data"]
    assert response.status == 200
    assert data["status"] == "failed"
    assert data["error"] == Workflow.load().nodes[1].error
    assert data["outputs"] is None and data["total_tokens"] == 0


async def test_error_after_start_in_blocking_mode_is_an_http_error() -> None:
    server = manual()
    response = await blocking(server, headers={"X-Mock-Fault": "task_fail:error:provider_quota_exceeded"})
    assert envelope(response, 400, "provider_quota_exceeded").startswith("Your quota")


async def test_stop_answers_success_for_anything() -> None:
    server = manual()
    response = await server.request(
        "POST", "/v1/workflows/tasks/unknown/stop", json={"user": "someone"}, headers=AUTH
    )
    assert response.status == 200 and response.json_body() == {"result": "success"}


async def test_stop_needs_a_user() -> None:
    server = manual()
    response = await server.request("POST", "/v1/workflows/tasks/x/stop", json={}, headers=AUTH)
    assert envelope(response, 400, "invalid_param") == "Arg user must be provided."


@pytest.mark.parametrize(("option", "expected"), [("false", "succeeded"), ("true", "stopped")])
async def test_stop_and_blocking_runs(option: str, expected: str) -> None:
    server = manual(options={"stop_blocking": option})
    pending = asyncio.ensure_future(server.request("POST", RUN, json=SEED_BODY, headers=AUTH))
    await settle()
    server.clock.advance(5)
    (task,) = list(server.tasks)
    stop = await server.request(
        "POST", f"/v1/workflows/tasks/{task.data['task_id']}/stop", json={"user": SEED_BODY["user"]},
        headers=AUTH,
    )
    assert stop.json_body() == {"result": "success"}
    await settle()
    server.clock.advance(60)
    data = (await asyncio.wait_for(pending, 5)).json_body()["data"]
    assert data["status"] == expected
    if expected == "stopped":
        assert data["error"] == "Stopped by user." and data["outputs"] is None


@pytest.mark.parametrize(("release", "expected"), [("seed", "succeeded"), ("current", "stopped")])
async def test_a_stop_from_another_user(release: str, expected: str) -> None:
    """[V] the seed's set_stop_flag ignores another end user's stop; later releases stop anyway."""
    server = manual(options={"release": release})
    body = {**SEED_BODY, "response_mode": "streaming"}
    response = await server.request("POST", RUN, json=body, headers=AUTH)
    assert not isinstance(response.body, bytes)
    stream = response.body
    (task,) = list(server.tasks)
    stop = await server.request(
        "POST", f"/v1/workflows/tasks/{task.data['task_id']}/stop", json={"user": "mallory"},
        headers=AUTH,
    )
    assert stop.json_body() == {"result": "success"}

    async def read() -> list[bytes]:
        return [chunk async for chunk in stream]

    reader = asyncio.ensure_future(read())
    for _ in range(40):
        await settle()
        server.clock.advance(5)
    frames = await asyncio.wait_for(reader, 5)
    finished = json.loads(frames[-1].removeprefix(b"data: "))
    assert finished["event"] == "workflow_finished" and finished["data"]["status"] == expected


# --- run detail, parameters, total_steps -----------------------------------------------


async def test_run_detail_while_running_and_after() -> None:
    server = manual()
    pending = asyncio.ensure_future(server.request("POST", RUN, json=SEED_BODY, headers=AUTH))
    await settle()
    server.clock.advance(1)
    (task,) = list(server.tasks)
    running = (await server.request("GET", f"/v1/workflows/run/{task.id}", headers=AUTH)).json_body()
    validator = contracts.response_validator("dify", "getWorkflowRun", 200)
    assert validator is not None and validator.issues(running) == []
    assert running["status"] == "running" and running["finished_at"] is None
    assert running["outputs"] == {}
    assert isinstance(running["inputs"], str) and json.loads(running["inputs"]) == SEED_BODY["inputs"]
    server.clock.advance(60)
    await pending
    done = (await server.request("GET", f"/v1/workflows/run/{task.id}", headers=AUTH)).json_body()
    assert validator.issues(done) == []
    assert done["status"] == "succeeded" and done["outputs"]["files"][0]["__variant"] == "FileVar"


async def test_unknown_run_is_404_not_found() -> None:
    server = manual()
    response = await server.request("GET", "/v1/workflows/run/nope", headers=AUTH)
    assert response.status == 404
    assert response.json_body() == {"code": "not_found", "message": "Workflow run not found.", "status": 404}


async def test_total_steps_option_counts_nodes() -> None:
    server = manual(options={"total_steps": "nodes"})
    assert (await blocking(server)).json_body()["data"]["total_steps"] == 3


async def test_parameters_come_from_the_workflow() -> None:
    server = manual()
    response = await server.request("GET", "/v1/parameters", headers=AUTH, query={"user": "u"})
    body = response.json_body()
    validator = contracts.response_validator("dify", "getParameters", 200)
    assert validator is not None and validator.issues(body) == []
    assert body["user_input_form"] == [dict(e) for e in Workflow.load().user_input_form]
    # the seed's release: system_parameters is one fields.String
    assert body["system_parameters"] == {"image_file_size_limit": "10"}
    assert list(body)[-4:] == ["user_input_form", "sensitive_word_avoidance", "file_upload",
                               "system_parameters"]
    assert response.body == json.dumps(body).encode() + b"\n"
    current = await manual(options={"release": "current"}).request("GET", "/v1/parameters", headers=AUTH)
    assert current.json_body()["system_parameters"]["image_file_size_limit"] == 10
    assert validator.issues(current.json_body()) == []


# --- a workflow of one's own ---------------------------------------------------------


def slow_workflow(tool_seconds: float, *, images: int = 2) -> dict[str, Any]:
    return {
        "id": "11111111-2222-3333-4444-555555555555",
        "user_input_form": [{"text-input": {"label": "prompt", "variable": "prompt", "required": True}}],
        "nodes": [
            {"id": "s", "type": "start", "seconds": 0.5},
            {"id": "t", "type": "tool", "title": "Draw", "seconds": tool_seconds, "tokens": 7,
             "images": {"count": images, "width": 64, "height": 32}},
            {"id": "e", "type": "end", "seconds": 0.5},
        ],
        "outputs": [{"variable": "images", "value_selector": ["t", "files"]},
                    {"variable": "note", "value": "done"}],
    }


async def test_own_workflow_file_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(slow_workflow(3.0), allow_unicode=True), "utf-8")
    monkeypatch.setenv("IMAGEGEN_DIFY_WORKFLOW", str(path))
    server = manual()
    params = (await server.request("GET", "/v1/parameters", headers=AUTH)).json_body()
    assert [next(iter(e)) for e in params["user_input_form"]] == ["text-input"]
    data = (await blocking(server, {"inputs": {"prompt": "p"}, "user": "u"})).json_body()["data"]
    assert data["workflow_id"] == "11111111-2222-3333-4444-555555555555"
    assert data["outputs"]["note"] == "done" and len(data["outputs"]["images"]) == 2
    assert data["total_tokens"] == 7 and data["total_steps"] == 3  # no total_steps in the file
    path_, query = split_url(data["outputs"]["images"][1]["url"])
    image = await server.request("GET", path_, query=query)
    assert isinstance(image.body, bytes)
    assert Image.open(io.BytesIO(image.body)).size == (64, 32)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        pytest.param([], "expected a mapping", id="not-a-mapping"),
        pytest.param({"nodes": []}, "'nodes' must be a non-empty list", id="no-nodes"),
        pytest.param({"nodes": [{"id": "a"}]}, "nodes[0] needs at least 'id' and 'type'", id="no-type"),
        pytest.param({"nodes": [{"id": "a", "type": "start", "seconds": [3, 1]}]},
                     "nodes[0] is malformed", id="seconds-reversed"),
        pytest.param({"nodes": [{"id": "a", "type": "start", "seconds": [1, 2, 3]}]},
                     "nodes[0] is malformed", id="seconds-three"),
        pytest.param({"nodes": [{"id": "a", "type": "tool", "images": {"format": "gif"}}]},
                     "nodes[0] is malformed", id="image-format"),
        pytest.param({"nodes": [{"id": "a", "type": "start"}],
                      "user_input_form": [{"text-input": {"label": "x"}}]},
                     "user_input_form[0]", id="form-without-variable"),
        pytest.param({"nodes": [{"id": "a", "type": "start"}], "user_input_form": [{"slider": {}}]},
                     "user_input_form[0]", id="bad-form"),
        pytest.param({"nodes": [{"id": "a", "type": "start"}],
                      "outputs": [{"variable": "x", "value_selector": ["b", "y"]}]},
                     "outputs[0].value_selector", id="unknown-node"),
    ],
)
def test_bad_workflows_are_explained(raw: Any, fragment: str) -> None:
    with pytest.raises(WorkflowError, match=re.escape(fragment)):
        Workflow.from_dict(raw)


def test_missing_workflow_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="does not exist"):
        Workflow.load(tmp_path / "absent.yaml")


# --- faults in Dify's envelope -------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("http:400:invalid_param", 400, "invalid_param"),
        ("http:400:app_unavailable", 400, "app_unavailable"),
        ("http:400:provider_not_initialize", 400, "provider_not_initialize"),
        ("http:400:provider_quota_exceeded", 400, "provider_quota_exceeded"),
        ("http:400:model_currently_not_support", 400, "model_currently_not_support"),
        ("http:400:completion_request_error", 400, "completion_request_error"),
        ("http:400:not_workflow_app", 400, "not_workflow_app"),
        ("http:400", 400, "invalid_param"),
        ("http:401", 401, "unauthorized"),
        ("http:403", 403, "forbidden"),
        ("http:404", 404, "not_found"),
        ("http:429", 429, "too_many_requests"),
        ("http:500", 500, "internal_server_error"),
        ("rate_limit:2", 429, "too_many_requests"),
    ],
)
async def test_faults_answer_in_difys_envelope(fault: str, status: int, code: str) -> None:
    server = manual()
    response = await server.request("POST", RUN, json=SEED_BODY, headers={**AUTH, "X-Mock-Fault": fault})
    message = envelope(response, status, code)
    expected = contracts.load("dify").behaviour.raw["error_codes"][code]
    assert expected["status"] == status
    if code != "not_found":
        assert message == expected["message"]
    if fault.startswith("rate_limit"):
        assert response.headers["Retry-After"] == "2"


async def test_unknown_route_is_404_in_the_envelope() -> None:
    server = manual()
    response = await server.request("GET", "/v1/nothing", headers=AUTH)
    assert response.status == 404 and response.json_body()["code"] == "not_found"


async def test_huge_run_body_is_413() -> None:
    server = manual()
    body = b'{"user":"u","inputs":{"prompt":"' + b"x" * (16 * 1024 * 1024) + b'"}}'
    headers = {**AUTH, "Content-Type": "application/json"}
    response = await server.request("POST", RUN, body=body, headers=headers)
    envelope(response, 413, "request_entity_too_large")


# --- uploads -------------------------------------------------------------------------


def multipart(*parts: tuple[str, str | None, str, bytes]) -> tuple[bytes, str]:
    boundary = "----difymockboundary"
    out = b""
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if filename is not None:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


async def upload(server: MockServer, *parts: tuple[str, str | None, str, bytes]) -> MockResponse:
    body, ctype = multipart(*parts)
    headers = {**AUTH, "Content-Type": ctype}
    return await server.request("POST", "/v1/files/upload", body=body, headers=headers)


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


async def test_upload_answers_the_seed_releases_seven_fields() -> None:
    response = await upload(manual(), ("file", "cat.png", "image/png", png_bytes()), ("user", None, "", b"u"))
    assert response.status == 201 and response.body.endswith(b"}\n")
    assert list(response.json_body()) == [
        "id", "name", "size", "extension", "mime_type", "created_by", "created_at"]


async def test_upload_answers_201_and_the_file_can_be_used_and_read() -> None:
    server = manual(options={"release": "current"})  # source_url is a later release's field
    data = png_bytes()
    response = await upload(server, ("file", "cat.png", "image/png", data), ("user", None, "", b"alg123"))
    assert response.status == 201
    meta = response.json_body()
    validator = contracts.response_validator("dify", "uploadFile", 201)
    assert validator is not None and validator.issues(meta) == []
    assert (meta["name"], meta["size"], meta["extension"], meta["mime_type"]) == (
        "cat.png", len(data), "png", "image/png"
    )
    assert meta["preview_url"] is None
    path, query = split_url(meta["source_url"])
    assert path == f"/files/{meta['id']}/file-preview"
    preview = await server.request("GET", path, query=query)
    assert preview.status == 200 and preview.body == data
    body = {**SEED_BODY, "files": [{"type": "image", "transfer_method": "local_file",
                                    "upload_file_id": meta["id"]}]}
    assert (await blocking(server, body)).json_body()["data"]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("parts", "status", "code"),
    [
        pytest.param([("user", None, "", b"u")], 400, "no_file_uploaded", id="no-file"),
        pytest.param([("file", "a.png", "image/png", b"1"), ("file", "b.png", "image/png", b"2")],
                     400, "too_many_files", id="two-files"),
        pytest.param([("file", "", "image/png", b"1")], 400, "filename_not_exists_error", id="no-name"),
        pytest.param([("file", "run.exe", "application/octet-stream", b"MZ")], 415,
                     "unsupported_file_type", id="exe"),
        pytest.param([("file", "big.png", "image/png", b"0" * (10 * 1024 * 1024 + 1))], 413,
                     "file_too_large", id="image-over-10mb"),
    ],
)
async def test_upload_errors(parts: list[tuple[str, str | None, str, bytes]], status: int, code: str) -> None:
    server = manual()
    response = await upload(server, *parts)
    assert response.status == status
    body = response.json_body()
    assert (body["code"], body["status"]) == (code, status)


async def test_upload_that_is_not_multipart_is_no_file_uploaded() -> None:
    server = manual()
    response = await server.request("POST", "/v1/files/upload", json={"file": "x"}, headers=AUTH)
    assert response.json_body()["code"] == "no_file_uploaded"


async def test_reset_forgets_files() -> None:
    server = manual()
    file = (await blocking(server)).json_body()["data"]["outputs"]["files"][0]
    path, query = split_url(file["url"])
    server.reset()
    assert (await server.request("GET", path, query=query)).status == 404


# --- streams in process, on the manual clock ---------------------------------------------


async def collect(server: MockServer, response: MockResponse, *, steps: int, step: float = 1.0
                  ) -> list[tuple[float, bytes]]:
    """Read a stream while the manual clock moves ``step`` seconds at a time."""
    assert response.is_stream and not isinstance(response.body, bytes)
    body = response.body
    seen: list[tuple[float, bytes]] = []
    start = server.clock.now()

    async def read() -> None:
        async for chunk in body:
            seen.append((server.clock.now() - start, chunk))

    reader = asyncio.ensure_future(read())
    for _ in range(steps):
        await settle()
        if reader.done():
            break
        server.clock.advance(step)
    await asyncio.wait_for(reader, 5)
    return seen


async def test_pings_every_10_provider_seconds_while_a_node_works() -> None:
    server = manual()
    provider(server).use_workflow(slow_workflow(34.0))
    body = {"inputs": {"prompt": "p"}, "user": "u", "response_mode": "streaming"}
    response = await server.request("POST", RUN, json=body, headers=AUTH)
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    seen = await collect(server, response, steps=60)
    pings = [t for t, chunk in seen if chunk == b"event: ping\n\n"]
    assert pings == [10.0, 20.0, 30.0]
    events = [json.loads(chunk[len(b"data: "):]) for _, chunk in seen if chunk.startswith(b"data: ")]
    assert [e["event"] for e in events][-1] == "workflow_finished"
    tool_done = next(t for t, c in seen if b'"node_finished"' in c and b'"tool"' in c)
    assert tool_done == 35.0  # 0.5 s start node + 34 s tool, seen at the next whole second
    assert provider(server).live_streams == 0


async def test_truncate_fault_ends_the_stream_early_and_releases_it() -> None:
    server = manual()
    body = {"inputs": {"prompt": "p"}, "user": "u", "response_mode": "streaming"}
    headers = {**AUTH, "X-Mock-Fault": "truncate:2"}
    response = await server.request("POST", RUN, json=body, headers=headers)
    seen = await collect(server, response, steps=40)
    assert len(seen) == 2 and b"workflow_finished" not in seen[-1][1]
    assert provider(server).live_streams == 0
    assert server.journal.entries(0)[-1].complete


async def test_admin_lists_runs_with_their_task_id() -> None:
    server = manual()
    data = (await blocking(server)).json_body()
    tasks = (await server.request("GET", "/__mock/tasks")).json_body()["tasks"]
    assert [(t["id"], t["state"], t["data"]["task_id"]) for t in tasks] == [
        (data["workflow_run_id"], "succeeded", data["task_id"])
    ]


async def test_the_documented_workflow_example_runs() -> None:
    docs = Path(__file__).parents[2] / "docs" / "providers" / "dify.md"
    match = re.search(r"```yaml\n(.*?)```", docs.read_text("utf-8"), re.S)
    assert match is not None
    server = manual()
    provider(server).use_workflow(yaml.safe_load(match.group(1)))
    data = (await blocking(server, {"inputs": {"prompt": "p"}, "user": "u"}, advance=100)).json_body()["data"]
    assert data["status"] == "succeeded"
    assert data["outputs"]["caption"] == "a caption" and data["outputs"]["version"] == 1
    assert len(data["outputs"]["files"]) == 2
    bad = await server.request(
        "POST", RUN, json={"inputs": {"prompt": "p", "size": "huge"}, "user": "u"}, headers=AUTH
    )
    assert envelope(bad, 400, "invalid_param").startswith("size in input form must be one of")


async def test_a_run_keeps_its_workflow_when_another_is_loaded() -> None:
    server = manual()
    pending = asyncio.ensure_future(server.request("POST", RUN, json=SEED_BODY, headers=AUTH))
    await settle()
    provider(server).use_workflow(slow_workflow(3.0))
    server.clock.advance(60)
    data = (await asyncio.wait_for(pending, 5)).json_body()["data"]
    assert data["workflow_id"] == Workflow.load().id
    assert data["total_tokens"] == 536 and len(data["outputs"]["files"]) == 1


async def test_upload_without_extension_goes_by_the_part_type() -> None:
    server = manual()
    response = await upload(server, ("file", "blob", "image/png", png_bytes()))
    assert response.status == 201 and response.json_body()["extension"] == "png"
    response = await upload(server, ("file", "blob", "application/x-unknown", b"?"))
    assert response.status == 415


async def test_any_non_empty_user_string_is_a_user() -> None:
    server = manual()
    response = await blocking(server, {"inputs": {"prompt": "p"}, "user": "\u00a0"})
    assert response.json_body()["data"]["status"] == "succeeded"


async def test_stop_wakes_a_waiting_stream_at_once(stream_reader: Any) -> None:
    server = manual()
    body = {"inputs": {"prompt": "p"}, "user": "u", "response_mode": "streaming"}
    response = await server.request("POST", RUN, json=body, headers={**AUTH, "X-Mock-Fault": "never_finish"})
    assert not isinstance(response.body, bytes)
    reader, chunks = stream_reader(response.body)
    await settle()
    server.clock.advance(1)
    await settle()
    assert b'"node_type": "tool"' in chunks[-1] and b"node_started" in chunks[-1]
    (task,) = list(server.tasks)
    assert provider(server).live_streams == 1
    stop = await server.request(
        "POST", f"/v1/workflows/tasks/{task.data['task_id']}/stop", json={"user": "u"}, headers=AUTH
    )
    assert stop.json_body() == {"result": "success"}
    await asyncio.wait_for(reader, 5)  # no clock advance: stop alone ends the stream
    last = json.loads(chunks[-1][len(b"data: "):])
    assert last["event"] == "workflow_finished" and last["data"]["status"] == "stopped"
    assert last["data"]["finished_at"] == int(server.clock.now())
    assert provider(server).live_streams == 0


async def test_a_known_path_asked_with_another_method_is_werkzeug_405_with_allow() -> None:
    # Regression (schemathesis ST204): werkzeug routes before the view authenticates.
    server = manual()
    for method, path, allow in [("TRACE", RUN, "OPTIONS, POST"), ("GET", RUN, "OPTIONS, POST"),
                                ("DELETE", "/v1/parameters", "GET, HEAD, OPTIONS")]:
        response = await server.request(method, path)
        assert response.status == 405, (method, path)
        assert response.headers["Allow"] == allow
        assert response.json_body() == {"code": "method_not_allowed", "status": 405,
                                        "message": "The method is not allowed for the requested URL."}
    unknown = await server.request("PUT", "/v1/nothing-here", headers=AUTH)
    assert unknown.status == 404 and unknown.json_body()["code"] == "not_found"


def test_the_stream_schema_takes_one_payload_or_one_parsed_sse_event() -> None:
    from imagegen_conformance.harness.rules._validate import body_validator

    validator = body_validator("dify", "runWorkflow", 200, "text/event-stream")
    assert validator is not None
    payload = {"event": "workflow_started", "task_id": "t", "workflow_run_id": "r", "data": {"id": "r"}}
    assert validator.issues(payload) == []
    # Schemathesis validates {event, data} with data as a string holding the payload.
    assert validator.issues({"event": "message", "data": json.dumps(payload)}) == []
    assert validator.issues({"event": "workflow_started", "data": "text"}) != []
    assert validator.issues({"event": "message", "data": {"id": "r"}}) != []
    schemas = yaml.safe_load((CONTRACT_DIR / "openapi.yaml").read_text())["components"]["schemas"]
    frame = schemas["StreamFrame"]
    data = frame["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    assert data["contentSchema"] == {"$ref": "#/components/schemas/StreamEvent"}


async def test_a_null_optional_input_is_left_out_and_conforms() -> None:
    # Regression (schemathesis ST201): Dify takes null for an optional variable.
    body = {"inputs": {"prompt": "a", "model_name": None}, "user": "u"}
    validator = contracts.request_validator("dify", "runWorkflow")
    assert validator is not None and validator.issues(body) == []
    assert validator.issues({**body, "inputs": {"prompt": "a", "model_name": 5}}) != []
    server = MockServer("dify", time_scale=1000.0, seed=1)
    response = await server.request("POST", RUN, json=body, headers=AUTH)
    assert response.status == 200
    assert response.json_body()["data"]["status"] == "succeeded"


@pytest.mark.parametrize("release", ["seed", "current"])
async def test_info_and_meta_come_from_the_workflow_file(release: str) -> None:
    """[V] service_api/app/app.py: /info and /meta, as flask-restful resources write them."""
    server = manual(options={"release": release})
    info = await server.request("GET", "/v1/info", headers=AUTH)
    expected: dict[str, Any] = {"name": "文生图", "description": "根据prompt生成图片"}
    if release == "current":
        expected.update({"tags": [], "mode": "workflow", "author_name": ""})
    assert info.status == 200 and info.json_body() == expected
    assert info.body == json.dumps(expected).encode() + b"\n"
    assert b"\\u6587\\u751f\\u56fe" in info.body  # json.dumps writes CJK as \uXXXX
    meta = await server.request("GET", "/v1/meta", headers=AUTH)
    assert meta.json_body() == {"tool_icons": {
        "stable_diffusion": "/console/api/workspaces/current/tool-provider/builtin/stablediffusion/icon",
    }}
    for operation, response in (("getAppInfo", info), ("getAppMeta", meta)):
        validator = contracts.response_validator("dify", operation, 200)
        assert validator is not None and validator.issues(response.json_body()) == []
    unauthorized = await server.request("GET", "/v1/info")
    assert envelope(unauthorized, 401, "unauthorized")


async def test_meta_names_each_tool_of_an_own_workflow() -> None:
    server = manual()
    provider(server).use_workflow({
        "name": "mine", "description": "two tools",
        "nodes": [
            {"id": "s", "type": "start"},
            {"id": "a", "type": "tool", "tool": {"provider_type": "builtin", "provider_id": "dalle",
                                                 "tool_name": "dalle3"}},
            {"id": "b", "type": "tool", "tool": {"provider_type": "api", "provider_id": "p1",
                                                 "tool_name": "mine", "icon": {"content": "x"}}},
            {"id": "c", "type": "tool", "tool": {"provider_type": "api", "provider_id": "p2",
                                                 "tool_name": "bare"}},
            {"id": "e", "type": "end"},
        ],
    })
    meta = (await server.request("GET", "/v1/meta", headers=AUTH)).json_body()
    assert meta == {"tool_icons": {
        "dalle3": "/console/api/workspaces/current/tool-provider/builtin/dalle/icon",
        "mine": {"content": "x"},
        "bare": {"background": "#252525", "content": "\U0001f601"},
    }}
    info = (await server.request("GET", "/v1/info", headers=AUTH)).json_body()
    assert info == {"name": "mine", "description": "two tools"}
    with pytest.raises(WorkflowError, match="tool must be"):
        Workflow.from_dict({"nodes": [{"id": "t", "type": "tool", "tool": {"provider_type": "x"}}]})


# --- a finished run's detail answer is kept (its links signed afresh) ---------------------


async def detail(server: MockServer, run_id: str) -> MockResponse:
    return await server.request("GET", f"/v1/workflows/run/{run_id}", headers=AUTH)


def without_links(response: MockResponse) -> bytes:
    return re.sub(rb"/files/tools/[^\"]*", b"LINK", response.body)


async def test_kept_detail_signs_new_links_each_answer_and_they_expire() -> None:
    server = manual()
    run_id = (await blocking(server)).json_body()["workflow_run_id"]
    first = await detail(server, run_id)
    server.clock.advance(250)
    second = await detail(server, run_id)
    assert without_links(first) == without_links(second)  # the rest of the answer is the same
    urls = [r.json_body()["outputs"]["files"][0]["url"] for r in (first, second)]
    (path, old), (path2, new) = split_url(urls[0]), split_url(urls[1])
    assert path == path2 and old["nonce"] != new["nonce"]
    assert int(new["timestamp"]) == int(server.clock.now())  # signed now, not when first kept
    server.clock.advance(100)  # the first link is 350 s old, the second 100 s
    assert (await server.request("GET", path, query=old)).status == 403
    assert (await server.request("GET", path, query=new)).status == 200


async def test_kept_detail_follows_the_link_lifetime_option_and_the_expired_url_fault() -> None:
    server = manual(options={"files_access_timeout": "3600"})
    run_id = (await blocking(server)).json_body()["workflow_run_id"]
    await detail(server, run_id)
    server.clock.advance(10)
    path, query = split_url((await detail(server, run_id)).json_body()["outputs"]["files"][0]["url"])
    server.clock.advance(900)
    assert (await server.request("GET", path, query=query)).status == 200
    dead = manual()
    run_id = (await blocking(dead, headers={"X-Mock-Fault": "expired_url"})).json_body()["workflow_run_id"]
    for _ in range(2):  # the run's fault applies to every answer, the kept one too
        path, query = split_url((await detail(dead, run_id)).json_body()["outputs"]["files"][0]["url"])
        assert (await dead.request("GET", path, query=query)).status == 403


async def test_kept_detail_changes_with_the_options() -> None:
    server = manual()
    run_id = (await blocking(server)).json_body()["workflow_run_id"]
    seed = (await detail(server, run_id)).json_body()
    assert seed["outputs"]["files"][0]["__variant"] == "FileVar" and seed["total_steps"] == 5
    server.options["release"] = "current"
    server.options["total_steps"] = "nodes"
    current = (await detail(server, run_id)).json_body()
    assert current["outputs"]["files"][0]["dify_model_identity"] == "__dify__file__"
    assert current["total_steps"] == 3
    server.options["file_urls"] = "absolute"
    url = (await detail(server, run_id)).json_body()["outputs"]["files"][0]["url"]
    assert url.startswith("http://127.0.0.1/files/tools/")


async def test_kept_detail_of_a_failed_run_and_after_a_reset() -> None:
    server = manual()
    failed = await blocking(server, headers={"X-Mock-Fault": "task_fail:node"})
    run_id = failed.json_body()["workflow_run_id"]
    for _ in range(2):
        body = (await detail(server, run_id)).json_body()
        assert body["status"] == "failed" and body["outputs"] == {} and body["error"]
    server.reset()
    assert (await detail(server, run_id)).status == 404
