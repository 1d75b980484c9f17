"""The runner: a client x the provider's scenarios x a target (a fresh mock, or a URL)."""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

import contracts
from contracts import Contract, Scenario
from mocks import MockServer, TLSMaterial, mock_router, start
from mocks.engine import Exchange

from ._clients import CallableClient, Client, ClientResult, inspect_images
from ._deviation import Deviation, Severity, Side
from ._exchanges import json_or_none, redact_text
from ._profile import json_path, profile
from ._report import Report, ScenarioResult
from ._rules import OTHER_CHECKS, ClientOutcome, RuleContext, applicable_rules, check_rules
from ._validate import DOWNLOAD, validate_all

__all__ = ["RunOptions", "build_env", "run", "run_scenario"]

DEFAULT_TIME_SCALE = 100.0
TRANSPORTS = ("socket", "respx")
OUTCOMES = ("success", "error", "gives_up")
GIVES_UP_SPEEDUP = 10.0

Progress = Callable[[str, str, ScenarioResult | None], None]


@dataclass
class RunOptions:
    """What ``imagegen-conformance run`` was asked to do."""

    provider: str
    client: Client
    scenarios: list[str] | None = None  # None: all of the provider's scenarios
    target: str = "mock"  # "mock", or the base URL of a mock or live endpoint
    time_scale: float | None = None  # None: DEFAULT_TIME_SCALE for mocks, 1 for a URL
    seed: int | None = 1
    fail_on: Severity = Severity.ERROR
    startup_slack: float = 10.0  # real seconds a client may spend starting and stopping
    api_key: str | None = None  # None: a fresh canary key per run
    extra_env: Mapping[str, str] = field(default_factory=dict)
    tls: bool = False  # serve mocks over HTTPS (a throwaway CA in SSL_CERT_FILE), for SDK clients
    transport: str = "socket"  # or "respx": in-process, under the provider's real hostnames
    on_progress: Progress | None = None


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


def _timeout(contract: Contract, scenario: Scenario) -> float:
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


