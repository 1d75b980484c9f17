"""yunyx (SiliconFlow-style) mock, in process: contract, validation, Go-escaped bodies, links, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from openapi_spec_validator import validate
from PIL import Image

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import FaultSpec, MockResponse
from imagegen_conformance.mocks.yunyx import YunyxProvider, go_json

AUTH = {"Authorization": "Bearer yunyx-key"}
PATH = "/v1/images/generations"
# The seed's Python example body, verbatim.
SEED_BODY = {
    "model": "FLUX.1-schnell",
    "prompt": "an island near sea, with seagulls, moon shining over the sea, light house, boats in the "
    "background, fish flying over the sea",
    "image_size": "1024x1024",
    "prompt_enhancement": True,
}
SIZES = contracts.load("yunyx").behaviour.raw["image_sizes"]


S3 = {"links": "s3"}


def manual(**kwargs: Any) -> MockServer:
    return MockServer("yunyx", clock="manual", seed=1, **kwargs)


async def generate(server: MockServer, body: dict[str, Any], *, advance: float = 15.0,
                   **headers: str) -> MockResponse:
    """POST a generation; the call is held for the inference time, so let the clock pass it."""
    pending = asyncio.ensure_future(server.request("POST", PATH, json=body, headers={**AUTH, **headers}))
    await asyncio.sleep(0.01)
    if not pending.done():
        server.clock.advance(advance)
    response = await asyncio.wait_for(pending, 5)
    assert server.errors == []
    return response


def fault(spec: str) -> dict[str, str]:
    return {**AUTH, "X-Mock-Fault": spec}


def xml(response: MockResponse) -> bytes:
    return bytes(response.body)  # type: ignore[arg-type]


def check(response: MockResponse, status: int) -> Any:
    """Status, content type, and the body against the contract's schema for that status."""
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(bytes(response.body))  # type: ignore[arg-type]
    validator = contracts.response_validator("yunyx", "generateImages", status)
    assert validator is not None and validator.issues(body) == []
    return body


async def download(server: MockServer, url: str) -> MockResponse:
    parts = urlsplit(url)
    return await server.request("GET", parts.path, query=dict(parse_qsl(parts.query)))


# --- the contract ------------------------------------------------------------------------


def test_openapi_is_valid_and_every_routed_operation_is_in_it() -> None:
    contract = contracts.load("yunyx")
    validate(dict(contract.openapi))
    routed = {r.operation for r in YunyxProvider.routes()}
    assert routed == {"generateImages", "getImageFile", "headImageFile"}
    assert routed <= set(contract.operations)


def test_siliconflow_is_an_alias_of_yunyx() -> None:
    assert contracts.load("siliconflow") == contracts.load("yunyx")
    server = MockServer("siliconflow")
    assert server.provider_id == "yunyx" and isinstance(server.provider, YunyxProvider)


def test_scenarios_parse_and_their_requests_fit_the_schema_unless_meant_to_fail() -> None:
    validator = contracts.request_validator("yunyx", "generateImages")
    assert validator is not None
    for scenario in contracts.load("yunyx").scenarios:
        for fault in scenario.faults:
            FaultSpec.parse(fault)
        # A request the scenario expects to be refused with 400 breaks the schema; others fit it.
        invalid = scenario.expect.error_status == 400
        assert bool(validator.issues(dict(scenario.request))) is invalid, scenario.id


# --- the seed's request, and the answer --------------------------------------------------


async def test_seed_request_answers_images_and_the_captured_keys() -> None:
    server = manual()
    response = await generate(server, SEED_BODY)
    body = check(response, 200)
    assert set(body) == {"images", "data", "timings", "seed", "shared_id", "created"}
    assert len(body["images"]) == 1 and body["data"] == body["images"]
    assert body["shared_id"] == "0" and body["created"] == int(server.clock.now())
    expires = dict(parse_qsl(urlsplit(body["images"][0]["url"]).query))["Expires"]
    assert int(expires) == body["created"] + 3600  # [V-3p] Expires = created + 3600
    assert 1.0 <= body["timings"]["inference"] <= 3.0  # FLUX.1-schnell's drawn inference time
    assert 0 <= body["seed"] <= 9_999_999_999
    assert response.headers["x-siliconcloud-trace-id"]
    image = await download(server, body["images"][0]["url"])
    assert image.status == 200 and image.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(bytes(image.body))).size == (1024, 1024)


