"""The ``run`` command end to end: command clients, exit codes 0/1/2, report files."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from junitparser import JUnitXml

from imagegen_conformance.harness.cli import main

REFERENCE = f"{sys.executable} -m imagegen_conformance.clients.cloudsway"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_reference_command_client_passes(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    chosen = ["happy-path", "task-fails", "bad-request"]  # all of them: test_reference_clients
    code, _, err = invoke("run", "-p", "cloudsway", "--client", REFERENCE, "--report", "json",
                          "--out", str(out), "--startup-slack", "15", *(f"-s{s}" for s in chosen))
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["ok"] is True
    assert [s["scenario"] for s in data["scenarios"]] == chosen
    assert all(not s["deviations"] for s in data["scenarios"])
    assert all(s["result"]["exit_code"] in (0, 1) for s in data["scenarios"])


def test_default_client_is_the_reference_one() -> None:
    code, stdout, _ = invoke("run", "-p", "cloudsway", "-s", "happy-path")
    assert code == 0
    assert "no deviations" in stdout


FAULTY = textwrap.dedent("""
    import json, os, sys, httpx
    base = os.environ["IMAGEGEN_BASE_URL"] + "/v2/ai/x/images"
    key = os.environ["IMAGEGEN_API_KEY"]
    r = httpx.post(base + "/generations", json=json.loads(os.environ["IMAGEGEN_REQUEST"]),
                   headers={"Authorization": "Token " + key})
    print(json.dumps({"error": {"message": f"HTTP {r.status_code} with key {key}"}}))
    sys.exit(1)
""")


def test_a_faulty_command_client_exits_1_and_writes_junit(tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(FAULTY)
    out = tmp_path / "junit.xml"
    code, _, err = invoke("run", "-p", "cloudsway", "-c", f"{sys.executable} {script}",
                          "-s", "happy-path", "--report", "junit", "--out", str(out))
    assert code == 1, err
    xml = JUnitXml.fromfile(str(out))
    failed = {case.name for suite in xml for case in suite if not case.is_passed}
    assert failed == {"client.auth-scheme", "scenario.outcome"}
    assert "imagegen-canary-" not in out.read_text()  # the client printed its key: redacted


@pytest.mark.parametrize("args", [
    pytest.param(["run", "-p", "nope"], id="unknown-provider"),
    pytest.param(["run", "-p", "cloudsway", "-s", "happy-pth"], id="unknown-scenario"),
    pytest.param(["run", "-p", "cloudsway", "--fail-on", "fatal"], id="bad-severity"),
    pytest.param(["run", "-p", "cloudsway", "--target", "ftp://x"], id="bad-target"),
    pytest.param(["run", "-p", "cloudsway", "-c", "no_such_module:run"], id="bad-callable"),
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, _, err = invoke(*args)
    assert code == 2
    assert "Error" in err


def test_unknown_scenario_suggests_the_closest() -> None:
    _, _, err = invoke("run", "-p", "cloudsway", "-s", "happy-pth")
    assert "Did you mean 'happy-path'?" in err


def test_rules_command_lists_what_applies() -> None:
    code, stdout, _ = invoke("rules", "-p", "cloudsway")
    assert code == 0
    assert "client.poll-interval" in stdout and "[applies]" in stdout and "[n/a]" in stdout


def test_a_javascript_client_runs_like_any_other(tmp_path: Path) -> None:
    client = Path(__file__).with_name("clients") / "cloudsway_client.mjs"
    out = tmp_path / "report.json"
    scenarios = ["happy-path", "batch-portrait", "rate-limited-create", "transient-poll-503",
                 "task-fails", "bad-request"]
    code, _, err = invoke("run", "-p", "cloudsway", "-c", f"node {client}", "--report", "json",
                          "--out", str(out), *(f"-s{s}" for s in scenarios))
    assert code == 0, err
    data = json.loads(out.read_text())
    assert [s["scenario"] for s in data["scenarios"]] == scenarios
    portrait = next(s for s in data["scenarios"] if s["scenario"] == "batch-portrait")
    assert [(i["width"], i["height"]) for i in portrait["result"]["images"]] == [(512, 768)] * 2


def test_respx_transport_serves_the_real_hostnames(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code, _, err = invoke("run", "-p", "cloudsway", "--transport", "respx", "--report", "json",
                          "--out", str(out), "-s", "happy-path", "-s", "transient-poll-503")
    assert code == 0, err
    data = json.loads(out.read_text())
    for scenario in data["scenarios"]:
        assert scenario["deviations"] == [] and scenario["result"]["ok"]
        urls = [i["url"] for i in scenario["result"]["images"]]
        assert urls and all(u.startswith("https://genaiapi.cloudsway.net/") for u in urls)


def test_respx_transport_needs_a_callable() -> None:
    code, _, err = invoke("run", "-p", "cloudsway", "--transport", "respx", "-c", "node x.mjs")
    assert code == 2 and "module:function" in err


def test_scenarios_command_lists_setup_and_expectation() -> None:
    code, stdout, _ = invoke("scenarios", "-p", "cloudsway")
    assert code == 0
    assert "transient-poll-503:" in stdout and "http:503;op=getImageTask;times=2" in stdout
    assert '"outcome": "gives_up"' in stdout


def test_a_client_that_cannot_start_is_a_usage_error(tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text("print('{}')\n")
    code, _, err = invoke("run", "-p", "cloudsway", "-c", str(script))
    assert code == 2 and f"Did you mean 'python {script}'?" in err
    code, _, err = invoke("run", "-p", "cloudsway", "-c", "no-such-client-binary --flag")
    assert code == 2 and "not found" in err
