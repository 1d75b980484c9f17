"""fal over real sockets: the official fal-client, unmodified, pointed at the mock over HTTPS.

fal-client reads FAL_QUEUE_RUN_HOST / FAL_RUN_HOST when it is imported and hard-codes
``https://``, so every client run is a fresh interpreter told where to go by environment
variables alone: the two hosts, SSL_CERT_FILE (httpx trusts it because fal-client's clients
keep httpx's default ``trust_env=True``) and FAL_KEY.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagegen_conformance.mocks import TLSMaterial

APP = "fal-ai/flux-1/dev"
KEY = {"Authorization": "Key test-key"}

# One interpreter per client run. Each action prints one JSON line; HTTP errors become data.
CLIENT = r"""
import json, sys, time
import httpx
import fal_client

APP = "fal-ai/flux-1/dev"
args = json.loads(sys.argv[1])

def view(status):
    out = {"type": type(status).__name__}
    for name in ("position", "logs", "metrics", "error", "error_type"):
        if hasattr(status, name):
            out[name] = getattr(status, name)
    return out

def attempt(fn):
    try:
        return {"ok": fn()}
    except fal_client.FalClientHTTPError as exc:
        return {"error": {"status": exc.status_code, "message": exc.message,
                          "error_type": exc.error_type}}

out = {}
for step in args["steps"]:
    name = step["do"]
    if name == "subscribe":
        updates = []
        out["subscribe"] = attempt(lambda: fal_client.subscribe(
            APP, arguments=step["input"], with_logs=True, interval=0.05,
            on_queue_update=lambda s: updates.append(view(s))))
        out["updates"] = updates
    elif name == "submit":
        handle = fal_client.submit(APP, arguments=step["input"], webhook_url=step.get("webhook"))
        out["request_id"] = handle.request_id
    elif name == "status":
        out.setdefault("statuses", []).append(view(fal_client.status(APP, out["request_id"], with_logs=True)))
    elif name == "poll_until_done":
        while True:
            status = fal_client.status(APP, out["request_id"], with_logs=True)
            out.setdefault("statuses", []).append(view(status))
            if type(status).__name__ == "Completed":
                break
            time.sleep(0.05)
    elif name == "result":
        out["result"] = attempt(lambda: fal_client.result(APP, out["request_id"]))
    elif name == "cancel":
        out.setdefault("cancel", []).append(attempt(lambda: fal_client.cancel(APP, out["request_id"])))
    elif name == "run":
        out["run"] = attempt(lambda: fal_client.run(APP, arguments=step["input"]))
    elif name == "download":
        url = out["subscribe"]["ok"]["images"][0]["url"]
        response = httpx.get(url)
        out["download"] = {"status": response.status_code, "type": response.headers["content-type"],
                           "head": response.content[:4].hex()}
