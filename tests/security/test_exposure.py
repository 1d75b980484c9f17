"""`serve` binds loopback by default, warns before binding elsewhere; the admin API takes a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from imagegen_conformance.mocks import MockServer

SERVE = [sys.executable, "-m", "imagegen_conformance", "serve"]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc shows them) with a listening TCP socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    found.add(address)
    return found


@pytest.mark.timeout(30)
def test_serve_binds_loopback_by_default_and_the_admin_token_from_the_environment() -> None:
    env = {**os.environ, "IMAGEGEN_ADMIN_TOKEN": "s3cret-admin"}
    proc = subprocess.Popen([*SERVE, "-p", "cloudsway", "--port", "0", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 and nothing else
        with httpx.Client(base_url=url, timeout=5) as http:
            assert http.get("/__mock/health").status_code == 401
            assert http.get("/__mock/health", headers={"X-Admin-Token": "wrong"}).status_code == 401
            assert http.post("/__mock/reset", headers={"X-Admin-Token": ""}).status_code == 401
            assert http.get("/__mock/health", headers={"X-Admin-Token": "s3cret-admin"}).status_code == 200
            # The provider's own API does not need the admin token.
            created = http.post("/v2/ai/x/images/generations", headers={"Authorization": "Bearer k"},
                                json={"prompts": "p", "aspect_ratio": "1:1", "step": 4})
            assert created.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert "warning" not in err.lower()


@pytest.mark.timeout(30)
def test_serve_warns_before_binding_beyond_loopback() -> None:
    # 192.0.2.1 (TEST-NET-1) is not an address of this machine: the warning is printed, then
    # the bind fails, so nothing is ever exposed by this test.
    done = subprocess.run([*SERVE, "-p", "cloudsway", "--port", "0", "--host", "192.0.2.1"],
                          capture_output=True, text=True, timeout=25)
    assert "warning: binding 192.0.2.1 exposes the mocks" in done.stderr
    assert "--admin-token" in done.stderr
    assert done.returncode != 0
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_no_warning_for_loopback_hosts(host: str) -> None:
    from imagegen_conformance.mocks.engine import is_loopback

    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com", "192.0.2.1"])
def test_every_other_host_counts_as_exposed(host: str) -> None:
    from imagegen_conformance.mocks.engine import is_loopback

    assert not is_loopback(host)


async def test_admin_token_guards_every_admin_endpoint_in_process() -> None:
    server = MockServer("dify", clock="manual", admin_token="tok")
    for method, path in [("GET", "/__mock/"), ("GET", "/__mock/journal"), ("POST", "/__mock/reset"),
                         ("POST", "/__mock/faults"), ("POST", "/__mock/clock/advance"),
                         ("GET", "/__mock/tasks"), ("GET", "/__mock/deliveries")]:
        denied = await server.request(method, path, json={})
        assert denied.status == 401, (method, path)
    before = server.clock.now()
    await server.request("POST", "/__mock/clock/advance", json={"seconds": 60})
    assert server.clock.now() == before  # the refused call changed nothing
    allowed = await server.request("GET", "/__mock/journal", headers={"X-Admin-Token": "tok"})
    assert allowed.status == 200
