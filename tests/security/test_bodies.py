"""Hostile JSON bodies get each provider's own refusal, never a handler crash or invalid JSON.

The engine parses every body in one place (``mocks.engine.loads``): NaN and Infinity are not
JSON, a number a double cannot hold (``1e400``) or an integer longer than Python converts
(5,000 digits: int() gives up at 4,300 with an error of its own) is out of range, and nesting
beyond ``MAX_DEPTH`` (100,000 deep was a RecursionError) is refused before anything walks it.
Narrower ranges are the contracts': a 4,000-digit integer is JSON, and each provider answers
it as its schema says (Cloudsway's seed is a 64-bit integer). Raw sockets: the bodies go out
byte for byte as written.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from imagegen_conformance.mocks import MockRequest, MockServer, start
from imagegen_conformance.mocks.engine import MAX_DEPTH, BodyError, dumps, loads
from imagegen_conformance.mocks.engine._body import Body

from .conftest import raw_request, rss_mb

# provider, role, path, auth, body template (%s: the hostile value), operation
TARGETS = [
    ("cloudsway", "api", "/v2/ai/x/images/generations", "Bearer k",
     '{"prompts": "p", "aspect_ratio": "1:1", "seed": %s}', "createImageTask"),
    ("acedata", "api", "/flux/images", "Bearer k",
     '{"action": "generate", "prompt": "p", "model": "flux-dev", "size": "512x512", "count": %s}',
     "createFluxImages"),
    ("fal", "queue", "/fal-ai/flux-1/dev", "Key k", '{"prompt": "p", "guidance_scale": %s}',
     "submitRequest"),
    ("fal", "run", "/fal-ai/flux-1/dev", "Key k", '{"prompt": "p", "seed": %s}', "runSync"),
    ("yunyx", "api", "/v1/images/generations", "Bearer k",
     '{"model": "FLUX.1-schnell", "prompt": "p", "image_size": "768x512", "seed": %s}',
     "generateImages"),
    ("dify", "api", "/v1/workflows/run", "Bearer app-k",
     '{"inputs": {"prompt": %s}, "response_mode": "blocking", "user": "u"}', "runWorkflow"),
]
HOSTILE = {
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e400": "1e400",
    "5000-digits": "1" * 5_000,
    "nested-100000": "[" * 100_000 + "]" * 100_000,
    "nested-65": "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
}


def _strict(text: bytes) -> Any:
    """Parse as RFC 8259 JSON: a bare NaN or Infinity fails."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"the mock wrote {name}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


def _http(head: str, body: bytes) -> bytes:
    return (head + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


async def _result_of_fal(server: MockServer, url: str, answer: Any) -> Any:
    """fal accepts every queue submission and fails it at the result (422): fetch that."""
    path = answer["response_url"].split("://", 1)[1].split("/", 1)[1]
    for _ in range(500):
        got = await raw_request(url, (f"GET /{path} HTTP/1.1\r\nHost: {{host}}\r\n"
                                      "Authorization: Key k\r\nConnection: close\r\n\r\n").encode())
        if got.status != 400:  # 400: still in progress
            return got
        await asyncio.sleep(0.02)
    raise AssertionError("the fal request never finished")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("provider", "role", "path", "auth", "template", "operation"), TARGETS,
                         ids=[f"{t[0]}-{t[1]}" for t in TARGETS])
async def test_hostile_numbers_and_nesting_get_the_providers_refusal(
    provider: str, role: str, path: str, auth: str, template: str, operation: str
) -> None:
    # 1,000x: a synchronous generation (and fal's queue) ends in milliseconds.
    server = MockServer(provider, time_scale=1_000.0, seed=31)
    served = await start([server], ports={provider: 0})
    url = served.url(provider, role)
    head = f"POST {path} HTTP/1.1\r\nHost: {{host}}\r\nAuthorization: {auth}\r\n"
    before = rss_mb()
    try:
        for name, value in HOSTILE.items():
            body = (template % value).encode()
            with pytest.raises(BodyError) as parsed:
                loads(body)
            request = MockRequest.build("POST", path, role=role, body=body)
            own = server.provider.refuse(request, Body(operation, "json", error=parsed.value))
            got = await raw_request(url, _http(head, body))
            assert got.headers.get("x-mock-error") != "handler-crashed", (name, got.body[:300])
            answer = _strict(got.body)
            if own is None:  # fal's queue: accepted, failed at the result
                assert got.status == 200, (name, got.body[:300])
                got = await _result_of_fal(server, url, answer)
                answer = _strict(got.body)
                assert got.status == 422, (name, got.body[:300])
            else:
                expected = _strict(bytes(own.body))  # type: ignore[arg-type]
                assert got.status == own.status, (name, got.status, got.body[:300])
                assert type(answer) is type(expected)
                if isinstance(expected, dict):
                    assert set(answer) == set(expected), (name, answer)
        # JSON, but beyond what the contract allows where it bounds the field; never a crash.
        got = await raw_request(url, _http(head, (template % ("9" * 4_000)).encode()))
        _strict(got.body)
        assert got.status < 500 and got.headers.get("x-mock-error") is None, got.body[:300]
        if provider in ("cloudsway", "acedata", "yunyx", "dify"):  # seed, count, seed, prompt
            assert 400 <= got.status < 500, got.body[:300]
        grown = rss_mb() - before
        # Still serving: a valid body is accepted.
        valid = (template % ('"p"' if provider == "dify" else "7")).encode()
        assert (await raw_request(url, _http(head, valid))).status < 300
    finally:
        await served.close()
    assert server.errors == []
    assert grown < 64, f"RSS grew {grown:.0f} MB"


def test_strict_json_takes_what_json_allows_up_to_the_bounds() -> None:
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(nested) is not None
    with pytest.raises(BodyError, match="deeper"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert loads(b'{"a": 18446744073709551616, "b": -9223372036854775809, "c": 1e308}') == {
        "a": 2**64, "b": -(2**63) - 1, "c": 1e308}
    assert loads(b"9" * 4_300) == int("9" * 4_300)
    for bad in (b"9" * 4_301, b"-" + b"9" * 4_301, b"-1e400", b"[NaN]", b"[" * (MAX_DEPTH + 1)):
        with pytest.raises(BodyError):
            loads(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_the_engine_never_writes_nan_or_infinity(value: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        dumps({"guidance_scale": value})
