"""Reporters: JSON, JUnit XML, a self-contained HTML page, and the terminal (rich)."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from imagegen_conformance.mocks.engine import Exchange, redact_exchange, redact_text

from ..rules._deviation import Deviation, Severity
from ._report import Report, ScenarioResult

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


# --- HTML --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px}h2{font-size:17px;margin:0}code,pre{font:12px/1.4 ui-monospace,Menlo,monospace}
.scenario{border:1px solid #d5d9e2;border-radius:6px;margin:16px 0;padding:12px 16px}
.passed{border-left:6px solid #2e9e55}.failed{border-left:6px solid #d23b3b}
.skipped{border-left:6px solid #999}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;color:#fff}
.b-passed{background:#2e9e55}.b-failed{background:#d23b3b}.b-skipped{background:#999}
table{border-collapse:collapse;width:100%;margin:8px 0}
td,th{border-bottom:1px solid #eceef3;padding:3px 6px;text-align:left;vertical-align:top}
.sev-error,.sev-critical{color:#c62828;font-weight:600}.sev-warning{color:#a86b00}
.sev-info{color:#2a6f97}.track{position:relative;height:14px;background:#f3f4f8;min-width:200px}
.tick{position:absolute;top:1px;width:3px;height:12px;background:#4a6ee0}
.tick.err{background:#d23b3b}.tick.dl{background:#2e9e55}
.thumbs img{border:1px solid #ccd;margin:4px;max-width:160px}
details pre{background:#f6f7f9;padding:8px;overflow:auto;max-height:320px;white-space:pre-wrap}
.muted{color:#6b7280}
"""


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, default=str))


def _pretty(text: str | None) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def _timeline(exchanges: Iterable[Exchange], flagged: set[int]) -> str:
    items = [redact_exchange(e) for e in exchanges]
    if not items:
        return "<p class='muted'>No exchanges.</p>"
    t0 = items[0].provider_time
    span = max(items[-1].provider_time - t0, 1e-9)
    rows = []
    for ex in items:
        rel = ex.provider_time - t0
        left = 100 * rel / span if span else 0
        kind = "dl" if ex.operation == "downloadImage" else ("err" if (ex.status or 500) >= 400 else "")
        mark = " ⚠" if ex.seq in flagged else ""
        faults = f"<br><span class='muted'>fault: {_e(', '.join(ex.faults))}</span>" if ex.faults else ""
        body = ""
        if ex.request_body:
            body += f"<b>request</b><pre>{_e(_pretty(ex.request_body))}</pre>"
        if ex.response_body:
            body += f"<b>response</b><pre>{_e(_pretty(ex.response_body))}</pre>"
        if ex.events:
            body += f"<b>stream ({len(ex.events)} chunks)</b><pre>{_e(''.join(ex.events))}</pre>"
        headers = _e(json.dumps(ex.request_headers, indent=1))
        rows.append(
            f"<tr><td>#{ex.seq}{mark}</td><td>+{rel:.2f}s</td>"
            f"<td><div class='track'><div class='tick {kind}' style='left:{left:.2f}%'></div></div></td>"
            f"<td><code>{_e(ex.method)} {_e(ex.path)}</code>{faults}"
            f"<details><summary>details</summary><b>request headers</b><pre>{headers}</pre>{body}"
            f"</details></td><td>{_e(ex.operation or '-')}</td><td>{ex.status or 'no answer'}</td>"
            f"<td>{'' if ex.duration_ms is None else f'{ex.duration_ms:.1f} ms'}</td></tr>"
        )
    return (
        "<table><tr><th>#</th><th>provider time</th><th>timeline</th><th>request</th>"
        "<th>operation</th><th>status</th><th>took</th></tr>" + "".join(rows) + "</table>"
    )


