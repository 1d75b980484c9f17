"""HEAD and OPTIONS as the providers' servers answer them, over real sockets.

Their frameworks answer HEAD on a GET route as the GET without its body (same status, same
headers, Content-Length of the body it would have sent); Dify's Flask also answers OPTIONS
itself (200, Allow, empty body) before any view or authentication runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from imagegen_conformance.harness import validate_exchange
from imagegen_conformance.mocks import MockServer

CLOUDSWAY = {"Authorization": "Bearer k"}
FAL = {"Authorization": "Key k"}
DIFY = {"Authorization": "Bearer app-k"}


async def _same_but_bodyless(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    """GET and HEAD ``url``: same status and Content-Length, no body for HEAD. The status."""
    async with session.get(url, headers=headers) as got:
        body = await got.read()
    async with session.head(url, headers=headers) as head:
        assert await head.read() == b""
        assert head.status == got.status, (url, head.status, got.status)
        assert head.headers.get("Content-Type") == got.headers.get("Content-Type")
        assert head.headers.get("Content-Length") == str(len(body)), url
    return got.status


async def test_head_on_cloudsway_and_engine_image_routes(serve_mock: Any) -> None:
    running = await serve_mock("cloudsway", clock="manual", seed=11)
    base = running.url + "/v2/ai/x/images"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/generations", headers=CLOUDSWAY,
                                json={"prompts": "p", "aspect_ratio": "1:1", "step": 4}) as r:
            task_id = (await r.json())["taskId"]
        assert await _same_but_bodyless(session, f"{base}/tasks/{task_id}", CLOUDSWAY) == 200
        assert await _same_but_bodyless(session, f"{base}/tasks/unknown", CLOUDSWAY) == 404
        running.server.clock.advance(60)
        async with session.get(f"{base}/tasks/{task_id}", headers=CLOUDSWAY) as r:
            link = (await r.json())["imageUrls"][0]
        assert await _same_but_bodyless(session, link, {}) == 200
    server: MockServer = running.server
    assert server.errors == []
    heads = [e for e in server.journal.entries() if e.method == "HEAD"]
    assert {e.operation for e in heads} == {"getImageTask", "downloadImage"}
    assert all(e.response_body is None for e in heads)
    # The harness judges a HEAD exchange by its status and headers, not by a missing body.
    assert [d for e in heads for d in validate_exchange(server.contract, e)] == []


async def test_head_on_fal_status_and_result(serve_mock: Any) -> None:
    running = await serve_mock("fal", clock="manual", seed=12)
    async with aiohttp.ClientSession() as session:
        async with session.post(running.role_url("queue") + "/fal-ai/flux-1/dev", headers=FAL,
                                json={"prompt": "p"}) as r:
            submitted = await r.json()
        assert await _same_but_bodyless(session, submitted["status_url"], FAL) == 202
        await _same_but_bodyless(session, submitted["response_url"], FAL)
        # The status stream: its headers, no stream started.
        async with session.head(submitted["status_url"] + "/stream", headers=FAL) as r:
            assert r.status == 200 and await r.read() == b""
            assert r.headers["Content-Type"].startswith("text/event-stream")
        running.server.clock.advance(600)
        assert await _same_but_bodyless(session, submitted["response_url"], FAL) == 200
    assert running.server.errors == []


async def test_dify_answers_head_as_get_and_options_itself(serve_mock: Any) -> None:
    running = await serve_mock("dify", clock="manual", seed=13)
    url = running.url
    async with aiohttp.ClientSession() as session:
        assert await _same_but_bodyless(session, f"{url}/v1/parameters", DIFY) == 200
        assert await _same_but_bodyless(session, f"{url}/v1/parameters", {}) == 401
        for path, allow in (("/v1/parameters", "GET, HEAD, OPTIONS"),
                            ("/v1/workflows/run", "OPTIONS, POST")):
            async with session.options(url + path) as r:  # no key: Flask answers before auth
                assert (r.status, r.headers["Allow"], await r.read()) == (200, allow, b"")
        async with session.head(f"{url}/v1/workflows/run", headers=DIFY) as r:
            assert (r.status, r.headers["Allow"], await r.read()) == (405, "OPTIONS, POST", b"")
        async with session.delete(f"{url}/v1/parameters", headers=DIFY) as r:
            assert r.status == 405 and json.loads(await r.read())["code"] == "method_not_allowed"
        job = asyncio.ensure_future(session.post(
            f"{url}/v1/workflows/run", headers=DIFY,
            json={"inputs": {"prompt": "p"}, "response_mode": "blocking", "user": "u"}))
        while not list(running.server.tasks):  # until the run has reached the mock
            await asyncio.sleep(0.005)
        running.server.clock.advance(60)  # every node of the run has ended
        async with await asyncio.wait_for(job, 10) as r:
            link = (await r.json())["data"]["outputs"]["files"][0]["url"]
        link = link if link.startswith("http") else url + link
        assert await _same_but_bodyless(session, link, {}) == 200
    assert running.server.errors == []


@pytest.mark.parametrize("provider", ["cloudsway", "acedata", "yunyx"])
async def test_options_elsewhere_is_what_the_provider_answers_any_other_method(
    provider: str, serve_mock: Any
) -> None:
    running = await serve_mock(provider, clock="manual", seed=14)
    path = {"cloudsway": "/v2/ai/x/images/generations", "acedata": "/flux/images",
            "yunyx": "/v1/images/generations"}[provider]
    async with aiohttp.ClientSession() as session:
        async with session.options(running.url + path) as r:
            options = (r.status, await r.read())
        async with session.delete(running.url + path) as r:
            other = (r.status, await r.read())
    assert options[0] == other[0]
    assert running.server.errors == []
