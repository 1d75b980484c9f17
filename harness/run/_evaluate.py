"""One scenario's verdict from its evidence, and what a client is told (shared by every target)."""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from imagegen_conformance import contracts
from imagegen_conformance.contracts import Contract, Scenario
from imagegen_conformance.mocks.engine import Exchange, redact_text

from ..report import ScenarioResult
from ..rules import (
    ClientOutcome,
    ClientResult,
    Deviation,
    Frame,
    NotJudged,
    RuleContext,
    Severity,
    Side,
    check_rules,
)
from ..rules._exchanges import json_or_none
from ..rules._profile import json_path, profile
from ..rules._rules import OTHER_CHECKS, TOLERANCE, TRANSIENT, applicable_rules
from ..rules._validate import DOWNLOAD, validate_all

__all__ = [
    "OUTCOMES", "build_env", "canary_key", "check_expectation", "client_timeout", "evaluate", "probe_images",
]

OUTCOMES = ("success", "error", "gives_up")

#: Checks that compare provider-time gaps or spans: they mean nothing when the client's clock
#: is not the provider's.
TIMING_CHECKS = ("client.poll-interval", "client.retry-after", "client.retries-transient",
                 "client.downloads-before-expiry", "scenario.deadline")
#: Real seconds of client CPU per request that the pacing checks must see through (a bash
#: script's curl costs ~25 ms).
CLIENT_OVERHEAD = 0.025
#: The same for a Python callable run in this process: a loop with no pause against the
#: in-process mock measured 0.6 ms per request (median; 2 shared cores), so 5 ms is a margin
#: of 8.
IN_PROCESS_OVERHEAD = 0.005


def _timing(d: Deviation) -> bool:
    """A deviation whose evidence is a provider-time gap (or the harness's real-time stop)."""
    if d.rule == "scenario.deadline" or (d.path or "").startswith("timing."):
        return True
    return d.rule == "scenario.outcome" and d.actual == "still running"


def canary_key() -> str:
    """A throwaway key: reports are checked never to contain it."""
    return "imagegen-canary-" + secrets.token_hex(12)


def _host(url: str) -> str:
    return urlsplit(url).netloc


def build_env(
    contract: Contract, scenario: Scenario, urls: Mapping[str, str], api_key: str,
    output_dir: str, time_scale: float, extra: Mapping[str, str] | None = None,
    ca_bundle: str | None = None,
) -> dict[str, str]:
    """The client's variables: the harness's ``IMAGEGEN_*`` and the provider SDK's own."""
    roles = list(urls)
    primary = urls[roles[0]]
    env = {
        "IMAGEGEN_PROVIDER": contract.provider,
        "IMAGEGEN_BASE_URL": primary,
        "IMAGEGEN_API_KEY": api_key,
        "IMAGEGEN_REQUEST": json.dumps(dict(scenario.request)),
        "IMAGEGEN_OUTPUT_DIR": output_dir,
        "IMAGEGEN_TIME_SCALE": repr(float(time_scale)),
        "IMAGEGEN_SCENARIO": scenario.id,
    }
    for role, url in urls.items():
        env[f"IMAGEGEN_BASE_URL_{role.upper()}"] = url
    if ca_bundle:  # Python's ssl, httpx, requests and curl all read one of these
        env.update(SSL_CERT_FILE=ca_bundle, REQUESTS_CA_BUNDLE=ca_bundle, CURL_CA_BUNDLE=ca_bundle)
    values = {"api_key": api_key, "base_url": primary, "host": _host(primary),
              "ca_bundle": ca_bundle or ""}
    for role, url in urls.items():
        values[f"base_url:{role}"] = url
        values[f"host:{role}"] = _host(url)
    for name, template in profile(contract.provider).env.items():
        out = template
        for key, value in values.items():
            out = out.replace("{" + key + "}", value)
        env[name] = out
    env.update(extra or {})
    return env


def client_timeout(contract: Contract, scenario: Scenario) -> float:
    """Provider seconds the harness lets a client run before stopping it."""
    polling = contract.behaviour.polling
    limit = scenario.expect.within_seconds or (polling.max_wait if polling else 300.0)
    return limit * 1.5


def _relayed(dev: Deviation, scenario: Scenario, bodies: dict[int, Any]) -> bool:
    """A request deviation the scenario asked for: its own invalid request, sent as told."""
    if dev.rule != "schema.request" or not dev.path or not dev.path.startswith("request.body$"):
        return False
    request = dict(scenario.request)
    if dev.exchanges and all(bodies.get(seq) == request for seq in dev.exchanges):
        return True  # the client sent the scenario's body unchanged
    path = dev.path[len("request.body") :]
    values = json_path(request, path) if path != "$" else [request]
    return bool(values) and values[0] == dev.actual