async def test_response_body_seed_option_sends_the_seeds_keys_only() -> None:
    body = check(await generate(manual(options={"response_body": "seed"}), SEED_BODY), 200)
    assert set(body) == {"images", "timings", "seed"}


async def test_oss_links_by_default() -> None:
    raw = bytes((await generate(manual(), SEED_BODY)).body)  # type: ignore[arg-type]
    assert b"&" not in raw
    assert raw.count(b"\\u0026") == 4  # two links (images, data), each with three parameters
    url = json.loads(raw)["images"][0]["url"]
    parts = urlsplit(url)
    name = parts.path.removeprefix("/outputs/")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}_0\.png", name)
    assert list(dict(parse_qsl(parts.query))) == ["OSSAccessKeyId", "Expires", "Signature"]


async def test_raw_body_writes_ampersands_as_u0026() -> None:
    raw = bytes((await generate(manual(options=S3), SEED_BODY)).body)  # type: ignore[arg-type]
    assert b"&" not in raw
    assert raw.count(b"\\u0026") == 10  # six X-Amz-* parameters joined by five &, in two links
    url = json.loads(raw)["images"][0]["url"]
    query = dict(parse_qsl(urlsplit(url).query))
    assert set(query) == {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                          "X-Amz-SignedHeaders", "X-Amz-Signature"}
    assert query["X-Amz-Expires"] == "3600"


def test_go_json_escapes_like_go() -> None:
    assert go_json({"u": "a&b<c>d\u2028e\u2029", "n": 1, "k": "中文"}) == (
        '{"u":"a\\u0026b\\u003cc\\u003ed\\u2028e\\u2029","n":1,"k":"中文"}'.encode()
    )


async def test_call_is_held_for_the_inference_time() -> None:
    server = manual()
    pending = asyncio.ensure_future(server.request(
        "POST", PATH, json={**SEED_BODY, "model": "stable-diffusion-3-5-large"}, headers=AUTH))
    await asyncio.sleep(0.01)
    server.clock.advance(4.9)  # stable-diffusion-3-5-large draws 5-12 s
    await asyncio.sleep(0.01)
    assert not pending.done()
    server.clock.advance(8)
    body = check(await asyncio.wait_for(pending, 5), 200)
    assert 5.0 <= body["timings"]["inference"] <= 12.0


@pytest.mark.parametrize("size", SIZES)
async def test_every_seed_size_gives_an_image_of_that_size(size: str) -> None:
    server = manual()
    body = check(await generate(server, {"prompt": "x", "image_size": size}), 200)
    image = await download(server, body["images"][0]["url"])
    width, height = (int(v) for v in size.split("x"))
    assert Image.open(io.BytesIO(bytes(image.body))).size == (width, height)


async def test_defaults_model_and_size_and_echoes_a_given_seed() -> None:
    server = manual()
    body = check(await generate(server, {"prompt": "x", "seed": 9_999_999_999}), 200)
    assert body["seed"] == 9_999_999_999
    image = await download(server, body["images"][0]["url"])
    assert Image.open(io.BytesIO(bytes(image.body))).size == (1024, 1024)
    again = check(await generate(server, {"prompt": "x", "seed": 9_999_999_999}), 200)
    same = await download(server, again["images"][0]["url"])
    assert same.body == image.body  # same prompt and seed, same image


