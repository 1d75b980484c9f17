"""Reporters: JSON, JUnit XML, a self-contained HTML page, and the terminal (rich)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..rules._deviation import Deviation, Severity
from ._html import render_html
from ._report import Report

__all__ = ["FORMATS", "render", "render_html", "render_json", "render_junit", "render_terminal"]

FORMATS = ("terminal", "json", "junit", "html")
_STYLE = {Severity.INFO: "cyan", Severity.WARNING: "yellow", Severity.ERROR: "red",
          Severity.CRITICAL: "bold red"}


def render_json(report: Report) -> str:
    return report.to_json()


# --- JUnit -------------------------------------------------------------------------------


def render_junit(report: Report) -> str:
    """One ``<testsuite>`` per scenario; one ``<testcase>`` per check that applied there."""
    catalogue = report.catalogue()
    root = ET.Element("testsuites", name=f"imagegen-conformance {report.provider}")
    total = failures = skipped = 0
    for result in report.results:
        suite = ET.SubElement(
            root, "testsuite", name=f"{result.provider}.{result.scenario}",
            timestamp=datetime.fromtimestamp(report.started_at, UTC).isoformat(timespec="seconds"),
            time=f"{result.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        frame = result.frame
        for name, value in (("client", result.client), ("target", result.target),
                            ("time_scale", str(result.time_scale)), ("summary", result.summary),
                            ("frame", frame.kind if frame else "-")):
            ET.SubElement(props, "property", name=name, value=value)
        if frame is not None and frame.reason:
            ET.SubElement(props, "property", name="frame_reason", value=frame.reason)
        unjudged = {n.rule: n for n in result.not_judged}
        s_tests = s_fail = s_skip = 0
        rule_ids = list(dict.fromkeys([*result.rules, *(d.rule for d in result.deviations), *unjudged]))
        for rule_id in rule_ids:
            s_tests += 1
            case = ET.SubElement(suite, "testcase", classname=f"{result.provider}.{result.scenario}",
                                 name=rule_id, time="0")
            if result.skipped:
                s_skip += 1
                ET.SubElement(case, "skipped", message=result.skipped)
                continue
            found = [d for d in result.deviations if d.rule == rule_id]
            if rule_id in unjudged and not found:
                s_skip += 1
                ET.SubElement(case, "skipped", message=f"not judged: {unjudged[rule_id].reason}")
                continue
            bad = [d for d in found if d.severity >= report.fail_on]
            info = catalogue.get(rule_id)
            if bad:
                s_fail += 1
                failure = ET.SubElement(
                    case, "failure", message=bad[0].message,
                    type=f"{bad[0].side.value}:{bad[0].severity.label}",
                )
                failure.text = "\n\n".join(_deviation_text(d) for d in bad)
            if found and not bad:
                out = ET.SubElement(case, "system-out")
                out.text = "\n\n".join(_deviation_text(d) for d in found)
            elif info is not None and not found:
                out = ET.SubElement(case, "system-out")
                out.text = info.summary
        suite.set("tests", str(s_tests))
        suite.set("failures", str(s_fail))
        suite.set("errors", "0")
        suite.set("skipped", str(s_skip))
        total, failures, skipped = total + s_tests, failures + s_fail, skipped + s_skip
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    root.set("skipped", str(skipped))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _deviation_text(d: Deviation) -> str:
    lines = [str(d)]
    if d.expected is not None or d.actual is not None:
        lines.append(f"  expected: {_short(d.expected)}")
        lines.append(f"  actual:   {_short(d.actual)}")
    if d.reproduce:
        lines.append(f"  reproduce: {d.reproduce}")
    if d.rerun and d.rerun != d.reproduce:
        lines.append(f"  rerun: {d.rerun}")
    return "\n".join(lines)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


# --- terminal ----------------------------------------------------------------------------


def render_terminal(report: Report, console: Console) -> None:
    """A table of scenarios, then each deviation with its evidence and how to reproduce it."""
    table = Table(title=f"{report.provider}: {report.client}  (target {report.target})",
                  title_justify="left")
    table.add_column("scenario")
    table.add_column("result")
    table.add_column("client")
    table.add_column("exchanges", justify="right")
    table.add_column("deviations")
    for r in report.results:
        if r.skipped:
            status = Text("skipped", "dim")
        elif r.passed(report.fail_on):
            status = Text("passed", "green")
        else:
            status = Text("FAILED", "bold red")
        client = "-" if r.result is None else ("ok" if r.result.ok else (
            "timed out" if r.result.timed_out else "error"))
        devs = Text(", ".join(sorted({d.rule for d in r.deviations})) or "-")
        if r.not_judged:
            devs.append(f" ({len(r.not_judged)} not judged)", "yellow")
        table.add_row(r.scenario, status, client, str(len(r.exchanges)), devs)
    console.print(table)
    if report.target_error:
        console.print(Text(f"the target is unreachable: {report.target_error}", "bold red"))
    # Evidence lines are never wrapped (soft_wrap): piped into a CI log, where rich would wrap at
    # 80 columns, a reproduce line stays one line that can be copied and run.
    def line(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    for r in report.results:
        for n in r.not_judged:
            console.print(Text(f"{r.scenario}: ", "bold") + Text(str(n), "yellow"))
        for d in r.deviations:
            console.print(Text(f"{r.scenario}: ", "bold") + Text(str(d), _STYLE[d.severity]),
                          soft_wrap=True)
            if d.expected is not None or d.actual is not None:
                line(f"    expected: {_short(d.expected, 160)}")
                line(f"    actual:   {_short(d.actual, 160)}")
            if d.reproduce:
                line(f"    reproduce: {d.reproduce}")
            if d.rerun and d.rerun != d.reproduce:
                line(f"    rerun: {d.rerun}")
    failing = report.failing()
    if report.target_error:
        console.print(Text(f"exit {report.exit_code}: the target failed, not the client", "bold red"))
    elif failing:
        console.print(Text(f"{len(failing)} deviation(s) at or above {report.fail_on.label}", "bold red"))
    else:
        below = len(report.deviations)
        console.print(Text(
            "no deviations" if not below else f"ok: {below} deviation(s) below {report.fail_on.label}",
            "bold green",
        ))


def render(report: Report, fmt: str, console: Console | None = None) -> str | None:
    """Render ``report`` in ``fmt``; the terminal format prints and returns None."""
    if fmt == "terminal":
        render_terminal(report, console or Console())
        return None
    if fmt == "json":
        return render_json(report)
    if fmt == "junit":
        return render_junit(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown report format {fmt!r}; valid: {', '.join(FORMATS)}")
