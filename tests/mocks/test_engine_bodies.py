"""The engine reads bodies: a handler gets the parsed, normalised, validated body, or the
provider's own refusal is answered without the handler running."""

from __future__ import annotations

from typing import Any

import pytest

from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import Body, BodyError, Call, MockRequest, MockResponse, Provider

CREATE = "/v2/ai/e/images/generations"
AUTH = {"Authorization": "Bearer k"}


def _spy(server: MockServer, name: str) -> list[Call]:
    """Replace a handler with one that records the Call it gets."""
    seen: list[Call] = []

    async def handler(request: MockRequest, call: Call) -> MockResponse:
        seen.append(call)
        return MockResponse.json({"ok": True})

    setattr(server.provider, name, handler)
    return seen


@pytest.mark.parametrize(("body", "status", "message"), [
    pytest.param(b"{not json", 400, "request body is not valid JSON", id="not-json"),
    pytest.param(b"[1, 2]", 400, "must be a JSON object, got list", id="not-an-object"),
    pytest.param(b'{"prompts": "x", "batchsize": 9}', 400, "batchsize must be an integer between 1 and 8",
                 id="schema"),
])
async def test_a_bad_body_never_reaches_the_handler(body: bytes, status: int, message: str) -> None:
    server = MockServer("cloudsway", clock="manual")
    seen = _spy(server, "create")
    response = await server.request("POST", CREATE, body=body,
                                    headers={**AUTH, "Content-Type": "application/json"})
    assert seen == []
    assert response.status == status and message in response.json_body()["error"]["message"]


async def test_the_handler_gets_the_normalised_body_and_the_request_keeps_the_original() -> None:
    server = MockServer("cloudsway", clock="manual")
    seen = _spy(server, "create")
    sent = {"prompts": "x", "Step": 6}
    assert (await server.request("POST", CREATE, json=sent, headers=AUTH)).status == 200
    (call,) = seen
    assert call.body == {"prompts": "x", "step": 6}  # the English page's spelling, normalised
    assert call.request.json() == sent
    assert call.checked is not None and call.checked.ok and call.checked.operation == "createImageTask"


async def test_routes_without_a_body_get_none() -> None:
    server = MockServer("cloudsway", clock="manual")
    seen = _spy(server, "query")
    await server.request("GET", "/v2/ai/e/images/tasks/t1", headers=AUTH)
    assert seen[0].checked is None
    with pytest.raises(RuntimeError, match="takes no JSON body"):
        _ = seen[0].body


def test_the_default_refusal_is_a_400_in_the_providers_envelope() -> None:
    server = MockServer("cloudsway", clock="manual")
    request = MockRequest.build("POST", CREATE)
    empty = Body("createImageTask", "json", error=BodyError("request body is empty", kind="empty"))
    answer = Provider.refuse(server.provider, request, empty)
    assert answer is not None and answer.status == 400
    assert answer.json_body() == {"error": {"code": "Bad Request", "message": "request body is empty"}}
    assert Provider.refuse(server.provider, request, Body("createImageTask", "json", data={})) is None


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> tuple[bytes, str]:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: image/png\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def test_multipart_parts_are_read_by_the_engine() -> None:
    server = MockServer("dify", clock="manual")
    seen = _spy(server, "upload")
    body, ctype = _multipart([("user", None, b"u1"), ("file", "a.png", b"\x89PNG\r\n\x1a\n")])
    await server.request("POST", "/v1/files/upload", body=body,
                         headers={"Authorization": "Bearer app", "Content-Type": ctype})
    parts = seen[0].parts
    assert [(p.name, p.filename, p.content_type, p.data) for p in parts] == [
        ("user", None, None, b"u1"), ("file", "a.png", "image/png", b"\x89PNG\r\n\x1a\n"),
    ]


@pytest.mark.parametrize(("body", "ctype"), [
    pytest.param(b"garbage without a boundary", "multipart/form-data; boundary=XyZ", id="no-boundary"),
    pytest.param(b"--XyZ\r\nnot a header line\r\n\r\nx\r\n--XyZ--\r\n", "multipart/form-data; boundary=XyZ",
                 id="bad-part-header"),
    pytest.param(b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nx',
                 "multipart/form-data; boundary=XyZ", id="no-closing-boundary"),
    pytest.param(b"{}", "application/json", id="not-multipart"),
])
async def test_a_malformed_upload_gets_difys_own_400(body: bytes, ctype: str) -> None:
    server = MockServer("dify", clock="manual")
    response = await server.request("POST", "/v1/files/upload", body=body,
                                    headers={"Authorization": "Bearer app", "Content-Type": ctype})
    answer: dict[str, Any] = response.json_body()
    assert response.status == 400 and answer["code"] == "no_file_uploaded", answer
    assert server.errors == []  # a refusal, not a crash