print(json.dumps(out))
"""


async def run_client(env: dict[str, str], *steps: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Run fal-client in a fresh interpreter with only ``env`` as its environment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, json.dumps({"steps": list(steps)}),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("fal-client did not finish in time") from None
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def client_env(queue_url: str, run_url: str, ca: Path) -> dict[str, str]:
    """Exactly the variables a user sets: two hosts, the CA bundle, the key."""
    assert queue_url.startswith("https://") and run_url.startswith("https://")
    return {
        "FAL_QUEUE_RUN_HOST": queue_url.removeprefix("https://"),
        "FAL_RUN_HOST": run_url.removeprefix("https://"),
        "SSL_CERT_FILE": str(ca),
        "FAL_KEY": "test-key",
    }


@pytest.fixture
def tls(tmp_path: Path) -> TLSMaterial:
    return TLSMaterial.create(tmp_path / "tls")


async def serve_fal(serve_mock: Any, tls: TLSMaterial, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    running = await serve_mock("fal", tls=tls, seed=7, **kwargs)
    env = client_env(running.role_url("queue"), running.role_url("run"), tls.ca_path)
    return running, env


# --- serve --tls, the command a user runs ------------------------------------------------


async def test_cli_serve_tls_subscribe_with_logs_and_sync_run(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagegen_conformance", "serve", "-p", "fal", "--tls",
        "--tls-dir", str(tmp_path),
        "--port", "0", "--time-scale", "10", "--seed", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines = [
            (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split() for _ in range(3)
        ]
        assert lines[0] == ["ca-bundle", str(tmp_path / "ca.pem")]
        urls = {name: url for name, url in lines[1:]}
        assert set(urls) == {"fal", "fal:run"}
        env = client_env(urls["fal"], urls["fal:run"], Path(lines[0][1]))
        out = await run_client(
            env,
            {"do": "subscribe", "input": {"prompt": "a tiger eye", "image_size": "square_hd"}},
            {"do": "download"},
            {"do": "run", "input": {"prompt": "a tiger eye", "image_size": "portrait_4_3",
                                    "output_format": "png"}},
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    result = out["subscribe"]["ok"]
    assert [(i["width"], i["height"], i["content_type"]) for i in result["images"]] == [
        (1024, 1024, "image/jpeg")
    ]
    assert result["prompt"] == "a tiger eye" and result["has_nsfw_concepts"] == [False]
    kinds = [u["type"] for u in out["updates"]]
    assert kinds[-1] == "Completed" and "InProgress" in kinds
    assert kinds == sorted(kinds, key=["Queued", "InProgress", "Completed"].index)
    completed = out["updates"][-1]
    assert completed["logs"] and completed["logs"][-1]["message"] == "Generation finished"
    assert completed["metrics"]["inference_time"] > 0
    # The image link is served by the mock itself, over the same TLS: real JPEG bytes.
    assert out["download"] == {"status": 200, "type": "image/jpeg", "head": "ffd8ffe0"}
    sync = out["run"]["ok"]
    assert [(i["width"], i["height"], i["content_type"]) for i in sync["images"]] == [
        (768, 1024, "image/png")
    ]


# --- serve_mock with TLS: one behaviour per test -----------------------------------------


async def test_submit_then_status_and_result_by_id_then_cancel_completed(
    serve_mock: Any, tls: TLSMaterial
) -> None:
    running, env = await serve_fal(serve_mock, tls, time_scale=40)
    out = await run_client(
        env,
        {"do": "submit", "input": {"prompt": "a red fox", "num_images": 2, "output_format": "png",
                                   "image_size": {"width": 640, "height": 480}}},
        {"do": "poll_until_done"},
        {"do": "result"},
        {"do": "cancel"},
    )
    statuses = out["statuses"]
    kinds = [s["type"] for s in statuses]
    assert kinds[-1] == "Completed" and kinds.count("Completed") == 1
    assert kinds == sorted(kinds, key=["Queued", "InProgress", "Completed"].index)
    positions = [s["position"] for s in statuses if s["type"] == "Queued"]
    assert positions == sorted(positions, reverse=True)
    images = out["result"]["ok"]["images"]
    assert [(i["width"], i["height"], i["content_type"]) for i in images] == [(640, 480, "image/png")] * 2
    # Cancelling a completed request: 400 ALREADY_COMPLETED, which fal-client raises.
    [cancel] = out["cancel"]
    assert cancel["error"]["status"] == 400 and "ALREADY_COMPLETED" in cancel["error"]["message"]
    # The client followed owner/app URLs without the /dev subpath, and sent its key.
    paths = {(e.method, e.path.split("/requests/")[0]) for e in running.server.journal.entries()}
    assert paths == {("POST", "/fal-ai/flux-1/dev"), ("GET", "/fal-ai/flux-1"), ("PUT", "/fal-ai/flux-1")}
    assert running.server.errors == []


async def test_cancel_while_queued(serve_mock: Any, tls: TLSMaterial) -> None:
    running, env = await serve_fal(serve_mock, tls, clock="manual", options={"runners": "1"})
    blocker = await running.server.request("POST", "/fal-ai/flux-1/dev", json={"prompt": "first"},
                                           headers=KEY)
    assert blocker.json_body()["queue_position"] == 0
    out = await run_client(
        env,
        {"do": "submit", "input": {"prompt": "second"}},
        {"do": "status"},
        {"do": "cancel"},
        {"do": "status"},
        {"do": "result"},
    )
    before, after = out["statuses"]
    assert before == {"type": "Queued", "position": 1}
    assert out["cancel"] == [{"ok": None}]
    assert after["type"] == "Completed" and after["error_type"] == "request_cancelled"
    assert out["result"]["error"]["status"] == 400
    # The cancelled request left the queue: the next one has only the blocker ahead.
    third = await running.server.request("POST", "/fal-ai/flux-1/dev", json={"prompt": "third"},
                                         headers=KEY)
    assert third.json_body()["queue_position"] == 1
    running.server.clock.advance(3600)
    first = await running.server.request(
        "GET", f"/fal-ai/flux-1/requests/{blocker.json_body()['request_id']}", headers=KEY
    )
    assert first.status == 200 and len(first.json_body()["images"]) == 1


async def test_webhook_delivered_to_local_receiver(
    serve_mock: Any, tls: TLSMaterial, receiver: Any
) -> None:
    running, env = await serve_fal(serve_mock, tls, time_scale=40)
    hook = receiver.url + "?user=1"
    out = await run_client(env, {"do": "submit", "input": {"prompt": "a webhook"}, "webhook": hook})
    payload = await asyncio.wait_for(receiver.queue.get(), 15)
    assert receiver.received[0]["query"] == {"user": "1"}
    assert payload["request_id"] == payload["gateway_request_id"] == out["request_id"]
    assert payload["status"] == "OK" and payload["error"] is None
    assert payload["payload"]["images"][0]["width"] == 1024
    trust = ssl.create_default_context(cafile=str(tls.ca_path))
    async with httpx.AsyncClient(verify=trust) as client:
        records = (await client.get(running.url + "/__mock/deliveries")).json()["deliveries"]
    assert [(d["reference"], d["status"]) for d in records] == [(out["request_id"], "delivered")]


async def test_invalid_input_surfaces_as_fal_client_http_error_422(
    serve_mock: Any, tls: TLSMaterial
) -> None:
    running, env = await serve_fal(serve_mock, tls, time_scale=40)
    out = await run_client(env, {"do": "subscribe", "input": {"prompt": "too many", "num_images": 9}})
    error = out["subscribe"]["error"]
    assert error["status"] == 422
    assert error["message"][0]["loc"] == ["body", "num_images"]
    assert error["message"][0]["type"] == "less_than_equal"
    # [V-3p] it was queued and COMPLETED first: the error only surfaces at the result.
    assert out["updates"][-1]["type"] == "Completed"
    assert running.server.errors == []


async def test_image_link_served_over_plain_http(serve_mock: Any) -> None:
    running = await serve_mock("fal", clock="manual", seed=2)
    async with httpx.AsyncClient(base_url=running.url, headers=KEY) as client:
        answer = await client.post("/fal-ai/flux-1/dev", json={"prompt": "x", "image_size": "square"})
        submit = answer.json()
        running.server.clock.advance(60)
        result = (await client.get(submit["response_url"])).json()
        image = await client.get(result["images"][0]["url"])
    assert image.status_code == 200
    assert Image.open(io.BytesIO(image.content)).size == (512, 512)


async def test_status_stream_over_a_socket_with_httpx_sse(serve_mock: Any) -> None:
    from httpx_sse import aconnect_sse

    running = await serve_mock("fal", time_scale=20, seed=4)
    async with httpx.AsyncClient(base_url=running.url, headers=KEY, timeout=10) as client:
        submit = (await client.post("/fal-ai/flux-1/dev", json={"prompt": "streamed"})).json()
        url = submit["status_url"] + "/stream"
        async with aconnect_sse(client, "GET", url, params={"logs": "1"}) as source:
            assert source.response.headers["x-fal-request-id"] == submit["request_id"]
            events = [json.loads(event.data) async for event in source.aiter_sse()]
    assert [e["status"] for e in events] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert events[-1]["logs"][-1]["message"] == "Generation finished"
    [exchange] = [e for e in running.server.journal.entries() if e.operation == "streamRequestStatus"]
    assert exchange.complete and len(exchange.events) == 3
