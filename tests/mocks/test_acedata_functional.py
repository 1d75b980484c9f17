"""AceData over real sockets: the seed's curl, the official SDK, callbacks, NDJSON framing."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest
from acedatacloud import AceDataCloud, AsyncAceDataCloud
from acedatacloud._runtime import errors as ace_errors
from PIL import Image

from imagegen_conformance import contracts

CLI = [sys.executable, "-m", "imagegen_conformance"]
TOKEN = "ace-token"


# --- helpers -----------------------------------------------------------------------------


def curl(*args: str) -> str:
    assert shutil.which("curl"), "curl is needed to run the seed's own example"
    return subprocess.run(["curl", "-sS", *args], check=True, capture_output=True, text=True,
                          timeout=20).stdout


async def until(condition: Callable[[], bool], tick: Callable[[], object] | None = None,
                timeout: float = 5.0) -> None:
    """Wait (real time) until ``condition()``; ``tick`` runs between checks (advance a clock)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        if tick is not None:
            tick()
        await asyncio.sleep(0.01)


def delivery_status(server: Any, index: int) -> str | None:
    records = server.deliveries.records()
    return records[index].status if -len(records) <= index < len(records) else None  # type: ignore[no-any-return]


def image_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


# --- the seed's example over `serve` -----------------------------------------------------


def test_seed_curl_example_against_serve(serve_cli: Any) -> None:
    proc = serve_cli("--provider", "acedata", "--port", "0", "--time-scale", "2000")
    name, base = proc.readline().split()
    assert name == "acedata"
    # The seed's curl, verbatim but for the host.
    accepted = json.loads(curl(
        "--request", "POST",
        "--url", f"{base}/flux/images",
        "--header", "Authorization: Bearer <token>",
        "--header", "Content-Type: application/json",
        "--data", '\n{\n  "action": "generate",\n  "prompt": "a white siamese cat",\n'
        '  "size": "1024x1024",\n  "count": 123,\n  "model": "generate",\n'
        '  "image_url": "<string>",\n  "callback_url": "<string>"\n}\n',
    ))
    # callback_url makes it async [V]: the task id comes back at once.
    assert list(accepted) == ["task_id"]
    deadline = time.monotonic() + 10
    while True:
        record = json.loads(curl(
            "--request", "POST", "--url", f"{base}/flux/tasks",
            "--header", "Authorization: Bearer <token>",
            "--header", "Content-Type: application/json",
            "--data", json.dumps({"action": "retrieve", "id": accepted["task_id"]}),
        ))
        if "finished_at" in record or time.monotonic() > deadline:  # pending: the stub response
            break
        time.sleep(0.02)
    data = record["response"]["data"]
    assert record["response"]["success"] is True and len(data) == 123
    for item in data[:2]:
        png = subprocess.run(["curl", "-sS", "--fail", item["image_url"]], check=True,
                             capture_output=True, timeout=20).stdout
        assert image_size(png) == (1024, 1024)
    deliveries = json.loads(curl(f"{base}/__mock/deliveries"))
    assert [d["status"] for d in deliveries["deliveries"]] == ["refused"]
    assert proc.close() == 0


# --- the official SDK (acedatacloud), unmodified but for base URL and token ----------------


