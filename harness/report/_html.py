"""The HTML report: one self-contained page (inline CSS and SVG, no script, no network).

* each deviation links to the exchanges it points at (``#s<scenario>-x<seq>``), highlighted
  when reached (``:target``);
* runs of identical exchanges (a client polling a task that does not move) collapse into one
  row with their count and time span, so a never-finishing task stays a few rows;
* a timeline per scenario: one lane per task (its create, polls, results, downloads, errors),
  drawn to scale in provider time; each mark links to its exchange;
* a schema deviation shows what the schema expects next to what was sent, at the schema path;
* a filter by rule, severity and side: checkboxes whose state CSS ``:has()`` reads, no script.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from imagegen_conformance import contracts
from imagegen_conformance.mocks.engine import Exchange, redact_exchange, redact_text

from ..rules._deviation import Deviation
from ..rules._profile import profile
from ..rules._rules import RuleContext
from ._report import Report, ScenarioResult

__all__ = ["render_html"]

TRACK = 900  # px: the timeline's width for the whole scenario
LANE = 18  # px: one task's lane
LABEL = 150  # px: the lane names
BUCKET = 3  # px: marks of one kind closer than this merge into one (count in its title)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px}h2{font-size:17px;margin:0}h3{font-size:15px;margin:14px 0 4px}
code,pre{font:12px/1.4 ui-monospace,Menlo,monospace}
.scenario{border:1px solid #d5d9e2;border-radius:6px;margin:16px 0;padding:12px 16px}
.passed{border-left:6px solid #2e9e55}.failed{border-left:6px solid #d23b3b}
.skipped{border-left:6px solid #999}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;color:#fff}
.b-passed{background:#2e9e55}.b-failed{background:#d23b3b}.b-skipped{background:#999}
table{border-collapse:collapse;width:100%;margin:8px 0}
td,th{border-bottom:1px solid #eceef3;padding:3px 6px;text-align:left;vertical-align:top}
.sev-error,.sev-critical{color:#c62828;font-weight:600}.sev-warning{color:#a86b00}
.sev-info{color:#2a6f97}
.thumbs img{border:1px solid #ccd;margin:4px;max-width:160px}
details pre{background:#f6f7f9;padding:8px;overflow:auto;max-height:320px;white-space:pre-wrap}
.muted{color:#6b7280}.flagged td:first-child{font-weight:700;color:#c62828}
tr:target,tr:target td{background:#fff3cd;outline:2px solid #e0a800}
.cmp{display:flex;gap:12px}.cmp>div{flex:1;min-width:0}.cmp pre{margin:2px 0}
.filters{border:1px solid #d5d9e2;border-radius:6px;padding:6px 12px;margin:8px 0}
.filters label{margin-right:12px;white-space:nowrap}.filters b{margin-right:6px}
.run td{background:#f7f8fb}tr.cmp-row td{border-bottom:1px solid #d5d9e2}
svg.timeline{display:block;margin:4px 0}svg text{font:11px system-ui,sans-serif;fill:#4b5563}
.lane{fill:#f3f4f8}.axis{stroke:#c9ccd6}
.k-create{fill:#6b4fd8}.k-poll{fill:#4a6ee0}.k-result,.k-run{fill:#0f8b8d}.k-download{fill:#2e9e55}
.k-other,.k-cancel{fill:#8a8f9c}.k-error{fill:#d23b3b}.k-stream{fill:#c27c0e}
.fault{stroke:#111;stroke-width:1}
.legend span{display:inline-block;width:10px;height:10px;margin:0 3px 0 10px;vertical-align:middle}
"""


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, default=str), quote=True)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _pretty(value: Any, limit: int = 4000) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)[:limit]
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "\n..."


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in value)


# --- rows: exchanges, collapsed when they repeat --------------------------------------


@dataclass
class Row:
    """One exchange, or a run of identical ones."""

    items: list[Exchange]

    @property
    def first(self) -> Exchange:
        return self.items[0]


