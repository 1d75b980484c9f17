"""Reports: JSON, JUnit read back by junitparser, one self-contained HTML file, the terminal."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from junitparser import Failure, JUnitXml
from rich.console import Console

from imagegen_conformance import contracts
from imagegen_conformance.harness import (
    CallableClient,
    Report,
    Severity,
    load_client,
    render_html,
    render_json,
    render_junit,
    render_terminal,
    run_scenario,
)

KEY = "imagegen-canary-report-0123456789abcdef"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def report(cloudsway_faulty_client: Callable[..., Any]) -> Report:
    contract = contracts.load("cloudsway")
    ref = load_client("imagegen_conformance.clients.cloudsway:run")
    fast = CallableClient(cloudsway_faulty_client(poll_every=0.01))
    out = Report("cloudsway", "mixed", "mock")
    for client, scenario in ((ref, "happy-path"), (ref, "batch-portrait"), (fast, "happy-path")):
        scale = 10.0 if client is fast else None  # a slow clock: the fast polls stay fast
        out.results.append(await run_scenario(contract, contract.scenario(scenario), client,
                                              startup_slack=1.0, api_key=KEY, time_scale=scale))
    return out


def test_json_report_carries_deviations_with_evidence(report: Report) -> None:
    data = json.loads(render_json(report))
    assert data["ok"] is False
    assert data["summary"]["scenarios"] == 3
    deviations = [d for s in data["scenarios"] for d in s["deviations"]]
    assert [d["rule"] for d in deviations] == ["client.poll-interval"]
    dev = deviations[0]
    assert dev["side"] == "client" and dev["severity"] == "error"
    assert dev["exchanges"] and dev["expected"].startswith(">=") and dev["reproduce"].startswith("curl")
    assert "client.poll-interval" in data["rules"]


def test_junit_is_read_back_by_junitparser(report: Report, tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    path.write_text(render_junit(report), encoding="utf-8")
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert [s.name for s in suites] == [
        "cloudsway.happy-path", "cloudsway.batch-portrait", "cloudsway.happy-path"
    ]
    cases = [(s.name, c.name, c.result) for s in suites for c in s]
    names = {c for _, c, _ in cases}
    assert {"schema.request", "client.poll-interval", "scenario.outcome"} <= names
    failed = [(s, c) for s, c, result in cases if any(isinstance(r, Failure) for r in result)]
    assert failed == [("cloudsway.happy-path", "client.poll-interval")]
    assert suites[2].failures == 1 and suites[0].failures == 0
    assert suites[0].tests == len(list(suites[0])) >= 10


def test_html_is_one_file_that_needs_no_network(report: Report) -> None:
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "@import" not in page and "url(" not in page
    for attr in re.findall(r"""(?:src|href)=['"]([^'"]*)['"]""", page):
        assert attr.startswith(("data:", "#")), attr
    assert page.count("data:image/png;base64,") == 4  # 1 + 2 + 1 images, each a thumbnail
    assert "client.poll-interval" in page and "timeline" in page


def test_terminal_report_names_rule_and_reproduction(report: Report) -> None:
    console = Console(record=True, width=200)
    render_terminal(report, console)
    text = console.export_text()
    assert "client.poll-interval" in text and "reproduce: curl" in text and "FAILED" in text


def test_no_report_contains_the_key(report: Report) -> None:
    console = Console(record=True, width=200)
    render_terminal(report, console)
    for text in (render_json(report), render_junit(report), render_html(report), console.export_text()):
        assert KEY not in text
    assert "<redacted>" in render_json(report)


def test_fail_on_sets_the_threshold(report: Report) -> None:
    assert report.exit_code == 1
    report.fail_on = Severity.CRITICAL
    try:
        assert report.exit_code == 0
    finally:
        report.fail_on = Severity.ERROR


async def test_signed_links_are_redacted_in_reports() -> None:
    contract = contracts.load("yunyx")
    client = load_client("imagegen_conformance.clients.yunyx:run")  # its 403 message quotes the signed link
    result = await run_scenario(contract, contract.scenario("expired-link"), client, startup_slack=1.0)
    # The default OSS-style link signs with Signature= (and names its key in OSSAccessKeyId=).
    assert result.result is not None and "Signature=" in (result.result.error or "")
    raw = result.exchanges[0].response_body or ""
    assert "Signature" in raw  # the mock's own journal keeps the link whole
    out = Report("yunyx", "c", "mock")
    out.results.append(result)
    for text in (render_json(out), render_html(out)):
        for name in ("Signature", "OSSAccessKeyId"):
            values = re.findall(name + r"=([^&\\\"'<\s]+)", text)
            assert values and set(values) == {"REDACTED"}, name
    assert "Signature=" not in render_junit(out).replace("Signature=REDACTED", "")
