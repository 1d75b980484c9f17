"""``imagegen-conformance probe``: a scheduled health check of the live providers.

For each provider: the cheapest complete request (one image, the smallest size, fewest
steps) through its whole lifecycle to the downloaded image, made by the provider's
reference client through the :class:`~harness.ValidatingProxy`, then checked with the same
validators and rules as ``run``. Every provider-side deviation is *drift* from the contract,
reported with the field, the contract's expectation, what the provider said, and when it was
first seen (remembered in ``--state FILE`` between scheduled runs).

Everything is bounded: the reachability check by ``connect_timeout``, the lifecycle by
``timeout`` (the client gives up and the probe says ``timeout``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

import httpx

from imagegen_conformance import contracts
from imagegen_conformance.contracts import Contract, Scenario
from imagegen_conformance.mocks.engine import Exchange, redact_text

from ..proxy._proxy import ValidatingProxy
from ..rules import ClientResult
from ..rules._deviation import Deviation, Side
from ..rules._profile import profile
from ..rules._rules import RuleContext
from ..rules._targets import live_target
from ..run._clients import CallableClient, inspect_images
from ..run._evaluate import build_env, evaluate
from ..run._remote import mock_health

__all__ = [
    "EXIT_CODES",
    "PHASES",
    "Drift",
    "ProbeResult",
    "exit_code",
    "probe",
    "probe_scenario",
    "render_json",
    "render_junit",
    "render_prometheus",
    "render_terminal",
]

#: Exit status per result, most severe first (several providers: the most severe wins).
EXIT_CODES = {
    "unreachable": 3,
    "unauthorized": 5,
    "timeout": 6,
    "drift": 1,
    "failed": 7,
    "not_configured": 4,
    "healthy": 0,
}
STATUS_TEXT = {
    "healthy": "the whole lifecycle worked and matched the contract",
    "drift": "the provider deviates from the contract",
    "unreachable": "no connection to the base URL",
    "not_configured": "credentials or base URL missing from the environment",
    "unauthorized": "the provider refused the key (401/403)",
    "timeout": "the task did not finish within --timeout",
    "failed": "the provider answered, but the lifecycle did not complete (an error answer or a failed task)",
}
PHASES = ("submit", "queue", "run", "download")

@dataclass
class Drift:
    """One deviation of a live provider from its contract."""

    provider: str
    rule: str
    field: str | None
    expected: Any
    actual: Any
    message: str
    first_seen: str
    last_seen: str
    severity: str
    expectation: str = ""  # the contract's expectation in words

    @property
    def key(self) -> str:
        return drift_key(self.provider, self.rule, self.field, self.expected)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def drift_key(provider: str, rule: str, path: str | None, expected: Any) -> str:
    return f"{provider}|{rule}|{path or ''}|{json.dumps(expected, sort_keys=True, default=str)}"


@dataclass
class ProbeResult:
    """One provider's probe: its status, phase latencies (real seconds) and drift."""

    provider: str
    status: str
    target: str | None = None
    message: str = ""
    phases: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(PHASES))
    drift: list[Drift] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    exchanges: int = 0
    seconds: float = 0.0
    checked_at: float = field(default_factory=time.time)
    missing: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "status": self.status, "exit_code": self.exit_code,
            "target": self.target, "message": self.message,
            "phases": {k: (round(v, 4) if v is not None else None) for k, v in self.phases.items()},
            "drift": [d.to_dict() for d in self.drift], "images": self.images,
            "exchanges": self.exchanges, "seconds": round(self.seconds, 3),
            "checked_at": self.checked_at, "missing": self.missing,
        }


def exit_code(results: list[ProbeResult], *, every: bool = False) -> int:
    """The most severe result's code; with ``every`` (``--provider all``) unconfigured
    providers count only when none is configured."""
    chosen = results
    if every and any(r.status != "not_configured" for r in results):
        chosen = [r for r in results if r.status != "not_configured"]
    order = list(EXIT_CODES)
    worst = min((order.index(r.status) for r in chosen), default=order.index("healthy"))
    return EXIT_CODES[order[worst]]