def check_expectation(
    scenario: Scenario, result: ClientResult, exchanges: list[Exchange], time_scale: float = 1.0
) -> list[Deviation]:
    """Did the client end as the scenario says a correct client does?"""
    exp = scenario.expect
    out: list[Deviation] = []
    api = [e for e in exchanges if e.operation != DOWNLOAD]

    def fail(message: str, expected: Any, actual: Any, rule: str = "scenario.outcome") -> None:
        out.append(Deviation(
            rule, Severity.ERROR, Side.CLIENT, message, tuple(e.seq for e in api[-1:]),
            path="client.outcome", expected=expected, actual=actual,
            reproduce=f"imagegen-conformance run --provider {{provider}} --client CLIENT "
                      f"--scenario {scenario.id}",
        ))

    if exp.outcome not in OUTCOMES:
        raise contracts.ContractError(
            f"scenario {scenario.id}: expect.outcome {exp.outcome!r}; valid: {', '.join(OUTCOMES)}"
        )
    if result.timed_out:
        want = "gave up" if exp.outcome == "gives_up" else exp.outcome
        fail(f"the client never ended; the harness stopped it ({result.error})", want, "still running")
        return out
    if exp.outcome == "success":
        if not result.ok:
            fail(f"the client failed: {result.error}", "success", "error")
            return out
        images = result.images
        if exp.images is not None and len(images) != exp.images:
            fail(f"the client delivered {len(images)} image(s), not {exp.images}", exp.images, len(images))
        for image in images:
            if image.error:
                fail(f"image {image.path or image.url} cannot be read: {image.error}",
                     "a readable image", image.error)
            elif (exp.width, exp.height) != (None, None) and (image.width, image.height) != (
                exp.width or image.width, exp.height or image.height
            ):
                fail(f"image {image.path or image.url} is {image.width}x{image.height}",
                     f"{exp.width}x{exp.height}", f"{image.width}x{image.height}")
    else:
        if result.ok:
            fail(f"the client reported success; the scenario expects {exp.outcome}",
                 exp.outcome, f"success with {len(result.raw_images)} image(s)")
            return out
        if exp.error_status is not None and not any(e.status == exp.error_status for e in api):
            fail(f"the client never received the HTTP {exp.error_status} the scenario is about",
                 exp.error_status, sorted({e.status for e in api if e.status}))
    if exp.within_seconds is not None and api:
        # From the first request to the last answer, in provider time (start-up excluded).
        last_answer = (api[-1].duration_ms or 0.0) / 1000 * time_scale
        span = api[-1].provider_time + last_answer - api[0].provider_time
        if span > exp.within_seconds:
            fail(f"the client took {span:.1f} provider seconds (first request to last answer)",
                 f"<= {exp.within_seconds:g} s", f"{span:.1f} s", rule="scenario.deadline")
    return out


async def probe_images(contract: Contract, exchanges: list[Exchange], http: httpx.AsyncClient) -> None:
    """Fetch returned image URLs the client did not download (for provider.urls-resolve)."""
    ctx = RuleContext(contract, exchanges)
    fetched = {e.path for e in exchanges if e.method == "GET"}
    for url, _ in ctx.returned_images():
        if urlsplit(url).path in fetched:
            continue
        try:
            await http.get(url)
        except httpx.HTTPError:
            continue


def _not_judged(
    contract: Contract, scenario: Scenario, ctx: RuleContext, deviations: list[Deviation],
    frame: Frame, applied: list[str], overhead: float = CLIENT_OVERHEAD,
) -> tuple[list[Deviation], list[NotJudged]]:
    """Set aside what this run cannot judge fairly, with the reason; keep the rest."""
    if not frame.virtualized:
        reason = frame.reason or "the client's clock is not virtualized"
        checks = [r for r in TIMING_CHECKS if r in applied]
        if scenario.expect.within_seconds is None and "scenario.deadline" in checks:
            checks.remove("scenario.deadline")
        if ctx.outcome is not None and ctx.outcome.timed_out:
            checks.append("scenario.outcome")
        withheld = [d for d in deviations if _timing(d)]
        kept = [d for d in deviations if not _timing(d)]
        notes = [NotJudged(rule, reason, sum(1 for d in withheld if d.rule == rule), scenario.id)
                 for rule in dict.fromkeys(checks)]
        return kept, notes
    # In the frame, a gap shorter than the minimum is always real; but a passing verdict is
    # only worth something when the client's own CPU per request cannot fill the gap.
    notes = []
    found = {d.rule for d in deviations}
    resolution = overhead * frame.scale
    for rule, threshold in _judged_gaps(contract, ctx).items():
        if rule in applied and rule not in found and resolution >= threshold * TOLERANCE:
            notes.append(NotJudged(
                rule, f"at x{frame.scale:g}, {overhead * 1000:g} ms of the client's own CPU "
                f"per request is {resolution:g} provider s, as long as the {threshold:g} s judged: "
                f"run with --time-scale {max(1.0, round(0.7 * threshold / overhead, 1)):g} "
                "to judge it", 0, scenario.id,
            ))
    return deviations, notes


