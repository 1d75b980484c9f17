"""Cloudsway over real sockets: the seed's curl examples, the CLI, and the respx adapter."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from PIL import Image

from imagegen_conformance.mocks import MockServer, mock_router

CLI = [sys.executable, "-m", "imagegen_conformance"]


def curl(*args: str) -> str:
    assert shutil.which("curl"), "curl is needed to run the seed's own examples"
    return subprocess.run(["curl", "-sS", *args], check=True, capture_output=True, text=True,
                          timeout=20).stdout


def test_seed_curl_examples_against_serve(serve_cli: Any) -> None:
    proc = serve_cli("--provider", "cloudsway", "--port", "0", "--time-scale", "50")
    name, base = proc.readline().split()
    assert name == "cloudsway" and base.startswith("http://127.0.0.1:")

    # The seed's create example, verbatim but for the host.
    created = json.loads(curl(
        "--request", "POST",
        "--url", f"{base}/v2/ai/lXynAhfbAiD/images/generations",
        "--header", "Authorization: Bearer ${AccessKey}",
        "--header", "User-Agent: Apifox/1.0.0 (https://apifox.com)",
        "--header", "content-type: application/json",
        "--header", "Accept: */*",
        "--header", "Connection: keep-alive",
        "--data-raw", '{\n"prompts": "A fruit basket containing dragon fruit, mango, guava, apple, '
        'and banana.",\n"aspect_ratio": "2:3",\n"batchsize": "2",\n"step": 10\n}',
    ))
    assert created["status"] == "success"
    task_id = created["taskId"]

    # The seed's query example: host replaced, its trailing space dropped (curl rejects it).
    deadline = time.monotonic() + 10
    while True:
        body = json.loads(curl(
            "--location", "--request", "GET",
            f"{base}/v2/ai/lXynAhfbOiD/images/tasks/{task_id}",
            "--header", "Authorization: Bearer ${AccessKey}",
            "--header", "User-Agent: Apifox/1.0.0 (https://apifox.com)",
            "--header", "content-type: application/json",
            "--header", "Accept: */*",
            "--header", "Connection: keep-alive",
            "--data-raw", "",
        ))
        if body["completed"] or time.monotonic() > deadline:
            break
        assert body["status"] in ("pending", "processing")
        time.sleep(0.05)
    assert body["status"] == "completed"
    assert len(body["imageUrls"]) == 2
    for url in body["imageUrls"]:
        assert url.startswith(base)
        png = subprocess.run(["curl", "-sS", "--fail", url], check=True, capture_output=True,
                             timeout=20).stdout
        image = Image.open(io.BytesIO(png))
        assert (image.format, image.size) == ("PNG", (512, 768))
    assert proc.stop() == 0


def test_serve_json_lines_and_sigint_stop_cleanly(serve_cli: Any) -> None:
    proc = serve_cli("--provider", "cloudsway", "--port", "0", "--json")
    line = json.loads(proc.readline())
    assert line["kind"] == "listener" and line["provider"] == "cloudsway" and line["primary"]
    health = json.loads(curl(line["url"] + "/__mock/health"))
    assert health["status"] == "ok"
    assert proc.stop(signal.SIGINT) == 0


def test_port_in_use_names_the_port_and_the_flag(serve_cli: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run([*CLI, "serve", "-p", "cloudsway", "--port", str(port)],
                                capture_output=True, text=True, timeout=20)
    assert result.returncode == 2  # a usage error, as docs/harness.md says
    assert f"port {port}" in result.stderr and "--port 0" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--provider", "cloudsay"], "Did you mean 'cloudsway'?", id="provider-typo"),
        pytest.param(["-p", "cloudsway", "--fault", "htp:500"], "Did you mean 'http'?", id="fault-typo"),
        pytest.param(["-p", "cloudsway", "--option", "ratio_9_16=1x1"], "valid values are",
                     id="option-value"),
        pytest.param(["-p", "cloudsway", "--lifecycle", "never"], "'time', 'polls'", id="lifecycle"),
    ],
)
def test_usage_errors_say_how_to_fix_them(args: list[str], message: str) -> None:
    result = subprocess.run([*CLI, "serve", *args], capture_output=True, text=True, timeout=20)
    assert result.returncode in (1, 2)
    assert message in result.stderr


def test_binding_beyond_loopback_warns(serve_cli: Any) -> None:
    proc = serve_cli("-p", "cloudsway", "--port", "0", "--host", "0.0.0.0")
    proc.readline()
    proc.stop()
    assert proc.proc.stderr is not None
    assert "warning: binding 0.0.0.0" in proc.proc.stderr.read()


async def test_faults_over_real_sockets(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("cloudsway", clock="manual", seed=2)
    url = running.url + "/v2/ai/ep/images/generations"
    headers = {"Authorization": "Bearer k"}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.post(url, json={"prompts": "x"},
                                    headers={**headers, "X-Mock-Fault": "reset"}) as resp:
                await resp.read()
        async with session.post(url, json={"prompts": "x"},
                                headers={**headers, "X-Mock-Fault": "malformed"}) as resp:
            assert resp.status == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(await resp.read())
        async with session.post(url, json={"prompts": "x"},
                                headers={**headers, "X-Mock-Fault": "rate_limit:4"}) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "4"
        # The mock is still healthy after a dropped connection.
        async with session.post(url, json={"prompts": "x"}, headers=headers) as resp:
            assert resp.status == 200


async def test_huge_body_is_refused_without_being_read(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("cloudsway", clock="manual")
    host, port = running.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v2/ai/ep/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500000000\r\n\r\n{\"prompts\":"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413")
    writer.close()


def _no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


async def test_respx_adapter_async_client_under_the_real_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_sockets(monkeypatch)
    server = MockServer("cloudsway", clock="manual", seed=5)
    base = "https://genaiapi.cloudsway.net/v2/ai/lXynAhfbAiD"
    headers = {"Authorization": "Bearer k"}
    with mock_router(server):
        async with httpx.AsyncClient() as client:
            created = await client.post(f"{base}/images/generations", headers=headers,
                                        json={"prompts": "x", "aspect_ratio": "16:9"})
            task_id = created.json()["taskId"]
            first = await client.get(f"{base}/images/tasks/{task_id}", headers=headers)
            assert first.json()["status"] == "pending"
            server.clock.advance(60)
            done = (await client.get(f"{base}/images/tasks/{task_id}", headers=headers)).json()
            assert done["completed"] is True
            (url,) = done["imageUrls"]
            assert url.startswith("https://genaiapi.cloudsway.net/images/")
            image = await client.get(url)
            assert Image.open(io.BytesIO(image.content)).size == (1280, 720)
    assert [e.operation for e in server.journal.entries()] == [
        "createImageTask", "getImageTask", "getImageTask", "downloadImage"
    ]


def test_respx_adapter_sync_client_and_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_sockets(monkeypatch)
    server = MockServer("cloudsway", clock="manual", seed=5)
    base = "https://genaiapi.cloudsway.net/v2/ai/ep"
    with mock_router(server), httpx.Client() as client:
        created = client.post(f"{base}/images/generations", headers={"Authorization": "Bearer k"},
                              json={"prompts": "x"})
        assert created.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(f"{base}/images/generations",
                        headers={"Authorization": "Bearer k", "X-Mock-Fault": "reset"},
                        json={"prompts": "x"})
        unauth = client.get(f"{base}/images/tasks/{created.json()['taskId']}")
        assert unauth.status_code == 401


def test_readme_serve_command_and_help_are_true() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "imagegen-conformance serve --provider cloudsway --port 8701" in readme
    result = subprocess.run([*CLI, "serve", "--help"], capture_output=True, text=True, timeout=20,
                            env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0
    for flag in ("--provider", "--port", "--time-scale", "--lifecycle", "--seed", "--api-key",
                 "--fault", "--tls", "--json"):
        assert flag in result.stdout


async def test_odd_paths_get_the_providers_404_over_sockets(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("cloudsway", clock="manual")
    async with aiohttp.ClientSession() as session, session.get(
        running.url + "/v2/ai/a%0Ab/images/tasks/x%0Ay", headers={"Authorization": "Bearer k"}
    ) as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["error"]["message"].startswith("task ")


async def test_a_wrong_base_url_is_refused_over_sockets(serve_mock) -> None:  # type: ignore[no-untyped-def]
    running = await serve_mock("cloudsway", clock="manual")
    auth = {"Authorization": "Bearer k"}
    body = {"prompts": "a fox", "aspect_ratio": "1:1"}
    async with httpx.AsyncClient(base_url=running.url) as client:
        wrong = await client.post("/foo/bar/ep1/images/generations", json=body, headers=auth)
        doubled = await client.post("/v2/ai/v2/ai/ep1/images/generations", json=body, headers=auth)
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "NO_ENDPOINT"
    assert doubled.status_code == 200 and doubled.json()["status"] == "success"
