"""fal over real sockets: the official fal-client, unmodified, pointed at the mock over HTTPS.

fal-client reads FAL_QUEUE_RUN_HOST / FAL_RUN_HOST when it is imported and hard-codes
``https://``, so every client run is a fresh interpreter told where to go by environment
variables alone: the two hosts, SSL_CERT_FILE (httpx trusts it because fal-client's clients
keep httpx's default ``trust_env=True``) and FAL_KEY.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
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
    elif name == "stream":
        out["stream"] = attempt(lambda: list(fal_client.stream(APP, arguments=step["input"])))
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
    assert out["result"]["error"]["status"] == 499  # [V] what a fal app answers a cancelled request
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

    running = await serve_mock("fal", time_scale=5, seed=4)
    async with httpx.AsyncClient(base_url=running.url, headers=KEY, timeout=10) as client:
        submit = (await client.post("/fal-ai/flux-1/dev", json={"prompt": "streamed"})).json()
        url = submit["status_url"] + "/stream"
        async with aconnect_sse(client, "GET", url, params={"logs": "1"}) as source:
            assert source.response.headers["x-fal-request-id"] == submit["request_id"]
            events = [json.loads(event.data) async for event in source.aiter_sse()]
    # (On a loaded machine the stream may open after the request left the queue.)
    assert list(dict.fromkeys(e["status"] for e in events))[-2:] == ["IN_PROGRESS", "COMPLETED"]
    # One event per new log line, each line sent once.
    lines = [line["message"] for e in events for line in e["logs"] or []]
    assert lines[0] == "Starting generation" and lines[-1] == "Generation finished"
    assert len(lines) == len(set(lines)) == 30
    [exchange] = [e for e in running.server.journal.entries() if e.operation == "streamRequestStatus"]
    assert exchange.complete and len(exchange.events) == len(events)


# --- streaming: fal_client.stream, fal-js fal.stream and streaming subscribe -------------


async def test_fal_client_stream_yields_partials_then_the_output(serve_mock: Any, tls: TLSMaterial) -> None:
    running, env = await serve_fal(serve_mock, tls, time_scale=40)
    out = await run_client(env, {"do": "stream", "input": {"prompt": "streamed", "image_size": "square"}})
    events = out["stream"]["ok"]
    *partials, final = events
    assert len(partials) == 3 and all(p["images"][0]["url"].startswith("data:image/jpeg;base64,")
                                      for p in partials)
    assert final["prompt"] == "streamed" and final["images"][0]["url"].startswith("https://127.0.0.1:")
    [exchange] = [e for e in running.server.journal.entries() if e.operation == "streamRun"]
    assert exchange.path == "/fal-ai/flux-1/dev/stream" and exchange.role == "run"
    assert running.server.errors == []


JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="session")
def fal_js() -> Path:
    """tests/js with @fal-ai/client installed (npm ci from the committed lock file, once)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the fal-js tests (the README's set-up installs them)")
    if not (JS_DIR / "node_modules" / "@fal-ai" / "client").is_dir():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm ci in {JS_DIR} failed:\n{done.stdout}\n{done.stderr}"
    return JS_DIR / "fal_client.mjs"


async def run_js(script: Path, running: Any, *steps: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    args = {"queue": running.role_url("queue"), "run": running.role_url("run"), "steps": list(steps)}
    proc = await asyncio.create_subprocess_exec(
        "node", str(script), json.dumps(args), cwd=script.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("fal-js did not finish in time") from None
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_fal_js_stream_yields_partials_and_done_is_the_output(serve_mock: Any, fal_js: Path) -> None:
    running = await serve_mock("fal", time_scale=40, seed=5)
    out = await run_js(fal_js, running, {"do": "stream", "input": {"prompt": "js stream"}})
    events, done = out["stream"]["events"], out["stream"]["done"]
    assert len(events) == 4 and events[-1] == done
    assert done["prompt"] == "js stream" and done["images"][0]["url"].startswith(running.role_url("run"))
    assert out["stream"]["requestId"]
    assert running.server.errors == []


@pytest.mark.parametrize("mode", ["streaming", "polling"])
async def test_fal_js_subscribe_sees_each_log_line_once(serve_mock: Any, fal_js: Path, mode: str) -> None:
    running = await serve_mock("fal", time_scale=20, seed=5)
    body = {"prompt": "js logs", "num_inference_steps": 8}
    out = await run_js(fal_js, running, {"do": "subscribe", "input": body, "mode": mode})
    assert out["subscribe"]["data"]["prompt"] == "js logs"
    updates = out["subscribe"]["updates"]
    assert updates[-1]["status"] == "COMPLETED"
    # What the application sees in its last update: every line, once, in order.
    messages = [line["message"] for line in updates[-1]["logs"]]
    assert messages == ["Starting generation", *[f"Step {k}/8" for k in range(1, 9)], "Generation finished"]
    operations = {e.operation for e in running.server.journal.entries()}
    assert ("streamRequestStatus" in operations) == (mode == "streaming")


# --- signed webhooks ----------------------------------------------------------------------


def verify_fal_webhook(headers: dict[str, str], body: bytes, jwks: dict[str, Any], now: float) -> bool:
    """A receiver's check, written from fal's documented steps (not from the mock's code)."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        request_id, user_id, stamp, signature = (lower[f"x-fal-webhook-{n}"]
                                                 for n in ("request-id", "user-id", "timestamp", "signature"))
    except KeyError:
        return False
    if abs(now - int(stamp)) > 300:
        return False
    message = "\n".join([request_id, user_id, stamp, hashlib.sha256(body).hexdigest()]).encode()
    for key in jwks["keys"]:
        public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"]))
        try:
            public.verify(bytes.fromhex(signature), message)
            return True
        except InvalidSignature:
            continue
    return False


@pytest.mark.parametrize(("option", "valid"), [("valid", True), ("invalid", False), ("absent", False)])
async def test_webhook_receiver_verifies_the_signature_against_the_mock_jwks(
    serve_mock: Any, receiver: Any, option: str, valid: bool
) -> None:
    running = await serve_mock("fal", time_scale=40, seed=9, options={"webhook_signature": option})
    async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
        jwks = (await client.get("/.well-known/jwks.json")).json()
        answer = await client.post("/fal-ai/flux-1/dev", params={"fal_webhook": receiver.url},
                                   headers={"Authorization": "Key abc:def"}, json={"prompt": "signed"})
        submit = answer.json()
    await asyncio.wait_for(receiver.queue.get(), 15)
    [got] = receiver.received
    assert verify_fal_webhook(got["headers"], got["raw"], jwks, running.server.clock.now()) is valid
    if option != "absent":
        assert got["headers"]["X-Fal-Webhook-Request-Id"] == submit["request_id"]
        assert got["headers"]["X-Fal-Webhook-User-Id"] == "abc"
    # The key set is fal's documented shape; the docs' own decoder (urlsafe_b64decode) reads x.
    [key] = jwks["keys"]
    assert (key["kty"], key["crv"]) == ("OKP", "Ed25519") and len(base64.urlsafe_b64decode(key["x"])) == 32
    assert time.time() - int(got["headers"].get("X-Fal-Webhook-Timestamp", time.time())) < 300