def _scenario_html(r: ScenarioResult, report: Report) -> str:
    state = "skipped" if r.skipped else ("passed" if r.passed(report.fail_on) else "failed")
    devs = "".join(
        f"<tr><td class='sev-{d.severity.label}'>{d.severity.label}</td><td>{_e(d.rule)}</td>"
        f"<td>{d.side.value}</td><td>{_e(d.message)}<br><span class='muted'>{_e(d.path or '')}</span>"
        f"</td><td>{_e(_short(d.expected))}</td><td>{_e(_short(d.actual))}</td>"
        f"<td>{' '.join(f'#{s}' for s in d.exchanges)}</td>"
        f"<td><code>{_e(d.reproduce or '')}</code></td></tr>"
        for d in r.deviations
    )
    dev_table = (
        "<table><tr><th>severity</th><th>rule</th><th>side</th><th>what</th><th>expected</th>"
        f"<th>actual</th><th>exchanges</th><th>reproduce</th></tr>{devs}</table>"
        if devs else "<p>No deviations.</p>"
    )
    res = r.result
    client = "not run" if res is None else (
        "succeeded" if res.ok else (
            "was stopped (timeout)" if res.timed_out else f"failed: {redact_text(res.error)}"
        )
    )
    thumbs = "".join(
        f"<figure style='display:inline-block'><img alt='image {i}' src='{img.thumbnail}'>"
        f"<figcaption class='muted'>{img.width}x{img.height} {_e(img.format or '')}</figcaption></figure>"
        for i, img in enumerate(res.images if res else []) if img.thumbnail
    )
    flagged = {s for d in r.deviations for s in d.exchanges}
    skipped = f"<p>Skipped: {_e(r.skipped)}</p>" if r.skipped else ""
    unjudged = "".join(
        f"<tr><td><code>{_e(n.rule)}</code></td><td>not judged: {_e(n.reason)}</td>"
        f"<td>{n.withheld or ''}</td></tr>" for n in r.not_judged
    )
    if unjudged:
        unjudged = ("<h3>Not judged</h3><table><tr><th>check</th><th>why</th>"
                    f"<th>deviations withheld</th></tr>{unjudged}</table>")
    frame = "" if r.frame is None else (
        f" · clock frame {_e(r.frame.kind)}"
        + ("" if r.frame.virtualized else f" (not virtualized: {_e(r.frame.reason or '')})")
    )
    return (
        f"<section class='scenario {state}' id='{_e(r.scenario)}'>"
        f"<h2>{_e(r.scenario)} <span class='badge b-{state}'>{state}</span></h2>"
        f"<p>{_e(r.summary)}</p>{skipped}"
        f"<p class='muted'>expect {_e(r.expect)} · time scale {r.time_scale:g}{frame} · "
        f"{r.seconds:.2f} s wall</p><p>Client {_e(client)}</p>"
        f"<div class='thumbs'>{thumbs}</div><h3>Deviations</h3>{dev_table}{unjudged}"
        f"<h3>Timeline</h3>{_timeline(r.exchanges, flagged)}</section>"
    )


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS, thumbnails as data URIs, no script, no network."""
    failing = len(report.failing())
    state = "passed" if report.ok else "failed"
    rows = "".join(
        f"<tr><td><a href='#{_e(r.scenario)}'>{_e(r.scenario)}</a></td>"
        f"<td>{'skipped' if r.skipped else ('passed' if r.passed(report.fail_on) else 'failed')}</td>"
        f"<td>{len(r.exchanges)}</td><td>{_e(', '.join(sorted({d.rule for d in r.deviations})) or '-')}"
        f"{f' ({len(r.not_judged)} not judged)' if r.not_judged else ''}</td></tr>"
        for r in report.results
    )
    when = datetime.fromtimestamp(report.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>imagegen-conformance: {_e(report.provider)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(report.provider)} conformance <span class='badge b-{state}'>{state}</span></h1>"
        f"<p>Client <code>{_e(report.client)}</code> · target {_e(report.target)} · {when} · "
        f"fail on {report.fail_on.label}: {failing} failing deviation(s)</p>"
        + (f"<p class='sev-error'>The target is unreachable: {_e(report.target_error)}</p>"
           if report.target_error else "") +
        f"<table><tr><th>scenario</th><th>result</th><th>exchanges</th><th>deviations</th></tr>"
        f"{rows}</table>{''.join(_scenario_html(r, report) for r in report.results)}"
        f"{_checks_html(report)}</body></html>\n"
    )


def _checks_html(report: Report) -> str:
    applied = {rule for r in report.results for rule in r.rules}
    rows = "".join(
        f"<tr><td><code>{_e(i.id)}</code></td><td class='sev-{i.severity.label}'>{i.severity.label}"
        f"</td><td>{i.side.value}</td><td>{_e(i.summary)}</td><td class='muted'>{_e(i.reads)}</td>"
        f"<td>{'applied' if i.id in applied else 'n/a here'}</td></tr>"
        for i in report.catalogue().values()
    )
    return (
        "<h2>Checks</h2><table><tr><th>id</th><th>severity</th><th>side</th><th>checks</th>"
        f"<th>reads</th><th></th></tr>{rows}</table>"
    )


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
