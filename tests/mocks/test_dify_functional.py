"""Dify over real sockets: the seed's curl, SSE read by httpx-sse, stop, disconnects, PyPI clients."""

from __future__ import annotations

import asyncio
import gc
import inspect
import io
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from PIL import Image

from imagegen_conformance import contracts
from imagegen_conformance.contracts import SchemaValidator
from imagegen_conformance.mocks.dify import DifyProvider

AUTH = {"Authorization": "Bearer app-test"}
# The seed's example, verbatim but for the host.
SEED_CURL = """curl -X POST 'http://sl.vrgon.com:6060/v1/workflows/run' \\
--header 'Authorization: Bearer {api_key}' \\
--header 'Content-Type: application/json' \\
--data-raw '{
"inputs": {
"prompt": "一个胸有成竹的男人",
"model_name": "chilloutmix_NiPrunedFp32Fix"
},
"response_mode": "blocking",
"user": "alg123"
}'"""
STREAM_BODY = {"inputs": {"prompt": "a red fox"}, "response_mode": "streaming", "user": "alg123"}
_OPENAPI = contracts.load("dify").openapi
# The contract's text/event-stream schema describes one event's data payload (as the harness reads it).
EVENT = SchemaValidator(
    _OPENAPI,
    _OPENAPI["paths"]["/v1/workflows/run"]["post"]["responses"]["200"]["content"]["text/event-stream"][
        "schema"
    ],
)
ServeMock = Callable[..., Awaitable[Any]]


def provider(running: Any) -> DifyProvider:
    prov = running.server.provider
    assert isinstance(prov, DifyProvider)
    return prov


def slow_tool(seconds: float) -> dict[str, Any]:
    """The default workflow with a slower image tool."""
    from imagegen_conformance.mocks.dify import Workflow

    wf = Workflow.load()
    return {
        "id": wf.id, "tenant_id": wf.tenant_id, "total_steps": 5, "name": wf.name,
        "description": wf.description,
        "user_input_form": [dict(e) for e in wf.user_input_form],
        "nodes": [
            {"id": n.id, "type": n.type, "title": n.title,
             "seconds": seconds if n.type == "tool" else list(n.seconds), "tokens": n.tokens,
             "images": dict(n.images) if n.images else None}
            for n in wf.nodes
        ],
        "outputs": [dict(o) for o in wf.outputs],
    }


async def curl(*args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out


async def read_events(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], *,
    until: Callable[[ServerSentEvent], bool] | None = None,
) -> list[ServerSentEvent]:
    events = []
    async with aconnect_sse(client, "POST", f"{url}/v1/workflows/run", json=body, headers=AUTH) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        async for sse in source.aiter_sse():
            events.append(sse)
            if until is not None and until(sse):
                break
    return events


def data_events(events: list[ServerSentEvent]) -> list[dict[str, Any]]:
    out = []
    for sse in events:
        if sse.event == "ping":
            assert sse.data == ""
            continue
        assert sse.event == "message"  # a bare data: line, no event: field
        payload = sse.json()
        assert EVENT.issues(payload) == [], payload
        out.append(payload)
    return out


# --- the seed's curl, blocking ---------------------------------------------------------


async def test_seed_curl_verbatim_then_download_tamper_and_expire(serve_mock: ServeMock) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=1000, seed=1)
    command = SEED_CURL.replace("http://sl.vrgon.com:6060", running.url)
    code, out = await curl("bash", "-c", command + " --silent --show-error")
    assert code == 0, out
    body = json.loads(out)
    assert out == json.dumps(body).encode()  # json.dumps defaults, no newline (compact_generate_response)
    data = body["data"]
    assert data["status"] == "succeeded" and data["total_tokens"] == 536
    relative = data["outputs"]["files"][0]["url"]
    assert relative.startswith("/files/tools/")
    async with httpx.AsyncClient() as client:
        image = await client.get(running.url + relative)  # "prefix the host", as the seed says
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).format == "PNG"
        tampered = re.sub(r"sign=.", lambda m: "sign=" + ("B" if m.group(0)[-1] == "A" else "A"), relative)
        assert tampered != relative
        forbidden = await client.get(running.url + tampered)
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
        await asyncio.sleep(0.35)  # 350 provider seconds at 1000x: past the 300 s validity
        expired = await client.get(running.url + relative)
        assert expired.status_code == 403