def _same(a: Exchange, b: Exchange) -> bool:
    return (a.method, a.path, a.query, a.status, a.operation, a.request_body, a.response_body) == (
        b.method, b.path, b.query, b.status, b.operation, b.request_body, b.response_body
    ) and not (a.faults or b.faults or a.error or b.error or a.events or b.events)


def collapse(exchanges: Iterable[Exchange], flagged: set[int]) -> list[Row]:
    """Consecutive identical exchanges (same request, same answer) as one row; a flagged one
    (a deviation points at it) always keeps a row of its own."""
    rows: list[Row] = []
    for ex in exchanges:
        last = rows[-1] if rows else None
        if (last is not None and ex.seq not in flagged and last.first.seq not in flagged
                and _same(last.items[-1], ex)):
            last.items.append(ex)
        else:
            rows.append(Row([ex]))
    return rows


def _anchor(scenario: int, seq: int) -> str:
    return f"s{scenario}-x{seq}"


def _exchange_details(ex: Exchange) -> str:
    body = f"<b>request headers</b><pre>{_e(json.dumps(ex.request_headers, indent=1))}</pre>"
    if ex.request_body:
        body += f"<b>request</b><pre>{_e(_pretty(ex.request_body))}</pre>"
    if ex.response_body:
        body += f"<b>response</b><pre>{_e(_pretty(ex.response_body))}</pre>"
    if ex.events:
        body += (f"<b>stream ({len(ex.events)} chunks)</b>"
                 f"<pre>{_e(''.join(ex.events)[:8000])}</pre>")
    if ex.error:
        body += f"<b>error</b><pre>{_e(ex.error[-4000:])}</pre>"
    return f"<details><summary>details</summary>{body}</details>"


def _exchange_rows(index: int, rows: list[Row], t0: float, flagged: set[int]) -> str:
    out = []
    for row in rows:
        ex = row.first
        rel = ex.provider_time - t0
        faults = f"<br><span class='muted'>fault: {_e(', '.join(ex.faults))}</span>" if ex.faults else ""
        took = "" if ex.duration_ms is None else f"{ex.duration_ms:.1f} ms"
        status = ex.status or "no answer"
        if len(row.items) == 1:
            mark = " class='ex flagged'" if ex.seq in flagged else " class='ex'"
            out.append(
                f"<tr id='{_anchor(index, ex.seq)}'{mark}><td>#{ex.seq}</td><td>+{rel:.2f}s</td>"
                f"<td><code>{_e(ex.method)} {_e(ex.path)}</code>{faults}{_exchange_details(ex)}</td>"
                f"<td>{_e(ex.operation or '-')}</td><td>{status}</td><td>{took}</td></tr>"
            )
            continue
        last = row.items[-1]
        span = last.provider_time - ex.provider_time
        out.append(
            f"<tr id='{_anchor(index, ex.seq)}' class='ex run'><td>#{ex.seq}&#8211;#{last.seq}</td>"
            f"<td>+{rel:.2f}s … +{last.provider_time - t0:.2f}s</td>"
            f"<td><code>{_e(ex.method)} {_e(ex.path)}</code> <b>&#215;{len(row.items)}</b> identical "
            f"exchanges over {span:.2f} s (one every {span / (len(row.items) - 1):.3f} s)"
            f"{_exchange_details(ex)}</td><td>{_e(ex.operation or '-')}</td><td>{status}</td>"
            f"<td>{took}</td></tr>"
        )
    return (
        "<table class='exchanges'><tr><th>#</th><th>provider time</th><th>request</th>"
        "<th>operation</th><th>status</th><th>took</th></tr>" + "".join(out) + "</table>"
    )


# --- the timeline: one lane per task, to scale -----------------------------------------


