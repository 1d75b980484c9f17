"""Live rules end to end: clients in other languages against ``serve --check``, gated by ``verify``.

The mock runs on a scaled clock (2x) with ``--lifecycle polls`` (a task finishes after a fixed
number of polls, whatever the time), so a run takes a few seconds and nothing depends on a
wall-clock margin: the well-behaved clients wait a whole provider second between polls (twice
the contract's minimum, and a slow machine only makes the gap longer); the faulty ones do not
wait at all (a gap of a few milliseconds where 250 would still be too fast).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

CLIENTS = Path(__file__).with_name("clients")
SCALE = "2"

CLIENT_COMMANDS = {
    "node-no-pause": ["node", str(CLIENTS / "cloudsway_no_pause.mjs")],
    "node-well-behaved": ["node", str(CLIENTS / "cloudsway_client.mjs")],
    "bash-curl-no-pause": ["bash", str(CLIENTS / "cloudsway_client.sh"), "--no-pause"],
    "bash-curl-well-behaved": ["bash", str(CLIENTS / "cloudsway_client.sh")],
}


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagegen_conformance", "verify", *args],
                          capture_output=True, text=True, timeout=60)


def run_client(name: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGEGEN_BASE_URL": url, "IMAGEGEN_API_KEY": "my-own-key",
           "IMAGEGEN_TIME_SCALE": SCALE, "IMAGEGEN_OUTPUT_DIR": str(tmp_path),
           "IMAGEGEN_REQUEST": json.dumps({"prompts": "a fox", "aspect_ratio": "1:1"})}
    return subprocess.run(CLIENT_COMMANDS[name], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def checked_mock(serve_cli: Callable[..., Any]) -> Any:
    """``serve --check`` in a subprocess, as a developer would start it; its URL on ``.url``."""
    proc = serve_cli("-p", "cloudsway", "--port", "0", "--check", "--time-scale", SCALE,
                     "--lifecycle", "polls")
    proc.url = proc.readline().split()[1]
    return proc


@pytest.mark.parametrize("name", [
    pytest.param("node-no-pause", id="node-polls-with-no-pause"),
    pytest.param("bash-curl-no-pause", id="bash-curl-polls-with-no-pause"),
])
def test_a_client_polling_with_no_pause_is_caught_live_and_fails_verify(
    name: str, checked_mock: Any, tmp_path: Path,
) -> None:
    if shutil.which(CLIENT_COMMANDS[name][0]) is None:
        pytest.fail(f"{CLIENT_COMMANDS[name][0]} is needed for this test (.ci/run installs it)")
    ran = run_client(name, checked_mock.url, tmp_path)
    assert ran.returncode == 0, ran.stderr
    found = httpx.get(checked_mock.url + "/__mock/deviations").json()
    assert [d["rule"] for d in found["deviations"]] == ["client.poll-interval"]
    dev = found["deviations"][0]
    assert dev["side"] == "client" and dev["expected"] == ">= 0.5 s"
    assert dev["reproduce"].startswith(f"curl -sS -X GET {checked_mock.url}/v2/ai/")
    assert "my-own-key" not in json.dumps(found)  # told apart by a fingerprint, never the key
    gate = verify("--target", checked_mock.url)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "client.poll-interval" in gate.stdout
    assert checked_mock.stop() == 0
    printed = checked_mock.proc.stdout.read()
    assert "cloudsway deviation #1 [error] client.poll-interval (client)" in printed
    assert "    expected:  >= 0.5 s" in printed and "    reproduce: curl -sS -X GET" in printed


@pytest.mark.parametrize("name", [
    pytest.param("node-well-behaved", id="node-well-behaved"),
    pytest.param("bash-curl-well-behaved", id="bash-curl-well-behaved"),
])
def test_a_well_behaved_client_passes_verify(name: str, checked_mock: Any, tmp_path: Path) -> None:
    if shutil.which(CLIENT_COMMANDS[name][0]) is None:
        pytest.fail(f"{CLIENT_COMMANDS[name][0]} is needed for this test (.ci/run installs it)")
    ran = run_client(name, checked_mock.url, tmp_path)
    assert ran.returncode == 0, ran.stderr
    found = httpx.get(checked_mock.url + "/__mock/deviations").json()
    assert found["deviations"] == []
    (client,) = found["clients"]
    ops = [e["operation"] for e in httpx.get(checked_mock.url + "/__mock/journal").json()["exchanges"]]
    assert ops[0] == "createImageTask" and "getImageTask" in ops and ops[-1] == "downloadImage"
    assert len(client["exchanges"]) == len(ops)  # its downloads (no key) are its own too
    out = tmp_path / "live.xml"
    gate = verify("--target", checked_mock.url, "--report", "junit", "--out", str(out))
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "<testsuite" in out.read_text()


def test_two_clients_are_told_apart_by_key(checked_mock: Any, tmp_path: Path) -> None:
    # Two well-behaved clients at once: their polls interleave, yet neither polls too fast.
    env = {**os.environ, "IMAGEGEN_BASE_URL": checked_mock.url, "IMAGEGEN_TIME_SCALE": SCALE}
    procs = [subprocess.Popen(CLIENT_COMMANDS["bash-curl-well-behaved"],
                              env={**env, "IMAGEGEN_API_KEY": f"key-{i}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    found = httpx.get(checked_mock.url + "/__mock/deviations").json()
    assert len(found["clients"]) == 2 and found["deviations"] == []
    assert verify("--target", checked_mock.url).returncode == 0


def test_serve_verbose_prints_one_redacted_line_per_exchange(serve_cli: Callable[..., Any]) -> None:
    proc = serve_cli("-p", "cloudsway", "--port", "0", "--verbose", "--clock", "manual")
    url = proc.readline().split()[1]
    secret = "sk-very-secret-key"
    headers = {"Authorization": f"Bearer {secret}"}
    created = httpx.post(url + "/v2/ai/e/images/generations", headers=headers,
                         json={"prompts": "x"}).json()
    failed = httpx.get(url + f"/v2/ai/e/images/tasks/{created['taskId']}",
                       params={"token": "signed-secret"},
                       headers={**headers, "X-Mock-Fault": "http:503"})
    assert failed.status_code == 503
    lines = [proc.readline(), proc.readline()]
    assert re.fullmatch(r"cloudsway #1 POST /v2/ai/e/images/generations -> 200 createImageTask "
                        r"[\d.]+ ms", lines[0]), lines
    assert re.fullmatch(r"cloudsway #2 GET /v2/ai/e/images/tasks/[\w-]+\?token=<redacted> -> 503 "
                        r"getImageTask fault=http:503 [\d.]+ ms", lines[1]), lines
    assert all(secret not in line and "signed-secret" not in line for line in lines)