async def test_upstream_optional_fields_are_accepted_and_batch_size_counts() -> None:
    server = manual()
    body = check(await generate(server, {
        "prompt": "x", "negative_prompt": "blur", "batch_size": 4, "num_inference_steps": 100,
        "guidance_scale": 0, "seed": 0, "prompt_enhancement": False,
    }), 200)
    assert len(body["images"]) == 4 and body["seed"] == 0
    images = [bytes((await download(server, i["url"])).body) for i in body["images"]]  # type: ignore[arg-type]
    assert len(set(images)) == 4


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"prompt": None}, id="prompt-missing"),
        pytest.param({"prompt": ""}, id="prompt-empty"),
        pytest.param({"prompt": ["a"]}, id="prompt-not-string"),
        pytest.param({"model": 7}, id="model-not-string"),
        pytest.param({"image_size": "1000x1000"}, id="size-not-in-the-six"),
        pytest.param({"image_size": "1024*1024"}, id="size-wrong-separator"),
        pytest.param({"image_size": 1024}, id="size-not-string"),
        pytest.param({"prompt_enhancement": "yes"}, id="enhancement-not-boolean"),
        pytest.param({"seed": -1}, id="seed-negative"),
        pytest.param({"seed": 10_000_000_000}, id="seed-too-big"),
        pytest.param({"seed": 1.5}, id="seed-fraction"),
        pytest.param({"seed": "42"}, id="seed-string"),
        pytest.param({"negative_prompt": 3}, id="negative-prompt-not-string"),
        pytest.param({"batch_size": 0}, id="batch-size-zero"),
        pytest.param({"batch_size": 5}, id="batch-size-five"),
        pytest.param({"num_inference_steps": 0}, id="steps-zero"),
        pytest.param({"num_inference_steps": 101}, id="steps-101"),
        pytest.param({"guidance_scale": 20.5}, id="guidance-above-20"),
        pytest.param({"guidance_scale": -0.1}, id="guidance-negative"),
    ],
)
async def test_every_validation_rule_gets_a_400_code_message_data(change: dict[str, Any]) -> None:
    server = manual()
    body = {k: v for k, v in {**SEED_BODY, **change}.items() if v is not None}
    response = await server.request("POST", PATH, json=body, headers=AUTH)
    error = check(response, 400)
    assert error["code"] == 20015 and error["message"] == "The parameter is invalid. Please check again."
    field = next(iter(change))
    assert field in error["data"]


@pytest.mark.parametrize(
    "body",
    [pytest.param(b"", id="empty"), pytest.param(b"{nope", id="not-json"),
     pytest.param(b'"just a string"', id="string"), pytest.param(b"\xff", id="not-utf8")],
)
async def test_bad_bodies_get_a_400(body: bytes) -> None:
    error = check(await manual().request("POST", PATH, body=body, headers=AUTH), 400)
    assert error["code"] == 20015 and error["data"]


async def test_unknown_model_gets_the_seeds_404_bare_string() -> None:
    body = {**SEED_BODY, "model": "FLUX.2-ultra"}
    response = await manual().request("POST", PATH, json=body, headers=AUTH)
    assert check(response, 404) == "Model does not exist. Please check it carefully."


async def test_unknown_model_can_answer_siliconflows_400_20012() -> None:
    server = manual(options={"unknown_model": "400"})
    response = await server.request("POST", PATH, json={**SEED_BODY, "model": "nope"}, headers=AUTH)
    assert check(response, 400) == {
        "code": 20012, "message": "Model does not exist. Please check it carefully.", "data": None,
    }


async def test_model_can_be_required() -> None:
    body = {"prompt": "x"}
    assert check(await generate(manual(), body), 200)
    response = await manual(options={"model_required": "true"}).request("POST", PATH, json=body, headers=AUTH)
    assert check(response, 400)["data"] == "model is required"


# --- link expiry -------------------------------------------------------------------------


async def test_link_stops_working_one_hour_after_issue() -> None:
    server = manual()
    url = check(await generate(server, SEED_BODY), 200)["images"][0]["url"]
    server.clock.advance(3590)
    assert (await download(server, url)).status == 200
    server.clock.advance(20)
    expired = await download(server, url)
    assert expired.status == 403 and expired.headers["Content-Type"] == "application/xml"
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in xml(expired)


async def test_head_on_a_link_gives_its_headers_only() -> None:
    server = manual()
    parts = urlsplit(check(await generate(server, SEED_BODY), 200)["images"][0]["url"])
    query = dict(parse_qsl(parts.query))
    head = await server.request("HEAD", parts.path, query=query)
    full = await server.request("GET", parts.path, query=query)
    assert head.status == 200 and head.body == b"" and head.headers["Content-Type"] == "image/png"
    assert int(head.headers["Content-Length"]) == len(xml(full))


async def test_expired_url_fault_gives_links_already_expired() -> None:
    server = manual()
    body = check(await generate(server, SEED_BODY, **{"X-Mock-Fault": "expired_url"}), 200)
    assert (await download(server, body["images"][0]["url"])).status == 403