async def run_scenario(
    contract: Contract, scenario: Scenario, client: Client, *, target: str = "mock",
    time_scale: float | None = None, seed: int | None = 1, startup_slack: float = 10.0,
    api_key: str | None = None, extra_env: Mapping[str, str] | None = None, tls: bool = False,
    transport: str = "socket",
) -> ScenarioResult:
    """Run one scenario: set the target up, run the client, validate and check its exchanges.

    ``transport="respx"`` serves the mock in-process under the provider's real hostnames
    (for Python callables whose httpx clients hard-code them); ``"socket"`` binds a port.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; valid: {', '.join(TRANSPORTS)}")
    if transport == "respx" and not isinstance(client, CallableClient):
        raise ValueError("transport respx serves the mock inside this process: it needs a Python "
                         "callable client (module:function), not a command")
    if target != "mock":
        from ._remote import run_remote_scenario

        return await run_remote_scenario(
            contract, scenario, client, target=target, time_scale=time_scale or 1.0,
            startup_slack=startup_slack, api_key=api_key, extra_env=extra_env,
        )
    scale = scenario.time_scale or time_scale or DEFAULT_TIME_SCALE
    if scenario.time_scale is None and time_scale is None and scenario.expect.outcome == "gives_up":
        scale *= GIVES_UP_SPEEDUP  # a correct client waits minutes of provider time here
    key = api_key or canary_key()
    server = MockServer(
        contract.provider, clock="scaled", time_scale=scale, seed=seed,
        lifecycle=scenario.lifecycle or "time", faults=scenario.faults, options=scenario.options,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imagegen-out-") as out_dir, contextlib.ExitStack() as stack:
        material = TLSMaterial.create(Path(out_dir) / "tls") if tls else None
        served = None
        if transport == "respx":
            stack.enter_context(mock_router(server))
            urls = {role: server.base_url_for(role) or "" for role in server.roles}
        else:
            served = await start([server], ports={contract.provider: 0}, tls=material)
            urls = {role: served.url(contract.provider, role) for role in server.roles}
        try:
            ca = str(material.ca_path) if material else None
            images_dir = Path(out_dir) / "images"
            images_dir.mkdir()
            env = build_env(contract, scenario, urls, key, str(images_dir), scale,
                            extra_env, ca_bundle=ca)
            result = await client.run(env, _timeout(contract, scenario) / scale + startup_slack)
            exchanges = server.journal.entries()
            last = server.journal.last_seq
            verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
            async with httpx.AsyncClient(timeout=10.0, verify=verify) as http:
                result.images = await inspect_images(result, http)
                await _probe_images(contract, exchanges, http)
            probes = server.journal.entries(since=last)
        finally:
            if served is not None:
                await served.close()
            else:
                await server.aclose()
    return evaluate(
        contract, scenario, client.name, "mock", exchanges, probes, result, scale,
        urls[server.roles[0]], time.perf_counter() - started,
    )


async def _probe_images(contract: Contract, exchanges: list[Exchange], http: httpx.AsyncClient) -> None:
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


def evaluate(
    contract: Contract, scenario: Scenario, client: str, target: str, exchanges: list[Exchange],
    probes: list[Exchange], result: ClientResult, scale: float, base_url: str | None,
    seconds: float,
) -> ScenarioResult:
    """Validation + rules + the scenario's expectation over one run's evidence."""
    ctx = RuleContext(
        contract, exchanges,
        outcome=ClientOutcome(result.ok, len(result.raw_images), result.timed_out, result.ended_at),
        scenario=scenario, time_scale=scale, probes=probes, base_url=base_url,
    )
    bodies = {e.seq: json_or_none(e.request_body) for e in exchanges}
    deviations = [
        d for d in validate_all(contract, exchanges, base_url) if not _relayed(d, scenario, bodies)
    ]
    deviations += check_rules(ctx)
    deviations += check_expectation(scenario, result, exchanges, scale)
    # One cause, one deviation: a rebuilt URL that matches no operation is reported once.
    rebuilt = {s for d in deviations if d.rule == "client.follows-urls" for s in d.exchanges}
    deviations = [
        d for d in deviations
        if not (d.rule == "schema.endpoint" and set(d.exchanges) <= rebuilt)
    ]
    deviations = [
        Deviation(**{
            **d.__dict__, "scenario": scenario.id, "message": redact_text(d.message) or "",
            "actual": redact_text(d.actual) if isinstance(d.actual, str) else d.actual,
            "reproduce": redact_text(d.reproduce.replace("{provider}", contract.provider))
            if d.reproduce else None,
        })
        for d in deviations
    ]
    rules = [i.id for i in OTHER_CHECKS] + [r.info.id for r in applicable_rules(contract, ctx)]
    return ScenarioResult(
        provider=contract.provider, scenario=scenario.id, summary=scenario.summary, client=client,
        target=target, expect=dict(scenario.expect.raw), deviations=deviations,
        exchanges=exchanges, probes=probes, result=result, rules=rules, time_scale=scale,
        seconds=seconds, base_url=base_url,
    )


async def run(options: RunOptions) -> Report:
    """Run the client over the chosen scenarios; the report says what deviated."""
    contract = contracts.load(options.provider)
    chosen = (
        [contract.scenario(s) for s in options.scenarios] if options.scenarios
        else list(contract.scenarios)
    )
    report = Report(contract.provider, options.client.name, options.target, options.fail_on)
    for scenario in chosen:
        if options.on_progress:
            options.on_progress("start", scenario.id, None)
        result = await run_scenario(
            contract, scenario, options.client, target=options.target,
            time_scale=options.time_scale, seed=options.seed, startup_slack=options.startup_slack,
            api_key=options.api_key, extra_env=options.extra_env, tls=options.tls,
            transport=options.transport,
        )
        report.results.append(result)
        if options.on_progress:
            options.on_progress("done", scenario.id, result)
    report.finished_at = time.time()
    return report