async def test_sdk_async_generate_waits_on_the_task_and_downloads(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", time_scale=2000, seed=4)
    async with AsyncAceDataCloud(api_token=TOKEN, base_url=running.url) as client:
        handle = await client.flux.generate(
            size="768x512", action="generate", prompt="a harbour", count=2, model="flux-dev",
            wait=True, poll_interval=0.02,
        )
        assert handle.done
        result = await handle.result()
        assert result is not None and result["response"]["success"] is True
        urls = handle.urls()
        assert len(urls) == 2
        async with httpx.AsyncClient() as http:
            for url in urls:
                assert image_size((await http.get(url)).content) == (768, 512)
    operations = [e.operation for e in running.server.journal.entries()]
    assert operations[0] == "createFluxImages" and operations.count("retrieveFluxTasks") >= 2
    # The SDK always sends async: true [V].
    assert json.loads(running.server.journal.entries()[0].request_body)["async"] is True


async def test_sdk_sync_mode_gets_a_finished_handle(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", time_scale=2000, seed=4)

    def call() -> list[str]:
        with AceDataCloud(api_token=TOKEN, base_url=running.url) as client:
            handle = client.flux.generate(size="1:1", action="generate", prompt="x",
                                          model="flux-kontext-max", async_=False)
            assert handle.done  # the sync answer already carries the images
            return handle.urls()

    [url] = await asyncio.to_thread(call)
    async with httpx.AsyncClient() as http:
        assert image_size((await http.get(url)).content) == (1024, 1024)


@pytest.mark.parametrize("pending_record", ["stub", "absent"])
async def test_sdk_edit_and_callback_flows_wait_for_the_generated_images(
    serve_mock, receiver: Any, pending_record: str,  # type: ignore[no-untyped-def]
) -> None:
    # The SDK reads any http *_url of a pending record as its result (quirk
    # sdk-pending-record-with-url-fields): the default stub record keeps it waiting.
    running = await serve_mock("acedata", time_scale=2000, seed=4,
                               options={"pending_record": pending_record})
    source = "https://example.com/input.png"
    async with AsyncAceDataCloud(api_token=TOKEN, base_url=running.url) as client:
        edit = await client.flux.generate(
            size="1:1", action="edit", prompt="make it blue", model="flux-kontext-pro",
            image_url=source, wait=True, poll_interval=0.02,
        )
        called = await client.flux.generate(
            size="512x512", action="generate", prompt="a lighthouse", callback_url=receiver.url,
            wait=True, poll_interval=0.02,
        )
    generated = f"{running.url}/images/"
    if pending_record == "stub":
        [edited] = edit.urls()
        [image] = called.urls()
        assert edited.startswith(generated) and image.startswith(generated)
        async with httpx.AsyncClient() as http:
            assert image_size((await http.get(edited)).content) == (1024, 1024)
            assert image_size((await http.get(image)).content) == (512, 512)
    else:  # Nexior's reading: the SDK "finishes" at once with the echoed input and callback URLs
        assert edit.urls() == [source] and called.urls() == [receiver.url]


async def test_sdk_transport_reads_an_ndjson_answer_as_one_document(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", time_scale=2000, seed=4)
    body = {"action": "generate", "prompt": "x", "size": "512x512"}

    def call() -> dict[str, Any]:
        with AceDataCloud(api_token=TOKEN, base_url=running.url) as client:
            answer: dict[str, Any] = client._transport.request(
                "POST", "/flux/images", json=body, extra_headers={"accept": "application/x-ndjson"})
            return answer

    answer = await asyncio.to_thread(call)
    assert answer["success"] is True and len(answer["data"]) == 1


@pytest.mark.parametrize("ndjson", ["final", "progress"])
async def test_sdk_request_stream_reads_sse_events(serve_mock, ndjson: str) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", time_scale=2000, seed=4, options={"ndjson": ndjson})
    body = {"action": "generate", "prompt": "x", "size": "512x512"}

    def call() -> list[str]:
        with AceDataCloud(api_token=TOKEN, base_url=running.url) as client:
            return list(client._transport.request_stream("POST", "/flux/images", json=body))

    events = [json.loads(data) for data in await asyncio.to_thread(call)]
    assert events, "request_stream yielded nothing: the answer has no `data:` lines"
    assert events[-1]["success"] is True and len(events[-1]["data"]) == 1
    assert all("progress" in event for event in events[:-1])
    assert (len(events) == 1) == (ndjson == "final")
    [exchange] = running.server.journal.entries()
    assert exchange.response_headers["Content-Type"].startswith("text/event-stream")


SDK_ERRORS = [
    (400, "bad_request", ace_errors.ValidationError),
    (400, "token_mismatched", ace_errors.TokenMismatchError),
    (400, "api_not_implemented", ace_errors.ValidationError),
    (400, "disabled", ace_errors.ResourceDisabledError),
    (400, "no_token", ace_errors.AuthenticationError),
    (401, "invalid_token", ace_errors.AuthenticationError),
    (401, "token_expired", ace_errors.AuthenticationError),
    (401, "token_mismatched", ace_errors.TokenMismatchError),
    (403, "used_up", ace_errors.InsufficientBalanceError),
    (404, "no_api", ace_errors.APIError),
    (429, "too_many_requests", ace_errors.RateLimitError),
    (500, "api_error", ace_errors.APIError),
    (500, "busy", ace_errors.APIError),
    (504, "timeout", ace_errors.APIError),
]
RETRIED = {408, 409, 429, 500, 502, 503, 504}  # the SDK's own retry set [V]


async def test_sdk_maps_every_error_code_to_its_exception(serve_mock) -> None:  # type: ignore[no-untyped-def]
    # One mock per code, all at once: the SDK's real retry backoff (1 s, 2 s) runs concurrently.
    servers = [await serve_mock("acedata", clock="manual", faults=[f"http:{status}:{code}"])
               for status, code, _ in SDK_ERRORS]

    async def attempt(url: str) -> BaseException:
        async with AsyncAceDataCloud(api_token=TOKEN, base_url=url) as client:
            with pytest.raises(ace_errors.APIError) as info:
                await client.flux.generate(size="1024x1024", action="generate", prompt="x")
            return info.value

    raised = await asyncio.gather(*(attempt(r.url) for r in servers))
    for (status, code, cls), exc, running in zip(SDK_ERRORS, raised, servers, strict=True):
        assert type(exc) is cls, (status, code, type(exc))
        assert isinstance(exc, ace_errors.APIError)
        assert (exc.status_code, exc.code) == (status, code)
        assert exc.message == contracts.load("acedata").behaviour.raw["error_codes"][status][code]
        assert exc.trace_id
        tries = len(running.server.journal.entries())
        assert tries == (3 if status in RETRIED else 1), (status, tries)


async def test_sdk_real_triggers_map_to_exceptions(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual", api_keys=[TOKEN])
    async with AsyncAceDataCloud(api_token="wrong", base_url=running.url) as client:
        with pytest.raises(ace_errors.AuthenticationError):
            await client.flux.generate(size="1024x1024", action="generate", prompt="x")
    async with AsyncAceDataCloud(api_token=TOKEN, base_url=running.url) as client:
        with pytest.raises(ace_errors.ValidationError, match="multiple of 32"):
            await client.flux.generate(size="1000x1000", action="generate", prompt="x")
        with pytest.raises(ace_errors.ValidationError, match="kontext"):
            await client.flux.generate(size="1024x1024", action="edit", prompt="x", model="flux-dev",
                                       image_url="https://e.com/a.png")
        handle = await client.flux.generate(size="1024x1024", action="generate", prompt="x")
        pending = await client.tasks.get(handle.id, service="flux")
        assert pending["response"] == {"success": True, "task_id": handle.id}
        with pytest.raises(ace_errors.APIError) as info:
            await client.tasks.get("no-such-task", service="flux")
        assert info.value.status_code == 404


# --- callbacks ---------------------------------------------------------------------------


async def test_callback_is_delivered_when_the_task_ends(serve_mock, receiver: Any) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual", seed=7)
    server = running.server
    async with httpx.AsyncClient() as http:
        submitted = await http.post(f"{running.url}/flux/images", headers={"Authorization": "Bearer k"},
                                    json={"action": "generate", "prompt": "cb", "callback_url": receiver.url})
        accepted = submitted.json()
        await asyncio.sleep(0.05)
        assert receiver.received == []  # not before the task ends
        server.clock.advance(121)
        await until(lambda: len(receiver.received) == 1)
        payload = receiver.received[0]["body"]
        record = (await http.post(f"{running.url}/flux/tasks", headers={"Authorization": "Bearer k"},
                                  json={"action": "retrieve", "id": accepted["task_id"]})).json()
    assert payload == record["response"]  # the sync body [V]
    assert payload["success"] is True and payload["task_id"] == accepted["task_id"]
    assert receiver.received[0]["headers"]["Content-Type"] == "application/json"
    await until(lambda: delivery_status(server, 0) == "delivered")
    assert server.deliveries.records()[0].attempts == 1


async def test_callback_is_retried_with_a_bound(serve_mock, receiver: Any) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual", seed=7)
    server = running.server
    receiver.statuses = [500, 503]
    await server.request("POST", "/flux/images", headers={"Authorization": "Bearer k"},
                         json={"action": "generate", "prompt": "cb", "callback_url": receiver.url})
    server.clock.advance(121)
    await until(lambda: delivery_status(server, 0) == "delivered",
                tick=lambda: server.clock.advance(5))
    record = server.deliveries.records()[0]
    assert record.responses == [500, 503, 200] and len(receiver.received) == 3
    # A receiver that always fails gets exactly the policy's attempts, then the mock gives up.
    receiver.statuses = [500] * 10
    receiver.received.clear()
    await server.request("POST", "/flux/images", headers={"Authorization": "Bearer k"},
                         json={"action": "generate", "prompt": "cb", "callback_url": receiver.url})
    await until(lambda: delivery_status(server, 1) == "failed",
                tick=lambda: server.clock.advance(10))
    attempts = contracts.load("acedata").behaviour.raw["callbacks"]["attempts"]
    assert server.deliveries.records()[-1].attempts == attempts == len(receiver.received)


async def test_callback_to_a_non_allowed_host_is_refused(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual")
    server = running.server
    response = await server.request("POST", "/flux/images", headers={"Authorization": "Bearer k"},
                                    json={"action": "generate", "prompt": "x",
                                          "callback_url": "http://example.com/hook"})
    assert response.status == 200  # the request itself is fine; only the delivery is refused
    [record] = server.deliveries.records()
    assert record.status == "refused" and "--allow-host example.com" in (record.reason or "")
    assert record.attempts == 0


async def test_allow_list_opens_a_host(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual", allow_hosts=["receiver.invalid"])
    server = running.server
    await server.request("POST", "/flux/images", headers={"Authorization": "Bearer k"},
                         json={"action": "generate", "prompt": "x",
                               "callback_url": "http://receiver.invalid/hook"})
    await until(lambda: delivery_status(server, 0) == "failed",
                tick=lambda: server.clock.advance(30), timeout=15)
    record = server.deliveries.records()[0]
    assert record.attempts == 3  # attempted (and failed: the name does not resolve), not refused


async def test_duplicate_and_late_callback_faults(serve_mock, receiver: Any) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual")
    server = running.server
    body = {"action": "generate", "prompt": "x", "callback_url": receiver.url}
    await server.request("POST", "/flux/images", json=body,
                         headers={"Authorization": "Bearer k", "X-Mock-Fault": "duplicate_webhook"})
    server.clock.advance(121)
    await until(lambda: len(receiver.received) == 2)
    assert receiver.received[0]["body"] == receiver.received[1]["body"]
    receiver.received.clear()
    await server.request("POST", "/flux/images", json=body,
                         headers={"Authorization": "Bearer k", "X-Mock-Fault": "late_webhook:30"})
    server.clock.advance(121)
    await until(lambda: len(server.deliveries.records()) == 2)
    await asyncio.sleep(0.1)
    assert receiver.received == []  # the task has ended, the callback is 30 s late
    server.clock.advance(30)
    await until(lambda: len(receiver.received) == 1)


async def test_failed_task_callback_carries_the_error(serve_mock, receiver: Any) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual")
    await running.server.request(
        "POST", "/flux/images", json={"action": "generate", "prompt": "x", "callback_url": receiver.url},
        headers={"Authorization": "Bearer k", "X-Mock-Fault": "task_fail"},
    )
    running.server.clock.advance(121)
    await until(lambda: len(receiver.received) == 1)
    payload = receiver.received[0]["body"]
    assert payload["success"] is False and payload["error"]["code"] == "api_error"


# --- NDJSON ------------------------------------------------------------------------------


async def test_ndjson_lines_arrive_one_by_one_as_written(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual", seed=9, options={"ndjson": "progress"})
    clock = running.server.clock
    headers = {"Authorization": "Bearer k", "Accept": "application/x-ndjson"}
    body = {"action": "generate", "prompt": "stream", "size": "512x512"}
    async with aiohttp.ClientSession() as session, session.post(
        f"{running.url}/flux/images", json=body, headers=headers
    ) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson"
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
        assert first["progress"] == 0 and "data" not in first
        nxt = asyncio.ensure_future(resp.content.readline())
        await asyncio.sleep(0.2)
        assert not nxt.done()  # the next line is not produced until provider time passes
        clock.advance(10)
        second = json.loads(await asyncio.wait_for(nxt, 5))
        assert 0 < second["progress"] < 100 and second["task_id"] == first["task_id"]
        clock.advance(200)
        rest = (await asyncio.wait_for(resp.content.read(), 5)).decode()
    lines = [json.loads(line) for line in rest.splitlines()]
    last = lines[-1]
    assert rest.endswith("\n")
    assert last["success"] is True and last["task_id"] == first["task_id"] and len(last["data"]) == 1
    assert all("progress" in line for line in lines[:-1])
    validator = contracts.response_validator("acedata", "createFluxImages", 200)
    assert validator is not None and validator.issues(last) == []


async def test_ndjson_is_one_final_line_by_default_and_async_single_line(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual")
    headers = {"Authorization": "Bearer k", "Accept": "application/x-ndjson"}
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", f"{running.url}/flux/images", headers=headers,
                               json={"action": "generate", "prompt": "x"}) as resp:
            await asyncio.sleep(0.05)
            running.server.clock.advance(200)
            lines = [line async for line in resp.aiter_lines() if line]
        assert len(lines) == 1 and json.loads(lines[0])["success"] is True
        async with http.stream("POST", f"{running.url}/flux/images", headers=headers,
                               json={"action": "generate", "prompt": "x", "async": True}) as resp:
            lines = [line async for line in resp.aiter_lines() if line]
        assert list(json.loads(lines[0])) == ["task_id"] and len(lines) == 1
        # Errors are still ordinary JSON bodies with their status [I].
        bad = await http.post(f"{running.url}/flux/images", headers=headers, json={"action": "generate"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


async def test_ndjson_failed_task_ends_with_the_error_line(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("acedata", clock="manual")
    headers = {"Authorization": "Bearer k", "Accept": "application/x-ndjson", "X-Mock-Fault": "task_fail"}
    async with httpx.AsyncClient() as http, http.stream(
        "POST", f"{running.url}/flux/images", headers=headers, json={"action": "generate", "prompt": "x"}
    ) as resp:
        await asyncio.sleep(0.05)
        running.server.clock.advance(200)
        lines = [json.loads(line) async for line in resp.aiter_lines() if line]
    assert lines[-1]["success"] is False and lines[-1]["error"]["code"] == "api_error"
