"""Signed links cannot be forged from public inputs, and a valid-looking one cannot demand much.

The signing key is random per server unless a secret is given; ``--seed`` repeats ids,
durations and images but never the key. A token is checked field by field (size, format,
lifetime) and a signature with a non-ASCII character is a bad signature, not a crash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest

from imagegen_conformance.harness.cli._serve_cmd import ServeConfig, build_servers
from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import ImageSpec, ImageTokenError, ImageTokens
from imagegen_conformance.mocks.engine._images import MAX_LIFETIME, MAX_SIDE, MAX_TOKEN

from .conftest import raw_get, raw_request

SEED = 1234
CLOUDSWAY_AUTH = {"Authorization": "Bearer k"}


def _old_key(seed: int) -> bytes:
    """How the key used to be made: from the seed alone, so anyone could make it."""
    return hashlib.sha256(f"imagegen-conformance:{seed}".encode()).digest()


def _token(key: bytes, fields: list[Any]) -> str:
    """A token with these fields, signed with ``key`` as the engine signs."""
    body = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(key, body, hashlib.sha256).digest()[:16]).rstrip(b"=")
    return f"{body.decode()}.{mac.decode()}"


async def _cloudsway_link(server: MockServer) -> str:
    created = await server.request("POST", "/v2/ai/x/images/generations", headers=CLOUDSWAY_AUTH,
                                   json={"prompts": "p", "aspect_ratio": "1:1", "step": 4})
    task_id = created.json_body()["taskId"]
    server.clock.advance(60)  # type: ignore[attr-defined]
    polled = await server.request("GET", f"/v2/ai/x/images/tasks/{task_id}", headers=CLOUDSWAY_AUTH)
    return str(polled.json_body()["imageUrls"][0])


async def _dify_link(server: MockServer) -> str:
    job = asyncio.ensure_future(server.request(
        "POST", "/v1/workflows/run", headers={"Authorization": "Bearer app-k"},
        json={"inputs": {"prompt": "p"}, "response_mode": "blocking", "user": "u"}))
    for _ in range(200):
        if job.done():
            break
        server.clock.advance(5)  # type: ignore[attr-defined]
        await asyncio.sleep(0.005)
    return str((await job).json_body()["data"]["outputs"]["files"][0]["url"])


def test_the_seed_repeats_ids_and_images_but_not_the_key() -> None:
    one, two = MockServer("cloudsway", seed=SEED), MockServer("cloudsway", seed=SEED)
    assert one.secret != two.secret and one.secret != _old_key(SEED)
    assert one.rng.random() == two.rng.random()
    spec = ImageSpec.of(64, 64, prompt="p", seed=SEED)
    assert one.images.issue(spec) != two.images.issue(spec)
    # A given secret is the same key in every server and process that is given it.
    shared = [MockServer("dify", seed=SEED, signing_secret="team-secret") for _ in range(2)]
    assert shared[0].secret == shared[1].secret != _old_key(SEED)
    with pytest.raises(ValueError, match="empty"):
        MockServer("cloudsway", signing_secret="")


def test_serve_passes_the_signing_secret_on() -> None:
    servers = build_servers(ServeConfig(["cloudsway", "dify"], seed=SEED, signing_secret="s3cret"))
    assert servers[0].secret == servers[1].secret == MockServer("fal", signing_secret="s3cret").secret


async def test_links_forged_with_the_seed_are_refused(serve_mock: Any) -> None:
    # The attack: a 4096x4096 image token valid for 31 years, and a Dify link signed 31 years
    # ahead, both signed with the key the seed used to give.
    key, ahead = _old_key(SEED), 31 * 365 * 86_400
    cloudsway = await serve_mock("cloudsway", clock="manual", seed=SEED)
    now = int(cloudsway.server.clock.now())
    forged = _token(key, [MAX_SIDE, MAX_SIDE, "png", 0, 0, "0" * 12, now + ahead])
    assert (await raw_request(cloudsway.url, raw_get(f"/images/{forged}.png"))).status == 404
    real = await _cloudsway_link(cloudsway.server)
    assert (await raw_request(cloudsway.url, raw_get(urlsplit(real).path))).status == 200

    dify = await serve_mock("dify", clock="manual", seed=SEED)
    link = urlsplit(await _dify_link(dify.server))
    query = dict(parse_qsl(link.query))
    file_id = link.path.rsplit("/", 1)[1].split(".")[0]
    timestamp = str(int(dify.server.clock.now()) + ahead)
    message = f"file-preview|{file_id}|{timestamp}|{query['nonce']}".encode()
    sign = base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    forged_query = urlencode({**query, "timestamp": timestamp, "sign": sign})
    answer = await raw_request(dify.url, raw_get(f"{link.path}?{forged_query}"))
    assert answer.status == 403 and json.loads(answer.body)["code"] == "forbidden"
    assert (await raw_request(dify.url, raw_get(f"{link.path}?{link.query}"))).status == 200
    assert cloudsway.server.errors == dify.server.errors == []


def test_a_dify_link_signed_in_the_future_is_refused_even_with_the_right_key() -> None:
    server = MockServer("dify", clock="manual", seed=SEED)
    provider: Any = server.provider
    now = server.clock.now()
    for timestamp, ok in ((now, True), (now - 299, True), (now - 302, False), (now + 30, True),
                          (now + 3_600, False)):
        stamp, nonce = str(int(timestamp)), "n"
        request = provider_request(server, stamp, nonce, provider._sign("f", stamp, nonce))
        assert (provider._verify(request, "f", now) is None) is ok, (timestamp - now)


def provider_request(server: MockServer, timestamp: str, nonce: str, sign: str) -> Any:
    from imagegen_conformance.mocks import MockRequest

    return MockRequest.build("GET", "/files/tools/f.png",
                             query={"timestamp": timestamp, "nonce": nonce, "sign": sign})


@pytest.mark.parametrize(("fields", "why"), [
    pytest.param([MAX_SIDE + 1, 64, "png", 0, 0, "h"], "malformed", id="wider-than-max"),
    pytest.param([64, 0, "png", 0, 0, "h"], "malformed", id="zero-height"),
    pytest.param([64, 64, "bmp", 0, 0, "h"], "malformed", id="unknown-format"),
    pytest.param([64.5, 64, "png", 0, 0, "h"], "malformed", id="float-size"),
    pytest.param([64, 64, "png", "0", 0, "h"], "malformed", id="string-seed"),
    pytest.param([64, 64, "png", 0, 0], "malformed", id="too-few-fields"),
    pytest.param({"w": 64}, "malformed", id="not-a-list"),
    pytest.param([64, 64, "png", 0, 0, "h", 100 + MAX_LIFETIME + 1], "lifetime", id="beyond-max-lifetime"),
])
def test_a_well_signed_token_is_still_checked_field_by_field(fields: Any, why: str) -> None:
    tokens = ImageTokens(b"k" * 32)
    with pytest.raises(ImageTokenError, match=why):
        tokens.open(_token(tokens._secret, fields), now=100.0)


def test_an_overlong_token_is_refused_before_any_work() -> None:
    tokens = ImageTokens(b"k" * 32)
    with pytest.raises(ImageTokenError, match="malformed"):
        tokens.open("A" * (MAX_TOKEN + 1), now=0.0)
    assert tokens.open(_token(tokens._secret, [8, 8, "png", 0, 0, "h", 200]), now=100.0).width == 8


SIGNATURES = ["%C3%A9", "%E2%82%AC%E2%82%AC", "%F0%9F%98%80", "%ED%A0%80", "%FF"]


@pytest.mark.parametrize(("provider", "prefix"), [
    ("cloudsway", "/images/"), ("acedata", "/images/"), ("fal", "/files/")])
async def test_a_non_ascii_signature_is_a_bad_signature(
    provider: str, prefix: str, serve_mock: Any
) -> None:
    running = await serve_mock(provider, clock="manual", seed=3)
    base = running.role_url("queue") if provider == "fal" else running.url
    for signature in SIGNATURES:
        answer = await raw_request(base, raw_get(f"{prefix}abc.{signature}.png"))
        assert answer.status == 404, (signature, answer.status, answer.body[:200])
    assert running.server.errors == []
    # Still serving: a real link downloads.
    if provider == "cloudsway":
        link = await _cloudsway_link(running.server)
        assert (await raw_request(base, raw_get(urlsplit(link).path))).status == 200


async def test_dify_and_yunyx_refuse_non_ascii_signatures_and_timestamps(serve_mock: Any) -> None:
    dify = await serve_mock("dify", clock="manual", seed=3)
    for query in ({"timestamp": "1", "nonce": "n", "sign": "\u00e9"},
                  {"timestamp": "\u00b2\u00b3", "nonce": "n", "sign": "x"},
                  {"timestamp": "9" * 400, "nonce": "n", "sign": "x"}):
        answer = await raw_request(dify.url, raw_get(f"/files/tools/f.png?{urlencode(query)}"))
        assert answer.status == 403, (query, answer.body[:200])
    yunyx = await serve_mock("yunyx", clock="manual", seed=3)
    query = "&".join(f"{n}=x" for n in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                                        "X-Amz-Expires", "X-Amz-SignedHeaders"))
    answer = await raw_request(yunyx.url, raw_get(f"/outputs/a.png?{query}&X-Amz-Signature="
                                                  + quote("\u00e9")))
    assert answer.status == 403
    assert dify.server.errors == yunyx.server.errors == []


def test_a_seed_beyond_64_bits_still_makes_a_short_token_of_its_own() -> None:
    tokens = ImageTokens(b"k" * 32)
    huge, other = int("9" * 4_000), int("9" * 3_999)
    spec = ImageSpec.of(64, 64, seed=huge)
    token = tokens.issue(spec)
    assert len(token) < 200 and tokens.open(token, now=0.0) == spec
    assert spec.seed != ImageSpec.of(64, 64, seed=other).seed
    assert ImageSpec.of(64, 64, seed=2**63 - 1).seed == 2**63 - 1