def probe_scenario(contract: Contract) -> Scenario:
    """The contract's first plain success scenario, made as cheap as the provider allows."""
    plain = [s for s in contract.scenarios if s.expect.outcome == "success" and not s.faults
             and not s.options and not s.lifecycle]
    if not plain:
        raise contracts.ContractError(f"{contract.provider} has no plain success scenario to probe with")
    base = plain[0]
    cheapest = contract.behaviour.probe
    request = {**dict(base.request), **cheapest.request}
    expect = dataclasses.replace(base.expect, images=1)
    if cheapest.size is not None:
        width, height = cheapest.size
        expect = dataclasses.replace(expect, width=width, height=height)
    return dataclasses.replace(base, id="probe", summary="the cheapest complete request",
                               request=request, expect=expect)


# --- state: when each drift was first seen ----------------------------------------------

def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def load_state(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {"drift": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"drift": {}}
    return data if isinstance(data, dict) and isinstance(data.get("drift"), dict) else {"drift": {}}


def save_state(path: Path | None, state: dict[str, Any], results: list[ProbeResult]) -> None:
    """Keep every drift still seen (with its first sighting); forget drift that went away
    for providers that were probed."""
    if path is None:
        return
    probed = {r.provider for r in results if r.status not in ("not_configured", "unreachable")}
    kept = {k: v for k, v in state.get("drift", {}).items() if k.split("|", 1)[0] not in probed}
    for r in results:
        for d in r.drift:
            kept[d.key] = {"first_seen": d.first_seen, "last_seen": d.last_seen}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"drift": kept}, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


# --- one provider -----------------------------------------------------------------------

def _answered_at(ex: Exchange) -> float:
    return ex.started_at + (ex.duration_ms or 0.0) / 1000


def phase_times(
    contract: Contract, exchanges: list[Exchange], result: ClientResult
) -> dict[str, float | None]:
    """Real seconds of submit, queue, run and download, read from the exchanges.

    submit: the first request's answer time. queue: from then until a poll first reports a
    state past the initial one. run: from then until a poll first reports a terminal state
    (a synchronous provider, answering with its images, has queue and run 0: the submit
    holds them). download: the image downloads the proxy saw, or else the client's time
    from the last API answer to its end (image hosts outside the proxy, such as CDNs).
    """
    ctx = RuleContext(contract, exchanges)
    api = [e for e in ctx.api if e.status is not None]
    out: dict[str, float | None] = dict.fromkeys(PHASES)
    if not api:
        return out
    first = api[0]
    out["submit"] = (first.duration_ms or 0.0) / 1000
    lifecycle = contract.behaviour.lifecycle
    submitted = _answered_at(first)
    left_queue = terminal = None
    for ex in api[1:]:
        state = ctx.state_of(ex)
        if state is None:
            continue
        if left_queue is None and lifecycle is not None and state != lifecycle.initial:
            left_queue = _answered_at(ex)
        if lifecycle is not None and state in lifecycle.terminal:
            terminal = _answered_at(ex)
            break
    if terminal is None and result.ok:
        terminal = _answered_at(api[-1]) if len(api) > 1 else submitted
    if terminal is not None:
        left_queue = left_queue if left_queue is not None else submitted
        out["queue"] = max(0.0, left_queue - submitted)
        out["run"] = max(0.0, terminal - left_queue)
    downloads = [e for e in exchanges if e not in ctx.api and e.status is not None]
    if downloads:
        out["download"] = sum((e.duration_ms or 0.0) for e in downloads) / 1000
    elif result.ok and result.ended_at:
        out["download"] = max(0.0, result.ended_at - _answered_at(api[-1]))
    return out