def _judged_gaps(contract: Contract, ctx: RuleContext) -> dict[str, float]:
    """The shortest gap each timing rule had to judge in this run (only rules with evidence)."""
    from ..rules._exchanges import header
    from ..rules._rules import _retry_after

    out: dict[str, float] = {}
    polling = contract.behaviour.polling
    if polling is not None and any(len(t.polls) > 1 for t in ctx.tasks().values()):
        out["client.poll-interval"] = polling.min_interval
    api = ctx.api
    waits = [
        w for i, e in enumerate(api[:-1]) if e.status in (429, 503)
        for w in [_retry_after(header(e.response_headers, "Retry-After"), e.started_at)]
        if w is not None and w > 0
    ]
    if waits:
        out["client.retry-after"] = min(waits)
    if any(e.status in TRANSIENT and not header(e.response_headers, "Retry-After") for e in api[:-1]):
        backoff = ctx.profile.retry_backoff_min
        if backoff is None:
            backoff = polling.min_interval if polling else 0.0
        if backoff > 0:
            out["client.retries-transient"] = backoff
    return out


def rerun_command(contract: Contract, scenario: Scenario, client: str, target: str) -> str:
    """The ``imagegen-conformance run`` line that repeats one scenario."""
    line = (f"imagegen-conformance run --provider {contract.provider} --client {shlex.quote(client)} "
            f"--scenario {scenario.id}")
    return line + (f" --target {shlex.quote(target)}" if target != "mock" else "")


def reproduce_base(contract: Contract, target: str) -> str:
    """Where reproduce lines send their requests once the run is over: the run's own mock is
    gone, so a mock target means ``imagegen-conformance serve`` on its default port."""
    if target == "mock":
        return f"http://127.0.0.1:{contract.behaviour.port}"
    return target.rstrip("/")


def evaluate(
    contract: Contract, scenario: Scenario, client: str, target: str, exchanges: list[Exchange],
    probes: list[Exchange], result: ClientResult, scale: float, base_url: str | None,
    seconds: float, frame: Frame | None = None, overhead: float = CLIENT_OVERHEAD,
) -> ScenarioResult:
    """Validation + rules + the scenario's expectation over one run's evidence.

    ``frame`` is the time frame the client ran in: where its clock was not the provider's,
    timing checks are reported as not judged (with the reason) instead of as deviations.
    ``overhead`` is the client's real seconds per request: a pacing check that passed at a
    scale where that much could fill the judged gap is reported as not judged.
    """
    frame = frame or Frame("told", scale)
    repro = reproduce_base(contract, target)
    ctx = RuleContext(
        contract, exchanges,
        outcome=ClientOutcome(result.ok, len(result.raw_images), result.timed_out, result.ended_at),
        scenario=scenario, time_scale=scale, probes=probes, base_url=repro,
    )
    bodies = {e.seq: json_or_none(e.request_body) for e in exchanges}
    deviations = [
        d for d in validate_all(contract, exchanges, repro) if not _relayed(d, scenario, bodies)
    ]
    deviations += check_rules(ctx)
    deviations += check_expectation(scenario, result, exchanges, scale)
    # One cause, one deviation: a rebuilt URL that matches no operation is reported once.
    rebuilt = {s for d in deviations if d.rule == "client.follows-urls" for s in d.exchanges}
    deviations = [
        d for d in deviations
        if not (d.rule == "schema.endpoint" and set(d.exchanges) <= rebuilt)
    ]
    rerun = rerun_command(contract, scenario, client, target)
    deviations = [
        Deviation(**{
            **d.__dict__, "scenario": scenario.id, "message": redact_text(d.message) or "",
            "actual": redact_text(d.actual) if isinstance(d.actual, str) else d.actual,
            "reproduce": rerun if d.rule.startswith("scenario.") else (
                redact_text(d.reproduce) if d.reproduce else None),
            "rerun": rerun,
        })
        for d in deviations
    ]
    rules = [i.id for i in OTHER_CHECKS] + [r.info.id for r in applicable_rules(contract, ctx)]
    deviations, not_judged = _not_judged(contract, scenario, ctx, deviations, frame, rules, overhead)
    return ScenarioResult(
        provider=contract.provider, scenario=scenario.id, summary=scenario.summary, client=client,
        target=target, expect=dict(scenario.expect.raw), deviations=deviations,
        exchanges=exchanges, probes=probes, result=result, rules=rules, time_scale=scale,
        seconds=seconds, base_url=base_url, frame=frame, not_judged=not_judged,
    )