@pytest.mark.parametrize(
    ("options", "tamper", "status", "code"),
    [
        pytest.param(S3, lambda q: q.update({"X-Amz-Expires": "999999"}), 403, "SignatureDoesNotMatch",
                     id="s3-extended-expiry"),
        pytest.param(S3, lambda q: q.update({"X-Amz-Signature": "00"}), 403, "SignatureDoesNotMatch",
                     id="s3-bad-signature"),
        pytest.param(S3, lambda q: q.pop("X-Amz-Signature"), 403, "AccessDenied", id="s3-no-signature"),
        pytest.param(S3, lambda q: q.clear(), 403, "AccessDenied", id="s3-query-dropped"),
        pytest.param({}, lambda q: q.update({"Expires": str(int(q["Expires"]) + 86400)}), 403,
                     "SignatureDoesNotMatch", id="oss-extended-expiry"),
        pytest.param({}, lambda q: q.update({"Signature": "AAAA"}), 403, "SignatureDoesNotMatch",
                     id="oss-bad-signature"),
        pytest.param({}, lambda q: q.update({"OSSAccessKeyId": "LTAI5tother"}), 403,
                     "SignatureDoesNotMatch", id="oss-other-key"),
        pytest.param({}, lambda q: q.pop("Signature"), 403, "AccessDenied", id="oss-no-signature"),
        pytest.param({}, lambda q: q.clear(), 403, "AccessDenied", id="oss-query-dropped"),
    ],
)
async def test_tampered_links_are_refused(options: dict[str, str], tamper: Any, status: int,
                                          code: str) -> None:
    server = manual(options=options)
    url = check(await generate(server, SEED_BODY), 200)["images"][0]["url"]
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    tamper(query)
    response = await server.request("GET", parts.path, query=query)
    assert response.status == status and f"<Code>{code}</Code>".encode() in xml(response)


async def test_a_link_read_with_the_escape_left_in_fails() -> None:
    # A client that keeps the literal "\u0026" (e.g. grepping the raw body) gets no image.
    server = manual()
    raw = bytes((await generate(server, SEED_BODY)).body)  # type: ignore[arg-type]
    literal = raw.decode().split('"url":"')[1].split('"')[0]
    assert (await download(server, literal)).status == 403


async def test_unknown_key_and_wrong_extension_are_404_no_such_key() -> None:
    server = manual(options=S3)
    url = check(await generate(server, SEED_BODY), 200)["images"][0]["url"]
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    response = await server.request("GET", parts.path.replace(".png", ".jpeg"), query=query)
    assert response.status == 404 and b"NoSuchKey" in xml(response)


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(400, {"code": 20015, "message": "The parameter is invalid. Please check again.",
                           "data": None}, id="400"),
        pytest.param(401, "Invalid token", id="401"),
        pytest.param(403, "Forbidden", id="403"),
        pytest.param(404, "404 page not found", id="404"),
        pytest.param(500, {"code": 50000, "message": "Internal server error.", "data": None}, id="500"),
        pytest.param(504, "Gateway Timeout", id="504"),
    ],
)
async def test_http_faults_answer_each_status_in_its_own_shape(status: int, expected: Any) -> None:
    response = await manual().request("POST", PATH, json=SEED_BODY, headers=fault(f"http:{status}"))
    assert check(response, status) == expected


async def test_429_has_no_code_and_503_is_50505() -> None:
    server = manual()
    limited = check(await server.request("POST", PATH, json=SEED_BODY,
                                         headers=fault("rate_limit:2")), 429)
    assert "code" not in limited
    assert limited["message"].startswith("Request was rejected due to rate limiting.")
    assert isinstance(limited["data"], str)
    busy = check(await server.request("POST", PATH, json=SEED_BODY, headers=fault("http:503")), 503)
    assert busy["code"] == 50505 and busy["message"] == "Model service overloaded. Please try again later."
    also = check(await server.request("POST", PATH, json=SEED_BODY, headers=fault("http:429")), 429)
    assert "code" not in also


async def test_http_fault_can_name_a_numeric_code() -> None:
    response = await manual().request("POST", PATH, json=SEED_BODY, headers=fault("http:400:20012"))
    assert check(response, 400)["code"] == 20012