def _classify(result: ClientResult, exchanges: list[Exchange], drift: list[Drift]) -> tuple[str, str]:
    if any(e.error and "could not reach" in e.error for e in exchanges):
        return "unreachable", next(e.error for e in exchanges if e.error) or ""
    refused = [e for e in exchanges if e.status in (401, 403)]
    if refused:
        return "unauthorized", f"{refused[0].method} {refused[0].path} answered {refused[0].status}"
    if drift:
        return "drift", f"{len(drift)} deviation(s) from the contract"
    error = result.output.get("error") if isinstance(result.output, dict) else None
    if result.timed_out or (isinstance(error, dict) and error.get("kind") == "gave_up"):
        return "timeout", f"no result within --timeout ({redact_text(result.error)})"
    if not result.ok:
        return "failed", redact_text(result.error) or "the client failed"
    return "healthy", "ok"


async def probe_provider(
    provider: str, *, timeout: float = 300.0, connect_timeout: float = 10.0,
    state: dict[str, Any] | None = None, env: dict[str, str] | None = None,
) -> ProbeResult:
    """Probe one provider with the credentials and base URL of its environment variables."""
    environ = dict(os.environ if env is None else env)
    live = live_target(provider)
    started = time.perf_counter()
    if live is None:
        return ProbeResult(provider, "not_configured", None,
                           f"the {provider} contract names no live endpoint (no live: in behaviour.yaml)")
    missing = live.missing(environ)
    base = (environ.get(live.base_var) or live.default_base or "").rstrip("/")
    if missing:
        return ProbeResult(provider, "not_configured", base or None,
                           f"set {', '.join(missing)}", missing=missing)
    contract = contracts.load(provider)
    scenario = probe_scenario(contract)
    time_scale = 1.0
    async with httpx.AsyncClient(timeout=connect_timeout) as http:
        try:
            await http.get(base + "/")
        except httpx.TransportError as exc:
            return ProbeResult(provider, "unreachable", base,
                               f"{type(exc).__name__}: {exc or 'no answer'}",
                               seconds=time.perf_counter() - started)
        # A base URL may carry a base path (a gateway's prefix): the proxy mirrors the whole
        # host and the client gets the same path on it, so a link the provider returns with an
        # absolute path (Cloudsway's /images/...) resolves on the host, not under the path.
        origin, base_path = _split_base(base)
        health = await mock_health(http, base) or (
            await mock_health(http, origin) if base_path else None)
    if health is not None:  # one of our mocks (tests, rehearsals): its clock may be scaled
        time_scale = float(health.get("time_scale") or 1.0)
    proxy = ValidatingProxy(provider, origin, time_scale=time_scale, rewrite_links=True,
                            base_path=base_path)
    proxy_url = await proxy.start()
    try:
        with tempfile.TemporaryDirectory(prefix="imagegen-probe-") as out_dir:
            roles = list(contract.behaviour.hosts) or ["api"]
            client_env = build_env(contract, scenario, {roles[0]: proxy_url + base_path},
                                   environ[live.key_var],
                                   out_dir, time_scale, live.client_extra(environ))
            client_env["IMAGEGEN_TIMEOUT"] = repr(timeout * time_scale)  # provider seconds
            spec = profile(provider).reference_client
            assert spec is not None, f"{provider} has no reference client"
            client = CallableClient(spec)
            # The client gives up by itself at `timeout`; the margin covers its last requests.
            result = await client.run(client_env, timeout + connect_timeout + 5.0)
            exchanges = proxy.journal.entries()
            async with httpx.AsyncClient(timeout=connect_timeout) as http:
                result.images = await inspect_images(result, http)
            seconds = time.perf_counter() - started
            evaluated = evaluate(contract, scenario, client.name, base, exchanges, [], result,
                                 time_scale, proxy_url, seconds)
    finally:
        await proxy.close()
    drift = _drift(provider, evaluated.deviations, result, state or {"drift": {}},
                   environ[live.key_var])
    status, message = _classify(result, exchanges, drift)
    return ProbeResult(
        provider, status, base, message,
        phases=phase_times(contract, exchanges, result) if status != "unreachable" else dict.fromkeys(PHASES),
        drift=drift,
        images=[{"width": i.width, "height": i.height, "format": i.format, "error": i.error}
                for i in result.images],
        exchanges=len(exchanges), seconds=seconds,
    )


