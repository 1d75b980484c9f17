"""File routes refuse path traversal, tampered signatures and expired links.

The engine's ``/images/`` (Cloudsway), yunyx's presigned ``/outputs/`` links and Dify's signed
``/files/tools/`` links, over real sockets with raw request lines (no client normalises the
path on the way).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from imagegen_conformance.mocks import MockServer

TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "..%5c..%5c..%5cetc%5cpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..%00/etc/passwd",
    "/etc/passwd",
]


async def _raw_get(base: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (a raw request line)."""
    parts = urlsplit(base)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _advance_until(server: MockServer, job: asyncio.Future[Any], step: float = 5.0) -> Any:
    """Move a manual clock until a request that waits on it has its answer."""
    for _ in range(200):
        if job.done():
            break
        server.clock.advance(step)  # type: ignore[attr-defined]
        await asyncio.sleep(0.005)
    return await job


def _tamper(link: str, param: str | None) -> str:
    """The link with one character of its signature changed (a query param, or the path token)."""
    parts = urlsplit(link)
    if param is None:  # the engine's token: <payload>.<signature>.<ext>
        name = parts.path.rsplit("/", 1)[1]
        stem, ext = name.rsplit(".", 1)
        flipped = stem[:-1] + ("A" if stem[-1] != "A" else "B")
        out = link.replace(name, f"{flipped}.{ext}")
        assert out != link
        return out
    query = dict(parse_qsl(parts.query))
    value = query[param]
    query[param] = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    assert query[param] != value
    return f"{parts.path}?{urlencode(query)}"


async def _check_traversals(base: str, prefix: str, server: MockServer) -> None:
    for attempt in TRAVERSALS:
        status, body = await _raw_get(base, prefix + attempt)
        assert status in (400, 403, 404), (prefix + attempt, status)
        assert b"root:" not in body
    assert server.errors == []


def _path_and_query(link: str) -> str:
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def test_engine_image_links(serve_mock: Any) -> None:
    running = await serve_mock("cloudsway", clock="manual", seed=21)
    server = running.server
    auth = {"Authorization": "Bearer k"}
    created = await server.request("POST", "/v2/ai/x/images/generations", headers=auth,
                                   json={"prompts": "p", "aspect_ratio": "1:1", "step": 4})
    task_id = json.loads(created.body)["taskId"]
    server.clock.advance(60)
    polled = await server.request("GET", f"/v2/ai/x/images/tasks/{task_id}", headers=auth)
    link = _path_and_query(json.loads(polled.body)["imageUrls"][0])
    expired = await server.request("GET", f"/v2/ai/x/images/tasks/{task_id}",
                                   headers={**auth, "X-Mock-Fault": "expired_url"})
    expired_link = _path_and_query(json.loads(expired.body)["imageUrls"][0])

    status, body = await _raw_get(running.url, link)
    assert status == 200 and body.startswith(b"\x89PNG")
    assert (await _raw_get(running.url, _tamper(link, None)))[0] == 404
    assert (await _raw_get(running.url, expired_link))[0] == 403
    await _check_traversals(running.url, "/images/", server)


@pytest.mark.parametrize(("links", "signature"), [("oss", "Signature"), ("s3", "X-Amz-Signature")])
async def test_yunyx_presigned_links(serve_mock: Any, links: str, signature: str) -> None:
    running = await serve_mock("yunyx", clock="manual", seed=22, options={"links": links})
    server = running.server
    job = asyncio.ensure_future(server.request(
        "POST", "/v1/images/generations", headers={"Authorization": "Bearer k"},
        json={"model": "FLUX.1-schnell", "prompt": "p", "image_size": "768x512"}))
    answer = await _advance_until(server, job, step=1.0)
    link = _path_and_query(json.loads(answer.body)["images"][0]["url"])

    status, body = await _raw_get(running.url, link)
    assert status == 200 and body.startswith(b"\x89PNG")
    tampered_status, tampered = await _raw_get(running.url, _tamper(link, signature))
    assert tampered_status == 403 and b"SignatureDoesNotMatch" in tampered
    # Another object's name under this signature: refused too.
    swapped = link.replace(urlsplit(link).path, "/outputs/other.png")
    assert (await _raw_get(running.url, swapped))[0] in (403, 404)
    server.clock.advance(3_601)
    expired_status, expired = await _raw_get(running.url, link)
    assert expired_status == 403 and b"expired" in expired.lower()
    await _check_traversals(running.url, "/outputs/", server)


@pytest.mark.timeout(30)
async def test_dify_signed_tool_files(serve_mock: Any) -> None:
    running = await serve_mock("dify", clock="manual", seed=23)
    server = running.server
    job = asyncio.ensure_future(server.request(
        "POST", "/v1/workflows/run", headers={"Authorization": "Bearer app-k"},
        json={"inputs": {"prompt": "p"}, "response_mode": "blocking", "user": "u"}))
    answer = await _advance_until(server, job, step=5.0)
    files = json.loads(answer.body)["data"]["outputs"]["files"]
    link = _path_and_query(files[0]["url"])
    assert link.startswith("/files/tools/")

    status, body = await _raw_get(running.url, link)
    assert status == 200 and body.startswith(b"\x89PNG")
    for tampered in (_tamper(link, "sign"), _tamper(link, "nonce"), _tamper(link, "timestamp")):
        tampered_status, refused = await _raw_get(running.url, tampered)
        assert tampered_status == 403, tampered
        assert json.loads(refused)["status"] == 403  # Dify's own envelope
    # The same signature on another file id.
    other = link.replace(files[0]["related_id"], "00000000-0000-4000-8000-000000000000")
    assert (await _raw_get(running.url, other))[0] == 403
    server.clock.advance(301)
    assert (await _raw_get(running.url, link))[0] == 403
    await _check_traversals(running.url, "/files/tools/", server)
    await _check_traversals(running.url, "/files/", server)