def _lanes(r: ScenarioResult) -> list[tuple[str, list[Exchange]]]:
    """(lane name, exchanges) per task, downloads in the lane of the task that returned them."""
    try:
        contract = contracts.load(r.provider)
    except contracts.ContractError:
        return [("exchanges", list(r.exchanges))]
    ctx = RuleContext(contract, list(r.exchanges))
    lane_of: dict[int, str] = {}
    for trace in ctx.tasks().values():
        for ex in trace.touches:
            lane_of.setdefault(ex.seq, trace.id)
    for url, given in ctx.returned_images():
        task = lane_of.get(given.seq)
        if task is None:
            continue
        path = urlsplit(url).path
        for ex in r.exchanges:
            if ex.path == path:
                lane_of.setdefault(ex.seq, task)
    lanes: dict[str, list[Exchange]] = {}
    for ex in r.exchanges:
        lanes.setdefault(lane_of.get(ex.seq, "other requests"), []).append(ex)
    return list(lanes.items())


def _kind(ex: Exchange, provider: str) -> str:
    if ex.status is None or ex.status >= 400:
        return "error"
    if ex.events:
        return "stream"
    if ex.operation == "downloadImage":
        return "download"
    try:
        op = profile(provider).op(ex.operation)
    except contracts.ContractError:
        op = None
    return op.kind if op is not None else "other"