def _split_base(base: str) -> tuple[str, str]:
    """``https://host:port/some/path`` -> (``https://host:port``, ``/some/path``)."""
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def _drift(provider: str, deviations: list[Deviation], result: ClientResult,
           state: dict[str, Any], key: str = "") -> list[Drift]:
    """Provider-side deviations, and wrong images the reference client received, as drift.

    The key is scrubbed from what the provider said, should it ever echo it.
    """
    now = _iso(time.time())
    seen = state.get("drift", {})
    out: list[Drift] = []
    for d in deviations:
        wrong_images = d.rule == "scenario.outcome" and result.ok
        if d.side != Side.PROVIDER and not wrong_images:
            continue
        key = drift_key(provider, d.rule, d.path, d.expected)
        if any(x.key == key for x in out):
            continue
        first = seen.get(key, {}).get("first_seen", now)
        actual, message = d.actual, d.message
        if key and len(key) >= 6:
            message = message.replace(key, "REDACTED")
            if isinstance(actual, str):
                actual = actual.replace(key, "REDACTED")
        out.append(Drift(provider, d.rule, d.path, d.expected, actual, message, first, now,
                         d.severity.label, _expectation(d)))
    return out


def _expectation(d: Deviation) -> str:
    """``schema required: 'seed' is a required property``; a list of documented statuses..."""
    expected = d.expected if isinstance(d.expected, str) else json.dumps(d.expected, default=str)
    detail = d.message.split(": ", 1)[1] if ": " in d.message else ""
    if d.rule == "schema.status":
        return f"one of the documented statuses {expected}"
    return f"{expected}: {detail}" if detail and detail not in expected else expected