# --- streaming, read by httpx-sse --------------------------------------------------------


async def test_stream_events_in_order_with_their_fields(serve_mock: ServeMock) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    async with httpx.AsyncClient(timeout=10) as client:
        events = data_events(await read_events(client, running.url, STREAM_BODY))
    names = [(e["event"], e.get("data", {}).get("node_type")) for e in events]
    assert names == [
        ("workflow_started", None),
        ("node_started", "start"), ("node_finished", "start"),
        ("node_started", "tool"), ("node_finished", "tool"),
        ("node_started", "end"), ("node_finished", "end"),
        ("workflow_finished", None),
    ]
    task_id, run_id = events[0]["task_id"], events[0]["workflow_run_id"]
    assert all(e["task_id"] == task_id and e["workflow_run_id"] == run_id for e in events)
    started = events[0]["data"]
    assert started["id"] == run_id and started["inputs"]["prompt"] == "a red fox"
    # the seed's release, key for key (task_entities.py of April 2024; the converter's order)
    assert all(list(e) == ["event", "workflow_run_id", "task_id", "data"] for e in events)
    assert list(started) == ["id", "workflow_id", "sequence_number", "inputs", "created_at"]
    assert list(events[1]["data"]) == NODE_STARTED_SEED
    assert all(list(e["data"]) == NODE_FINISHED_SEED for e in events if e["event"] == "node_finished")
    assert list(events[-1]["data"]) == [
        "id", "workflow_id", "sequence_number", "status", "outputs", "error", "elapsed_time",
        "total_tokens", "total_steps", "created_by", "created_at", "finished_at", "files",
    ]
    nodes = [e["data"] for e in events if e["event"] == "node_finished"]
    assert list(nodes[1]["outputs"]["files"][0]) == [
        "__variant", "tenant_id", "type", "transfer_method", "url", "related_id", "filename",
        "extension", "mime_type",
    ]
    assert [n["index"] for n in nodes] == [1, 2, 3]
    assert [n["predecessor_node_id"] for n in nodes] == [None, nodes[0]["node_id"], nodes[1]["node_id"]]
    assert all(n["status"] == "succeeded" and n["error"] is None for n in nodes)
    assert nodes[1]["outputs"]["files"][0]["__variant"] == "FileVar"
    assert nodes[1]["execution_metadata"]["total_tokens"] == 536
    finished = events[-1]["data"]
    assert finished["status"] == "succeeded" and finished["id"] == run_id
    assert finished["outputs"]["files"][0]["url"].startswith("/files/tools/")
    assert finished["total_tokens"] == 536 and finished["sequence_number"] == started["sequence_number"]
    assert finished["created_by"]["user"] == "alg123"
    assert finished["finished_at"] >= finished["created_at"] == started["created_at"]


NODE_STARTED_SEED = ["id", "node_id", "node_type", "title", "index", "predecessor_node_id", "inputs",
                     "created_at", "extras"]
NODE_FINISHED_SEED = ["id", "node_id", "node_type", "title", "index", "predecessor_node_id", "inputs",
                      "process_data", "outputs", "status", "error", "elapsed_time",
                      "execution_metadata", "created_at", "finished_at", "files"]