def _timeline(index: int, r: ScenarioResult, row_of: dict[int, int]) -> str:
    items = list(r.exchanges)
    if not items:
        return "<p class='muted'>No exchanges.</p>"
    t0 = min(e.provider_time for e in items)
    ends = [e.provider_time + (e.duration_ms or 0) / 1000 * r.time_scale for e in items]
    span = max(max(ends) - t0, 1e-6)
    lanes = _lanes(r)
    height = 22 + LANE * len(lanes)
    parts = [f"<svg class='timeline' width='{LABEL + TRACK + 10}' height='{height}' "
             f"viewBox='0 0 {LABEL + TRACK + 10} {height}' role='img' "
             f"aria-label='timeline of {len(items)} exchanges over {span:.2f} provider seconds'>"]
    for tick in range(5):
        x = LABEL + TRACK * tick / 4
        parts.append(f"<line class='axis' x1='{x:.1f}' y1='0' x2='{x:.1f}' y2='{height - 14}'/>"
                     f"<text x='{x:.1f}' y='{height - 2}' "
                     f"text-anchor='{('start', 'middle', 'middle', 'middle', 'end')[tick]}'>"
                     f"+{span * tick / 4:.2f}s</text>")
    for lane_no, (name, exchanges) in enumerate(lanes):
        y = 2 + lane_no * LANE
        parts.append(f"<rect class='lane' x='{LABEL}' y='{y}' width='{TRACK}' height='{LANE - 4}'/>"
                     f"<text x='{LABEL - 6}' y='{y + LANE - 7}' text-anchor='end'>"
                     f"{_e(name if len(name) <= 22 else name[:10] + '…' + name[-10:])}</text>")
        buckets: dict[tuple[str, int], list[Exchange]] = {}
        for ex in exchanges:
            x = LABEL + TRACK * (ex.provider_time - t0) / span
            buckets.setdefault((_kind(ex, r.provider), int(x // BUCKET)), []).append(ex)
        for (kind, _), group in buckets.items():
            ex = group[0]
            x = LABEL + TRACK * (ex.provider_time - t0) / span
            last = group[-1]
            end = last.provider_time + (last.duration_ms or 0) / 1000 * r.time_scale
            width = max(2.0, TRACK * (end - ex.provider_time) / span)
            fault = " fault" if any(e.faults for e in group) else ""
            what = (f"#{ex.seq} {ex.method} {ex.path} -> {ex.status or 'no answer'}" if len(group) == 1
                    else f"#{ex.seq} to #{last.seq}: {len(group)} x {kind}")
            parts.append(
                f"<a href='#{_anchor(index, row_of.get(ex.seq, ex.seq))}'>"
                f"<rect class='k-{kind}{fault}' x='{x:.1f}' "
                f"y='{y + 1}' width='{min(width, LABEL + TRACK - x + 2):.1f}' height='{LANE - 6}'>"
                f"<title>{_e(what)} at +{ex.provider_time - t0:.2f}s</title></rect></a>"
            )
    parts.append("</svg>")
    return (f"<p class='legend muted'>one lane per task, to scale in provider time "
            f"({span:.2f} s):{_legend()}</p>" + "".join(parts))


def _legend() -> str:
    colours = {"create": "#6b4fd8", "poll": "#4a6ee0", "result": "#0f8b8d", "download": "#2e9e55",
               "stream": "#c27c0e", "error": "#d23b3b"}
    return "".join(f"<span style='background:{c}'></span>{k}" for k, c in colours.items())


# --- deviations ------------------------------------------------------------------------


def _compare(d: Deviation) -> str:
    """Expected vs actual; for a schema deviation, the schema at its path next to the value."""
    schema = d.extra.get("schema") if d.extra else None
    if d.rule.startswith("schema.") and schema is not None:
        where = _e(d.path or "")
        expected = _e(str(d.expected or "").removeprefix("schema "))
        return (
            f"<details class='schema' open><summary>expected vs actual at <code>{where}</code>"
            f"</summary><div class='cmp'><div><b>expected</b> (schema <code>{expected}</code>)"
            f"<pre>{_e(_pretty(schema, 2000))}</pre></div><div><b>actual</b>"
            f"<pre>{_e(_pretty(d.actual, 2000))}</pre></div></div></details>"
        )
    if d.expected is None and d.actual is None:
        return ""
    return (f"<div class='cmp'><div><b>expected</b><pre>{_e(_short(d.expected))}</pre></div>"
            f"<div><b>actual</b><pre>{_e(_short(d.actual))}</pre></div></div>")


def _deviation_rows(index: int, r: ScenarioResult, row_of: dict[int, int]) -> str:
    if not r.deviations:
        return "<p>No deviations.</p>"
    rows = []
    for n, d in enumerate(r.deviations):
        links = " ".join(
            f"<a class='xref' href='#{_anchor(index, row_of.get(s, s))}'>#{s}</a>" for s in d.exchanges
        )
        repro = f"<code>{_e(d.reproduce)}</code>" if d.reproduce else ""
        if d.rerun and d.rerun != d.reproduce:
            repro += f"<br><span class='muted'>rerun:</span> <code>{_e(d.rerun)}</code>"
        data = (f"data-rule='{_e(d.rule)}' data-severity='{d.severity.label}' "
                f"data-side='{d.side.value}'")
        rows.append(
            f"<tr class='dev' id='s{index}-d{n}' {data}>"
            f"<td class='sev-{d.severity.label}'>{d.severity.label}</td><td><code>{_e(d.rule)}</code></td>"
            f"<td>{d.side.value}</td><td>{_e(d.message)}<br><span class='muted'>{_e(d.path or '')}"
            f"</span></td><td>{links}</td><td>{repro}</td></tr>"
        )
        compare = _compare(d)
        if compare:  # its own full-width row, hidden with its deviation by the filter
            rows.append(f"<tr class='dev cmp-row' {data}><td></td><td colspan='5'>{compare}</td></tr>")
    return (
        "<table class='deviations'><tr><th>severity</th><th>rule</th><th>side</th><th>what</th>"
        "<th>exchanges</th><th>reproduce</th></tr>" + "".join(rows) + "</table>"
    )


def _filters(report: Report) -> tuple[str, str]:
    """The filter checkboxes, and the CSS rules that hide what is unchecked."""
    devs = report.deviations
    if not devs:
        return "", ""
    groups: dict[str, list[str]] = {
        "severity": [s.label for s in sorted({d.severity for d in devs}, reverse=True)],
        "side": sorted({d.side.value for d in devs}),
        "rule": sorted({d.rule for d in devs}),
    }

    def value_of(d: Deviation, attr: str) -> str:
        return {"severity": d.severity.label, "side": d.side.value, "rule": d.rule}[attr]

    boxes, css = [], []
    for attr, values in groups.items():
        labels = []
        for shown in values:
            count = sum(1 for d in devs if value_of(d, attr) == shown)
            box = f"f-{attr}-{_slug(shown)}"
            labels.append(f"<label><input type='checkbox' id='{box}' checked> "
                          f"{_e(shown)} ({count})</label>")
            css.append(f"body:has(#{box}:not(:checked)) tr.dev[data-{attr}='{_e(shown)}']"
                       "{display:none}")
        boxes.append(f"<span><b>{attr}</b>{''.join(labels)}</span><br>")
    return ("<fieldset class='filters'><legend>Show deviations by</legend>"
            + "".join(boxes) + "</fieldset>"), "".join(css)


# --- the page --------------------------------------------------------------------------


def _scenario_html(index: int, r: ScenarioResult, report: Report) -> str:
    state = "skipped" if r.skipped else ("passed" if r.passed(report.fail_on) else "failed")
    flagged = {s for d in r.deviations for s in d.exchanges}
    exchanges = [redact_exchange(e) for e in r.exchanges]
    rows = collapse(exchanges, flagged)
    row_of = {ex.seq: row.first.seq for row in rows for ex in row.items}
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
    t0 = min((e.provider_time for e in exchanges), default=0.0)
    shown = f"{len(rows)} row(s) for {len(exchanges)} exchange(s)" if exchanges else ""
    return (
        f"<section class='scenario {state}' id='s{index}'>"
        f"<h2>{_e(r.scenario)} <span class='badge b-{state}'>{state}</span></h2>"
        f"<p>{_e(r.summary)}</p>{skipped}"
        f"<p class='muted'>expect {_e(r.expect)} · time scale {r.time_scale:g}{frame} · "
        f"{r.seconds:.2f} s wall</p><p>Client {_e(client)}</p>"
        f"<div class='thumbs'>{thumbs}</div><h3>Deviations</h3>{_deviation_rows(index, r, row_of)}{unjudged}"
        f"<h3>Timeline</h3>{_timeline(index, r, row_of)}"
        f"<h3>Exchanges</h3><p class='muted'>{shown}</p>{_exchange_rows(index, rows, t0, flagged)}"
        "</section>"
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


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS and SVG, thumbnails as data URIs, no script."""
    failing = len(report.failing())
    state = "passed" if report.ok else "failed"
    rows = "".join(
        f"<tr><td><a href='#s{i}'>{_e(r.scenario)}</a></td>"
        f"<td>{'skipped' if r.skipped else ('passed' if r.passed(report.fail_on) else 'failed')}</td>"
        f"<td>{len(r.exchanges)}</td><td>{_e(', '.join(sorted({d.rule for d in r.deviations})) or '-')}"
        f"{f' ({len(r.not_judged)} not judged)' if r.not_judged else ''}</td></tr>"
        for i, r in enumerate(report.results)
    )
    filters, filter_css = _filters(report)
    when = datetime.fromtimestamp(report.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>imagegen-conformance: {_e(report.provider)}</title>"
        f"<style>{_CSS}{filter_css}</style></head><body>"
        f"<h1>{_e(report.provider)} conformance <span class='badge b-{state}'>{state}</span></h1>"
        f"<p>Client <code>{_e(report.client)}</code> · target {_e(report.target)} · {when} · "
        f"fail on {report.fail_on.label}: {failing} failing deviation(s)</p>"
        + (f"<p class='sev-error'>The target is unreachable: {_e(report.target_error)}</p>"
           if report.target_error else "")
        + f"{filters}"
        f"<table><tr><th>scenario</th><th>result</th><th>exchanges</th><th>deviations</th></tr>"
        f"{rows}</table>{''.join(_scenario_html(i, r, report) for i, r in enumerate(report.results))}"
        f"{_checks_html(report)}</body></html>\n"
    )
