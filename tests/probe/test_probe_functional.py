"""``probe`` against mocks in another process, addressed as remote base URLs (no internet)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from xml.etree import ElementTree as ET

from imagegen_conformance import contracts
from imagegen_conformance.harness.live._probe import probe_scenario
from imagegen_conformance.harness.rules._profile import profile

PHASES = ("submit", "queue", "run", "download")


def _env_for(urls: dict[str, str]) -> dict[str, str]:
    return {
        "FAL_KEY": "probe-key:secret", "FAL_QUEUE_BASE_URL": urls["fal"],
        "CLOUDSWAY_API_KEY": "probe-key-123", "CLOUDSWAY_BASE_URL": urls["cloudsway"],
        "CLOUDSWAY_ENDPOINT_PATH": "probe-ep",
        "ACEDATACLOUD_API_TOKEN": "probe-token-123", "ACEDATA_BASE_URL": urls["acedata"],
        "YUNYX_API_KEY": "sk-probe-123", "YUNYX_BASE_URL": urls["yunyx"],
        "DIFY_API_KEY": "app-probe-123", "DIFY_BASE_URL": urls["dify"],
    }


def test_probe_requests_are_valid_for_each_contract() -> None:
    for provider in contracts.available():
        contract = contracts.load(provider)
        scenario = probe_scenario(contract)
        creates = [p.operation for p in profile(provider).of_kind("create")] or [
            p.operation for p in profile(provider).of_kind("run")]
        assert creates, provider
        # The probe's request is valid for at least the operation the reference client uses.
        issues = [contracts.request_validator(provider, op).issues(dict(scenario.request))
                  for op in creates]
        assert any(not found for found in issues), (provider, issues)
        assert scenario.expect.images == 1


async def test_every_provider_healthy_with_every_phase_timed(
    serve_process, probe_cli, probe_env, tmp_path: Path
) -> None:
    urls = await serve_process("-p", "all", "--time-scale", "50")
    out = tmp_path / "probe.json"
    junit, prom = tmp_path / "probe.xml", tmp_path / "probe.prom"
    ran = await probe_cli("probe", "--json", str(out), "--junit", str(junit), "--prometheus", str(prom),
                          env=probe_env(**_env_for(urls)))
    assert ran.code == 0, ran.out + ran.err
    report = json.loads(out.read_text())
    assert {r["provider"] for r in report["results"]} == set(contracts.available())
    for result in report["results"]:
        assert result["status"] == "healthy", result
        assert result["drift"] == []
        assert all(isinstance(result["phases"][p], float) for p in PHASES), result
        assert result["images"] and result["images"][0]["width"], result
    assert "healthy" in ran.out and "fal" in ran.out  # the terminal table
    suite = ET.fromstring(junit.read_text())
    assert suite.get("failures") == "0" and suite.get("tests") == str(len(report["results"]))
    text = prom.read_text()
    assert 'imagegen_probe_up{provider="fal"} 1' in text
    for phase in PHASES:
        assert f'imagegen_probe_phase_seconds{{provider="dify",phase="{phase}"}}' in text


async def test_a_drifting_mock_is_reported_with_field_expectation_and_first_seen(
    serve_process, probe_cli, probe_env, tmp_path: Path
) -> None:
    urls = await serve_process(
        "-p", "fal", "--time-scale", "50",
        "--drift", "rename:request_id=requestId;op=submitRequest",  # a renamed field
        "--drift", "status:201;op=getRequestStatus",                # a changed status code
        "--drift", "drop:seed;op=getRequestResult",                 # a missing key
    )
    state = tmp_path / "state.json"
    env = probe_env(FAL_KEY="probe-key:secret", FAL_QUEUE_BASE_URL=urls["fal"])
    args = ("probe", "-p", "fal", "--state", str(state), "--json", "-", "--quiet")
    ran = await probe_cli(*args, env=env)
    assert ran.code == 1, ran.out + ran.err
    result = json.loads(ran.out)["results"][0]
    assert result["status"] == "drift"
    by_field = {d["field"]: d for d in result["drift"]}
    assert "response.body$.request_id" in by_field, by_field
    assert any(d["rule"] == "schema.status" and d["actual"] == 201 for d in result["drift"]), by_field
    assert "response.body$.seed" in by_field, by_field
    assert "'seed' is a required property" in by_field["response.body$.seed"]["expectation"]
    assert "requestId" in str(by_field["response.body$.request_id"]["actual"])  # what it said
    for drift in result["drift"]:
        assert drift["expected"] is not None and drift["first_seen"] and drift["message"]
    first_seen = {d["field"]: d["first_seen"] for d in result["drift"]}
    assert json.loads(state.read_text())["drift"]

    time.sleep(1.1)  # a later scheduled run: first-seen is remembered, last-seen moves
    again = await probe_cli(*args, env=env)
    assert again.code == 1
    later = json.loads(again.out)["results"][0]["drift"]
    assert {d["field"]: d["first_seen"] for d in later} == first_seen
    assert all(d["last_seen"] > d["first_seen"] for d in later)


async def test_drift_is_explained_on_the_terminal(serve_process, probe_cli, probe_env) -> None:
    urls = await serve_process("-p", "fal", "--time-scale", "50",
                               "--drift", "drop:response_url;op=submitRequest")
    ran = await probe_cli("probe", "-p", "fal",
                          env=probe_env(FAL_KEY="k:s", FAL_QUEUE_BASE_URL=urls["fal"]))
    assert ran.code == 1
    assert "drift" in ran.out and "response_url" in ran.out and "expected:" in ran.out


async def test_wrong_key_and_a_task_that_never_finishes(serve_process, probe_cli, probe_env) -> None:
    urls = await serve_process("-p", "fal", "--time-scale", "50", "--api-key", "right-key:secret",
                               "--fault", "never_finish;op=submitRequest")
    wrong = await probe_cli("probe", "-p", "fal", "--json", "-", "-q",
                            env=probe_env(FAL_KEY="wrong-key:secret", FAL_QUEUE_BASE_URL=urls["fal"]))
    assert wrong.code == 5, wrong.out + wrong.err
    assert json.loads(wrong.out)["results"][0]["status"] == "unauthorized"
    assert "wrong-key" not in wrong.out

    started = time.monotonic()
    stuck = await probe_cli("probe", "-p", "fal", "--timeout", "2", "--json", "-", "-q",
                            env=probe_env(FAL_KEY="right-key:secret", FAL_QUEUE_BASE_URL=urls["fal"]))
    assert stuck.code == 6, stuck.out + stuck.err
    result = json.loads(stuck.out)["results"][0]
    assert result["status"] == "timeout" and "--timeout" in result["message"]
    assert time.monotonic() - started < 20  # bounded by --timeout, not by the task


async def test_unreachable_and_not_configured(probe_cli, probe_env) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ran = await probe_cli("probe", "-p", "fal", "--connect-timeout", "3", "--json", "-", "-q",
                          env=probe_env(FAL_KEY="k:s", FAL_QUEUE_BASE_URL=f"http://127.0.0.1:{port}"))
    assert ran.code == 3, ran.out + ran.err
    assert json.loads(ran.out)["results"][0]["status"] == "unreachable"

    nothing = await probe_cli("probe", "--json", "-", "-q", env=probe_env())
    assert nothing.code == 4
    results = json.loads(nothing.out)["results"]
    assert {r["status"] for r in results} == {"not_configured"}
    dify = next(r for r in results if r["provider"] == "dify")
    assert set(dify["missing"]) == {"DIFY_API_KEY", "DIFY_BASE_URL"}


async def test_probe_help_documents_the_exit_codes(probe_cli, probe_env) -> None:
    ran = await probe_cli("probe", "--help", env=probe_env())
    assert ran.code == 0
    for line in ("3 unreachable", "5 unauthorized", "6 timeout", "1 drift", "4 not configured",
                 "0 healthy", "CLOUDSWAY_ENDPOINT_PATH", "DIFY_BASE_URL"):
        assert line in ran.out


async def test_a_base_url_with_a_base_path_is_no_drift(serve_process, probe_cli, probe_env,
                                                       tmp_path: Path) -> None:
    # docs/probe.md: the base URL may carry a base path. Cloudsway's image links are absolute
    # paths (/images/...): resolved as RFC 3986 says, they replace that path, and download.
    urls = await serve_process("-p", "cloudsway", "--time-scale", "50")
    out = tmp_path / "probe.json"
    env = probe_env(CLOUDSWAY_API_KEY="probe-key-123", CLOUDSWAY_ENDPOINT_PATH="probe-ep",
                    CLOUDSWAY_BASE_URL=urls["cloudsway"] + "/v2/ai/")
    ran = await probe_cli("probe", "-p", "cloudsway", "--json", str(out), env=env)
    assert ran.code == 0, ran.out + ran.err
    (result,) = json.loads(out.read_text())["results"]
    assert result["status"] == "healthy" and result["drift"] == [], result
    assert result["images"][0]["width"] and result["phases"]["download"] is not None, result