async def test_current_release_streams_file_objects_and_later_fields(serve_mock: ServeMock) -> None:
    """--option dify.release=current: one later release, with none of the seed's own fields."""
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1,
                               options={"release": "current"})
    body = {**STREAM_BODY, "inputs": {"prompt": "一个胸有成竹的男人"}}
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", f"{running.url}/v1/workflows/run", json=body,
                                 headers=AUTH) as response:
            raw = b"".join([chunk async for chunk in response.aiter_bytes()])
        frames = [f.removeprefix(b"data: ") for f in raw.split(b"\n\n") if f.startswith(b"data: ")]
        events = [json.loads(f) for f in frames]
        # json.dumps defaults: CJK as \uXXXX, ", " and ": " separators
        assert all(f == json.dumps(e).encode() for f, e in zip(frames, events, strict=True))
        assert b"\\u4e00\\u4e2a" in frames[0] and "一个".encode() not in raw
        assert all(EVENT.issues(e) == [] for e in events)
        started = events[0]["data"]
        assert list(started) == ["id", "workflow_id", "inputs", "created_at", "reason"]
        assert started["reason"] == "initial"
        assert list(events[1]["data"]) == [
            "id", "node_id", "node_type", "title", "index", "predecessor_node_id", "inputs",
            "inputs_truncated", "created_at", "extras", "iteration_id", "loop_id",
        ]
        tool = next(e["data"] for e in events if e["event"] == "node_finished"
                    and e["data"]["node_type"] == "tool")
        assert list(tool) == [
            "id", "node_id", "node_type", "title", "index", "predecessor_node_id", "inputs",
            "inputs_truncated", "process_data", "process_data_truncated", "outputs",
            "outputs_truncated", "status", "error", "elapsed_time", "execution_metadata",
            "created_at", "finished_at", "files", "iteration_id", "loop_id",
        ]
        finished = events[-1]["data"]
        assert "sequence_number" not in finished and finished["exceptions_count"] == 0
        (file,) = finished["outputs"]["files"]
        assert list(file) == [
            "dify_model_identity", "id", "tenant_id", "type", "transfer_method", "remote_url",
            "related_id", "filename", "extension", "mime_type", "size", "url",
        ]
        assert file["dify_model_identity"] == "__dify__file__" and "__variant" not in file
        assert (file["id"], file["remote_url"], file["transfer_method"]) == (None, None, "tool_file")
        assert file["filename"].endswith(".png") and file["extension"] == ".png"
        image = await client.get(running.url + file["url"])
        assert image.status_code == 200 and len(image.content) == file["size"]
        blocking = await client.post(f"{running.url}/v1/workflows/run", headers=AUTH,
                                     json={**body, "response_mode": "blocking"})
        assert blocking.headers["content-type"] == "application/json; charset=utf-8"
        assert list(blocking.json()["data"]["outputs"]["files"][0]) == list(file)


async def test_stream_wire_format_is_data_lines_and_bare_pings(serve_mock: ServeMock) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    provider(running).use_workflow(slow_tool(25.0))
    url = f"{running.url}/v1/workflows/run"
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("POST", url, json=STREAM_BODY, headers=AUTH) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    frames = raw.split(b"\n\n")
    assert frames[-1] == b""  # the stream ends with a complete frame, then closes
    for frame in frames[:-1]:
        assert frame == b"event: ping" or re.fullmatch(rb"data: \{.*\}", frame), frame
    assert b"event: ping" in frames


async def test_pings_arrive_between_node_events_of_a_slow_node(serve_mock: ServeMock) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    provider(running).use_workflow(slow_tool(45.0))
    async with httpx.AsyncClient(timeout=10) as client:
        events = await read_events(client, running.url, STREAM_BODY)
    kinds = []
    for sse in events:
        kinds.append("ping" if sse.event == "ping" else
                     sse.json()["event"] + ":" + str(sse.json().get("data", {}).get("node_type")))
    tool_start, tool_end = kinds.index("node_started:tool"), kinds.index("node_finished:tool")
    between = kinds[tool_start + 1 : tool_end]
    # 45 provider seconds of tool work: a ping at each 10 s mark, nothing else.
    assert between == ["ping"] * len(between) and len(between) >= 4
    assert kinds[-1] == "workflow_finished:None"


async def test_node_failure_in_the_stream(serve_mock: ServeMock) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    async with httpx.AsyncClient(timeout=10, headers={"X-Mock-Fault": "task_fail"}) as client:
        events = data_events(await read_events(client, running.url, STREAM_BODY))
    assert [e["event"] for e in events][-2:] == ["node_finished", "workflow_finished"]
    assert events[-2]["data"]["status"] == "failed" and events[-2]["data"]["error"]
    assert events[-1]["data"]["status"] == "failed"
    assert events[-1]["data"]["error"] == events[-2]["data"]["error"]
    assert events[-1]["data"]["outputs"] is None