@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="missing"), pytest.param({"Authorization": "yunyx-key"}, id="no-bearer"),
     pytest.param({"Authorization": "Bearer wrong"}, id="unknown-key")],
)
async def test_bad_keys_get_401_invalid_token(headers: dict[str, str]) -> None:
    server = manual(api_keys=["yunyx-key"])
    assert check(await server.request("POST", PATH, json=SEED_BODY, headers=headers), 401) == "Invalid token"


async def test_unknown_path_and_method_get_404_page_not_found() -> None:
    # [I] Go's router answers an unmatched method like an unknown path unless told otherwise.
    server = manual()
    for method, path in (("POST", "/v1/images/generation"), ("GET", PATH), ("TRACE", PATH)):
        assert check(await server.request(method, path, headers=AUTH), 404) == "404 page not found"


async def test_configured_rate_limit_answers_429_with_retry_after() -> None:
    server = manual(rate_limit="contract")  # 2 images per minute [I]
    running = [asyncio.ensure_future(server.request("POST", PATH, json=SEED_BODY, headers=AUTH))
               for _ in range(2)]
    await asyncio.sleep(0.01)
    response = await server.request("POST", PATH, json=SEED_BODY, headers=AUTH)
    assert "code" not in check(response, 429)
    assert int(response.headers["Retry-After"]) > 0
    server.clock.advance(15)
    assert [r.status for r in await asyncio.gather(*running)] == [200, 200]


async def test_huge_body_is_a_400() -> None:
    body = b'{"prompt":"' + b"x" * 1_100_000 + b'"}'
    error = check(await manual().request("POST", PATH, body=body, headers=AUTH), 400)
    assert "exceeds" in error["data"]


async def test_task_fail_answers_503_and_never_finish_504_after_the_timeout() -> None:
    server = manual()
    assert check(await generate(server, SEED_BODY, **{"X-Mock-Fault": "task_fail"}), 503)["code"] == 50505
    pending = asyncio.ensure_future(
        server.request("POST", PATH, json=SEED_BODY, headers=fault("never_finish"))
    )
    await asyncio.sleep(0.01)
    server.clock.advance(299)
    await asyncio.sleep(0.01)
    assert not pending.done()
    server.clock.advance(1)
    assert check(await asyncio.wait_for(pending, 5), 504) == "Gateway Timeout"


async def test_malformed_fault_answers_broken_json() -> None:
    response = await generate(manual(), SEED_BODY, **{"X-Mock-Fault": "malformed"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(bytes(response.body))  # type: ignore[arg-type]


async def test_siliconflow_alias_is_the_contracts_variant() -> None:
    # aliases.siliconflow in behaviour.yaml: option defaults, host, models and the 400 code.
    server = MockServer("siliconflow", clock="manual", seed=1)
    assert (server.name, server.provider_id) == ("siliconflow", "yunyx")
    assert server.options["unknown_model"] == "400" and server.options["model_required"] == "true"
    assert server.base_url_for("api") == "https://api.siliconflow.cn"
    body = check(await generate(server, {"model": "Qwen/Qwen-Image", "prompt": "x"}), 200)
    image = await download(server, body["data"][0]["url"])
    assert Image.open(io.BytesIO(bytes(image.body))).size == (1328, 1328)  # the model's first size
    refused = check(await generate(server, {"model": "Qwen/Qwen-Image", "prompt": "x",
                                            "image_size": "1024x1024"}), 400)
    assert refused["code"] == 20012 and "1328x1328" in refused["data"]
    # Given options still win over the alias's defaults.
    assert MockServer("siliconflow", options={"unknown_model": "404"}).options["unknown_model"] == "404"


def test_an_alias_option_default_must_be_declared(tmp_path: Any) -> None:
    from imagegen_conformance.contracts import ContractError, Option
    from imagegen_conformance.contracts._loader import _check_variants

    behaviour = contracts.load("yunyx").behaviour
    raw = {**behaviour.raw, "aliases": {"other": {"options": {"links": "ftp"}}}}
    broken = dataclasses.replace(behaviour, raw=raw, aliases=("other",))
    with pytest.raises(ContractError, match=r"aliases\.other\.options\.links: 'ftp' is not one of oss, s3"):
        _check_variants(tmp_path / "behaviour.yaml", broken)
    assert isinstance(behaviour.options["links"], Option)