async def probe(
    providers: list[str], *, timeout: float = 300.0, connect_timeout: float = 10.0,
    state_path: Path | None = None, env: dict[str, str] | None = None,
    on_result: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe each provider in turn; update the first-seen state file."""
    state = load_state(state_path)
    results = []
    for provider in providers:
        try:
            result = await asyncio.wait_for(
                probe_provider(provider, timeout=timeout, connect_timeout=connect_timeout,
                               state=state, env=env),
                timeout + 2 * connect_timeout + 30.0,  # the last bound: nothing runs longer
            )
        except TimeoutError:
            result = ProbeResult(provider, "timeout", None, f"the probe passed {timeout:g} s")
        results.append(result)
        if on_result:
            on_result(result)
    save_state(state_path, state, results)
    return results


# --- outputs ----------------------------------------------------------------------------

def render_json(results: list[ProbeResult], code: int) -> str:
    return json.dumps({"tool": "imagegen-conformance probe", "exit_code": code,
                       "checked_at": time.time(), "results": [r.to_dict() for r in results]},
                      indent=2, default=str)


def render_junit(results: list[ProbeResult]) -> str:
    """One ``<testcase>`` per provider (its lifecycle) and per drift; skipped when not configured."""
    suite = ET.Element("testsuite", name="imagegen-probe", timestamp=_iso(time.time()))
    tests = failures = skipped = 0
    for r in results:
        tests += 1
        case = ET.SubElement(suite, "testcase", classname=f"probe.{r.provider}", name="lifecycle",
                             time=f"{r.seconds:.3f}")
        if r.status == "not_configured":
            skipped += 1
            ET.SubElement(case, "skipped", message=r.message)
        elif r.status not in ("healthy", "drift"):
            failures += 1
            ET.SubElement(case, "failure", message=f"{r.status}: {r.message}",
                          type=r.status).text = STATUS_TEXT[r.status]
        phases = ", ".join(f"{k}={v:.3f}s" for k, v in r.phases.items() if v is not None)
        ET.SubElement(case, "system-out").text = phases or "no phase reached"
        for d in r.drift:
            tests += 1
            failures += 1
            dcase = ET.SubElement(suite, "testcase", classname=f"probe.{r.provider}.drift",
                                  name=f"{d.rule} {d.field or ''}".strip())
            ET.SubElement(dcase, "failure", message=d.message, type="drift").text = (
                f"field: {d.field}\nexpected: {d.expectation}\n"
                f"actual: {json.dumps(d.actual, default=str)}\nfirst seen: {d.first_seen}"
            )
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(results: list[ProbeResult]) -> str:
    """The Prometheus text exposition format (for a textfile collector or a pushgateway)."""
    lines = [
        "# HELP imagegen_probe_up 1 when the provider's whole lifecycle worked (drift or not).",
        "# TYPE imagegen_probe_up gauge",
    ]
    for r in results:
        lines.append(f'imagegen_probe_up{{provider="{r.provider}"}} '
                     f'{1 if r.status in ("healthy", "drift") else 0}')
    lines += ["# HELP imagegen_probe_status 1 for the provider's current probe status.",
              "# TYPE imagegen_probe_status gauge"]
    for r in results:
        for status in EXIT_CODES:
            lines.append(f'imagegen_probe_status{{provider="{r.provider}",status="{status}"}} '
                         f'{1 if r.status == status else 0}')
    lines += ["# HELP imagegen_probe_phase_seconds Real seconds of each lifecycle phase.",
              "# TYPE imagegen_probe_phase_seconds gauge"]
    for r in results:
        for phase, value in r.phases.items():
            if value is not None:
                lines.append(f'imagegen_probe_phase_seconds{{provider="{r.provider}",phase="{phase}"}} '
                             f"{value:.6f}")
    lines += ["# HELP imagegen_probe_duration_seconds Real seconds of the whole probe.",
              "# TYPE imagegen_probe_duration_seconds gauge"]
    lines += [f'imagegen_probe_duration_seconds{{provider="{r.provider}"}} {r.seconds:.6f}'
              for r in results]
    lines += ["# HELP imagegen_probe_drift Deviations from the contract (1 per drift, by rule and field).",
              "# TYPE imagegen_probe_drift gauge"]
    for r in results:
        for d in r.drift:
            lines.append(f'imagegen_probe_drift{{provider="{r.provider}",rule="{_label(d.rule)}",'
                         f'field="{_label(d.field or "")}"}} 1')
    lines += ["# HELP imagegen_probe_last_run_timestamp_seconds When the probe ran.",
              "# TYPE imagegen_probe_last_run_timestamp_seconds gauge"]
    lines += [f'imagegen_probe_last_run_timestamp_seconds{{provider="{r.provider}"}} {r.checked_at:.0f}'
              for r in results]
    return "\n".join(lines) + "\n"


def render_terminal(results: list[ProbeResult], console: Any) -> None:
    """A rich table: status and phases per provider, then every drift with its evidence."""
    from rich.table import Table

    table = Table(title="imagegen-conformance probe")
    for col in ("provider", "status", *PHASES, "total"):
        table.add_column(col, no_wrap=True)
    colour = {"healthy": "green", "drift": "yellow", "not_configured": "dim"}
    for r in results:
        table.add_row(
            r.provider, f"[{colour.get(r.status, 'red')}]{r.status}[/]",
            *(f"{r.phases[p]:.3f}s" if r.phases[p] is not None else "-" for p in PHASES),
            f"{r.seconds:.2f}s",
        )
    console.print(table)
    for r in results:
        if r.status != "healthy":
            console.print(f"{r.provider}: {r.status}: {r.message}", highlight=False, markup=False)
    for r in results:
        for d in r.drift:
            console.print(f"[yellow]drift[/] {r.provider} {d.rule} at [bold]{d.field or '-'}[/]: "
                          f"{d.message}", highlight=False)
            console.print(f"    expected: {_short(d.expectation or d.expected)}\n"
                          f"    provider: {_short(d.actual)}\n"
                          f"    first seen: {d.first_seen}", highlight=False, markup=False)


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."