async def test_other_failures_after_the_stream_opened_are_error_events(serve_mock: ServeMock) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    fault = {"X-Mock-Fault": "task_fail:error:provider_quota_exceeded"}
    async with httpx.AsyncClient(timeout=10, headers=fault) as client:
        events = data_events(await read_events(client, running.url, STREAM_BODY))
        detail = await client.get(
            f"{running.url}/v1/workflows/run/{events[0]['workflow_run_id']}", headers=AUTH
        )
    last = events[-1]
    # [V] the source's converter: event, workflow_run_id, then code, status, message; no task_id
    assert list(last) == ["event", "workflow_run_id", "code", "status", "message"]
    assert (last["code"], last["status"]) == ("provider_quota_exceeded", 400)
    assert last["workflow_run_id"] == events[0]["workflow_run_id"]
    assert detail.json()["status"] == "failed" and detail.json()["error"] == last["message"]
    assert last["message"].startswith("Your quota")


async def test_an_unknown_failure_is_the_converters_500_and_the_docs_shape_is_an_option(
    serve_mock: ServeMock,
) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    fault = {"X-Mock-Fault": "task_fail:error:app_unavailable"}
    async with httpx.AsyncClient(timeout=10, headers=fault) as client:
        events = data_events(await read_events(client, running.url, STREAM_BODY))
    assert events[-1] == {"event": "error", "workflow_run_id": events[0]["workflow_run_id"],
                          "code": "internal_server_error",
                          "message": "Internal Server Error, please contact support.", "status": 500}
    assert list(events[-1]) == ["event", "workflow_run_id", "code", "message", "status"]
    docs = await serve_mock("dify", clock="scaled", time_scale=100, seed=1, options={"error_event": "docs"})
    fault = {"X-Mock-Fault": "task_fail:error:provider_quota_exceeded"}
    async with httpx.AsyncClient(timeout=10, headers=fault) as client:
        events = data_events(await read_events(client, docs.url, STREAM_BODY))
    assert list(events[-1]) == ["event", "task_id", "message", "code", "status"]
    assert events[-1]["task_id"] == events[0]["task_id"]


async def test_stop_mid_stream_ends_the_run_stopped(serve_mock: ServeMock) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=10, headers={"X-Mock-Fault": "never_finish"}) as client:
        async with aconnect_sse(client, "POST", f"{running.url}/v1/workflows/run", json=STREAM_BODY,
                                headers=AUTH) as source:
            async for sse in source.aiter_sse():
                if sse.event == "ping":
                    continue
                event = sse.json()
                events.append(event)
                if event["event"] == "node_started" and event["data"]["node_type"] == "tool":
                    stop = await client.post(
                        f"{running.url}/v1/workflows/tasks/{event['task_id']}/stop",
                        json={"user": "alg123"}, headers={**AUTH, "X-Mock-Fault": ""},
                    )
                    assert stop.status_code == 200 and stop.json() == {"result": "success"}
        detail = await client.get(
            f"{running.url}/v1/workflows/run/{events[0]['workflow_run_id']}", headers=AUTH
        )
    assert [e["event"] for e in events][-2:] == ["node_finished", "workflow_finished"]
    assert events[-2]["data"]["status"] == "stopped" and events[-2]["data"]["node_type"] == "tool"
    assert events[-1]["data"]["status"] == "stopped"
    assert events[-1]["data"]["error"] == "Stopped by user."
    assert detail.json()["status"] == "stopped"
    assert provider(running).live_streams == 0


def live_stream_frames() -> list[Any]:
    """Suspended, not yet closed stream generators of the Dify mock."""
    code = DifyProvider._stream.__code__
    return [
        obj for obj in gc.get_objects()
        if inspect.isasyncgen(obj) and obj.ag_code is code and obj.ag_frame is not None
    ]


WAIT_NAME = "imagegen_conformance.mocks.dify:wait:"  # the run waits' task names (mocks/dify/_runs.py)


async def test_client_disconnect_leaves_nothing_running(serve_mock: ServeMock) -> None:
    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    prov = provider(running)
    seen = []
    async with httpx.AsyncClient(timeout=10, headers={"X-Mock-Fault": "never_finish"}) as client:
        events = await read_events(
            client, running.url, STREAM_BODY,
            until=lambda s: s.event != "ping" and s.json()["event"] == "node_started"
            and s.json()["data"]["node_type"] == "tool",
        )
        seen = data_events(events)
        assert prov.live_streams == 1  # the stream is waiting on the never-ending tool node
    # The client hung up. The next ping (10 provider seconds, 0.1 s here) finds the socket gone.
    for _ in range(100):
        await asyncio.sleep(0.05)
        mine = [t for t in asyncio.all_tasks() if t.get_name().startswith(WAIT_NAME)]
        if prov.live_streams == 0 and not mine and not live_stream_frames():
            break
    assert prov.live_streams == 0
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith(WAIT_NAME)] == []
    assert live_stream_frames() == []
    exchange = running.server.journal.entries(0)[-1]
    assert exchange.operation == "runWorkflow" and exchange.complete
    count = len(exchange.events)
    await asyncio.sleep(0.3)  # 30 provider seconds: nothing more is produced for the dead stream
    assert len(exchange.events) == count
    assert seen[-1]["event"] == "node_started"
    assert running.server.errors == []


# --- clients from PyPI -------------------------------------------------------------------


# _dify_client_python_note: dify-client-python and dify-client both ship a package named
# dify_client; whichever is installed last owns its __init__.py. Importing each client from
# its own module (_clientx, client) works whichever that is.


def plain(data: Any) -> dict[str, Any]:
    """A stream event's data as a dict, whichever model the client library picked."""
    return data if isinstance(data, dict) else dict(data.model_dump())


@pytest.fixture
def dify_client_pool() -> Iterator[None]:
    """dify-client-python keeps one module-level httpx.Client; drop its sockets to each
    test's short-lived server afterwards (the client itself stays usable)."""
    yield
    from dify_client import _clientx

    _clientx._httpx_client._transport.close()


async def test_dify_client_python_against_the_mock(serve_mock: ServeMock, dify_client_pool: None) -> None:
    """dify-client-python 1.0.3 (PyPI), unmodified but for api_base, run in a worker thread."""
    from dify_client import errors, models
    from dify_client._clientx import Client  # see _dify_client_python_note

    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    client = Client(api_key="app-test", api_base=f"{running.url}/v1")

    def blocking() -> Any:
        req = models.WorkflowsRunRequest(
            inputs={"prompt": "一个胸有成竹的男人", "model_name": "chilloutmix_NiPrunedFp32Fix"},
            response_mode=models.ResponseMode.BLOCKING, user="alg123",
        )
        return client.run_workflows(req)

    result = await asyncio.to_thread(blocking)
    assert result.data.status == "succeeded" and result.data.total_tokens == 536
    assert result.data.outputs is not None
    assert result.data.outputs["files"][0]["url"].startswith("/files/tools/")

    def streaming() -> list[Any]:
        req = models.WorkflowsRunRequest(
            inputs={"prompt": "a fox"}, response_mode=models.ResponseMode.STREAMING, user="alg123",
        )
        return list(client.run_workflows(req))

    events = await asyncio.to_thread(streaming)
    assert [str(e.event) for e in events] == [
        "workflow_started", "node_started", "node_finished", "node_started", "node_finished",
        "node_started", "node_finished", "workflow_finished",
    ]
    # The library's own models accept every payload (its Union may leave some as plain dicts).
    finished = models.WorkflowFinishedData.model_validate(plain(events[-1].data))
    assert finished.status == "succeeded" and finished.total_tokens == 536
    assert models.NodeStartedData.model_validate(plain(events[3].data)).node_type == "tool"
    assert models.NodeFinishedData.model_validate(plain(events[4].data)).status == "succeeded"
    models.WorkflowStartedData.model_validate(plain(events[0].data))

    provider(running).use_workflow(slow_tool(1000.0))

    def stop_midway() -> list[Any]:
        req = models.WorkflowsRunRequest(
            inputs={"prompt": "slow"}, response_mode=models.ResponseMode.STREAMING, user="alg123",
        )
        seen = []
        for event in client.run_workflows(req):
            seen.append(event)
            if str(event.event) == "node_started" and plain(event.data)["node_type"] == "tool":
                answer = client.stop_workflows(event.task_id, models.StopRequest(user="alg123"))
                assert answer.result == "success"
        return seen

    stopped = await asyncio.to_thread(stop_midway)
    assert str(stopped[-1].event) == "workflow_finished"
    assert plain(stopped[-1].data)["status"] == "stopped"

    def upload() -> Any:
        png = io.BytesIO()
        Image.new("RGB", (4, 4)).save(png, "PNG")
        return client.upload_files(("ref.png", png.getvalue(), "image/png"),
                                   models.UploadFileRequest(user="alg123"))

    uploaded = await asyncio.to_thread(upload)
    assert uploaded.name == "ref.png" and uploaded.extension == "png"

    def bad_model() -> None:
        req = models.WorkflowsRunRequest(
            inputs={"prompt": "p", "model_name": "sdxl"}, response_mode=models.ResponseMode.BLOCKING,
            user="alg123",
        )
        client.run_workflows(req)

    with pytest.raises(errors.DifyInvalidParam, match="model_name in input form"):
        await asyncio.to_thread(bad_model)

    def unavailable() -> None:
        req = models.WorkflowsRunRequest(
            inputs={"prompt": "p"}, response_mode=models.ResponseMode.STREAMING, user="alg123",
        )
        list(client.run_workflows(req, headers={"X-Mock-Fault": "http:400:app_unavailable"}))

    with pytest.raises(errors.DifyAppUnavailable):
        await asyncio.to_thread(unavailable)

    def failing_stream() -> list[Any]:
        req = models.WorkflowsRunRequest(
            inputs={"prompt": "p"}, response_mode=models.ResponseMode.STREAMING, user="alg123",
        )
        fault = {"X-Mock-Fault": "task_fail:error:provider_quota_exceeded"}
        return list(client.run_workflows(req, headers=fault))

    # Dify's error event is a data-only line, so the library yields it (it raises only on an
    # SSE `event: error` field), as its plain StreamResponse with the other fields kept extra.
    failed = await asyncio.to_thread(failing_stream)
    error = failed[-1]
    assert str(error.event) == "error" and error.task_id == ""  # no task_id: the library's default
    assert error.model_extra is not None
    assert error.model_extra["workflow_run_id"] == failed[0].workflow_run_id
    assert (error.model_extra["code"], error.model_extra["status"]) == ("provider_quota_exceeded", 400)

    def info() -> Any:
        return client.request(client._prepare_url("/info"), "GET").json()

    assert await asyncio.to_thread(info) == {"name": "文生图", "description": "根据prompt生成图片"}
    assert running.server.errors == []


async def test_dify_client_0_1_10_parameters_and_upload(serve_mock: ServeMock) -> None:
    """dify-client 0.1.10 (PyPI): no workflow client, but its parameters and upload calls work."""
    from dify_client.client import DifyClient

    running = await serve_mock("dify", clock="scaled", time_scale=100, seed=1)
    client = DifyClient("app-test")
    client.base_url = f"{running.url}/v1"
    params = await asyncio.to_thread(client.get_application_parameters, "alg123")
    assert params.status_code == 200
    form = params.json()["user_input_form"]
    assert form[1]["select"]["default"] == "v1-5-pruned-emaonly"
    upload = await asyncio.to_thread(
        client.file_upload, "alg123", {"file": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")}
    )
    assert upload.status_code == 201 and upload.json()["name"] == "a.png"


def test_dify_client_python_unmodified_through_respx() -> None:
    """The same client with no change at all: respx mounts the mock at https://api.dify.ai."""
    from dify_client import models
    from dify_client._clientx import Client

    from imagegen_conformance.mocks import MockServer, mock_router

    server = MockServer("dify", clock="scaled", time_scale=100, seed=1)
    client = Client(api_key="app-test")
    with mock_router(server):
        done = client.run_workflows(models.WorkflowsRunRequest(
            inputs={"prompt": "p"}, response_mode=models.ResponseMode.BLOCKING, user="u",
        ))
        events = list(client.run_workflows(models.WorkflowsRunRequest(
            inputs={"prompt": "p"}, response_mode=models.ResponseMode.STREAMING, user="u",
        )))
    assert done.data.status == "succeeded"
    assert str(events[-1].event) == "workflow_finished"
    assert plain(events[-1].data)["status"] == "succeeded"
    assert [e.operation for e in server.journal.entries(0)] == ["runWorkflow", "runWorkflow"]
    assert server.errors == []
