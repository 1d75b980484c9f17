"""The runner: a client x the provider's scenarios x a target (a fresh mock, or a URL)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from imagegen_conformance import contracts
from imagegen_conformance.contracts import Contract, Scenario
from imagegen_conformance.mocks import MockServer, TLSMaterial, mock_router, start

from ..report import Report, ScenarioResult
from ..rules import ClientResult, Frame, Severity
from ._clients import CallableClient, Client, CommandClient, inspect_images
from ._evaluate import (
    CLIENT_OVERHEAD,
    IN_PROCESS_OVERHEAD,
    build_env,
    canary_key,
    client_timeout,
    evaluate,
    probe_images,
)
from ._frame import FRAMES, NOT_VIRTUALIZED, FrameSession, frame_blocker, libfaketime_path
from ._remote import TargetUnreachable, run_remote_scenario

__all__ = [
    "DEFAULT_TIME_SCALE", "FRAMES", "TRANSPORTS", "RunOptions", "run", "run_in_frame", "run_scenario",
    "scenario_scale",
]

DEFAULT_TIME_SCALE = 100.0
TRANSPORTS = ("socket", "respx")
#: Scenarios whose correct ending is giving up: a correct client waits minutes of provider time.
GIVES_UP_SCALE = 1000.0
#: The share of the shortest judged gap that the client's overhead may fill: the rest is margin
#: for a machine whose load changes after :func:`machine_slowdown` measured it.
PACING_SHARE = 0.7
#: Provider seconds a faulty client may still pause per request (the "polls every 10 ms"
#: fault) on top of its overhead, and still be caught.
SHORTEST_PAUSE = 0.01
#: Requests a client may make within a scenario's deadline, each with its overhead of real
#: time, while staying within PACING_SHARE of it.
DEADLINE_REQUESTS = 10
#: The most a loaded machine slows the chosen scales (beyond it, runs would only crawl).
MAX_SLOWDOWN = 5.0
#: Real seconds one measure of the machine's load serves before it is taken again.
SLOWDOWN_MAX_AGE = 1.0
_RATE_LIMIT = re.compile(r"^rate_limit(?::([0-9.]+))?")
_ONCE = re.compile(r"(^|;)times=1(;|$)")
#: A verdict that rests on one gap (a fault set ``times=1``: one 429, one 503) has no second
#: sample to catch a fault when the machine stalls on the first: its overhead counts twice.
ONE_GAP_MARGIN = 2.0

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
    frame: str = "virtual"  # or "told": real time, the client divides its waits by IMAGEGEN_TIME_SCALE
    on_progress: Progress | None = None


def judged_gaps(contract: Contract, scenario: Scenario) -> dict[str, float]:
    """The provider-second gaps whose verdict this scenario is there to give, by rule.

    A fault's own pacing is judged where the fault is set (``rate_limit``: the Retry-After;
    a 5xx or reset: the retry backoff); a deadline (outside give-up scenarios) as a sum of
    DEADLINE_REQUESTS gaps; the poll interval in the plain successful runs (no fault), where
    ordinary polling is what is left to judge. Elsewhere these rules still fail on a gap that
    is too short, but a pass at a scale too fast to tell is reported as not judged.
    """
    out: dict[str, float] = {}
    polling = contract.behaviour.polling

    def add(rule: str, gap: float) -> None:
        if gap > 0:
            out[rule] = min(gap, out.get(rule, gap))

    if polling is not None and not scenario.faults and scenario.expect.outcome == "success":
        add("client.poll-interval", polling.min_interval)
    for spec in scenario.faults:
        match = _RATE_LIMIT.match(spec)
        if match:
            add("client.retry-after", float(match.group(1) or 1.0))
        elif spec.startswith(("http:5", "reset")):
            from ..rules._profile import profile

            backoff = profile(contract.provider).retry_backoff_min
            add("client.retries-transient",
                backoff if backoff is not None else (polling.min_interval if polling else 1.0))
    if scenario.expect.within_seconds and scenario.expect.outcome != "gives_up":
        # A deadline is a sum of gaps: a client's overhead over DEADLINE_REQUESTS requests
        # must not eat it, or a correct client's few retries look too slow (a give-up
        # scenario's span is the client's own deadline, in the same frame: exempt).
        add("scenario.deadline", scenario.expect.within_seconds / DEADLINE_REQUESTS)
    return out


def one_gap_rules(scenario: Scenario) -> set[str]:
    """The rules of :func:`judged_gaps` whose evidence is a single gap: a fault set once."""
    out: set[str] = set()
    for spec in scenario.faults:
        if _ONCE.search(spec):
            if _RATE_LIMIT.match(spec):
                out.add("client.retry-after")
            elif spec.startswith(("http:5", "reset")):
                out.add("client.retries-transient")
    return out


def timing_thresholds(contract: Contract, scenario: Scenario) -> list[float]:
    """The provider-second gaps the scenario judges (the values of :func:`judged_gaps`)."""
    return list(judged_gaps(contract, scenario).values())


def pacing_scale(gap: float, overhead: float = CLIENT_OVERHEAD) -> float:
    """The fastest scale at which ``overhead`` real seconds per request (plus a faulty
    client's SHORTEST_PAUSE) stay within PACING_SHARE of a ``gap`` of provider time."""
    return (PACING_SHARE * gap - SHORTEST_PAUSE) / overhead


def client_overhead(client: Client, *, in_process: bool, frame: str = "virtual") -> float:
    """Real seconds per request the pacing checks must see through for this client: a
    callable run in this process costs far less than a process of its own."""
    if isinstance(client, CallableClient) and (in_process or frame == "told"):
        return IN_PROCESS_OVERHEAD
    return CLIENT_OVERHEAD


def machine_slowdown(sample: float = 0.01) -> float:
    """How much longer than its CPU time a burst of work takes here now (1: an idle machine).

    A client's per-request overhead grows the same way on a loaded machine, so the pacing
    scale is divided by this: pacing stays judgeable under load, at the cost of slower waits.
    """
    worst = 1.0
    for _ in range(3):  # the worst of three: a client that gets less CPU than this is not seen
        wall, cpu = time.perf_counter(), time.thread_time()
        while time.thread_time() - cpu < sample:
            pass
        worst = max(worst, (time.perf_counter() - wall) / sample)
    return min(MAX_SLOWDOWN, worst)


_last_slowdown: tuple[float, float] = (-1e9, 1.0)  # (perf_counter when measured, slowdown)


def recent_slowdown(max_age: float = SLOWDOWN_MAX_AGE) -> float:
    """:func:`machine_slowdown`, measured again once the last figure is ``max_age`` real s old
    (a catalogue's scenarios last well under a second each: one figure serves a few)."""
    global _last_slowdown
    now = time.perf_counter()
    if now - _last_slowdown[0] >= max_age:
        _last_slowdown = (now, machine_slowdown())
    return _last_slowdown[1]


def remeasure_slowdown() -> float:
    """:func:`machine_slowdown` now, kept for :func:`recent_slowdown` too."""
    global _last_slowdown
    _last_slowdown = (time.perf_counter(), machine_slowdown())
    return _last_slowdown[1]


def scenario_scale(
    contract: Contract, scenario: Scenario, requested: float | None = None, *, slowdown: float = 1.0,
    overhead: float = CLIENT_OVERHEAD,
) -> float:
    """How much faster than real time a scenario runs.

    ``requested`` (``--time-scale``) wins; then the scenario's own ``time_scale``; a scenario
    whose correct ending is giving up runs at x1000 (a correct client waits minutes); any other
    runs as fast as the pacing it judges (:func:`judged_gaps`) allows, at most x100: the
    client's real ``overhead`` per request (25 ms for a process, 5 ms for a callable in this
    process; 25 ms for the requests within a deadline, whoever makes them; twice as much where
    one gap is all the evidence, see :func:`one_gap_rules`) plus a 10 ms pause
    must stay below 70 % of the shortest judged gap, so a tight loop is always seen there.
    ``slowdown`` (:func:`machine_slowdown`) divides every chosen scale on a loaded machine,
    where a client's overhead per request (and the margin of a deadline) grows the same way.
    """
    if requested is not None:
        return requested
    slowdown = max(1.0, slowdown)
    if scenario.time_scale is not None:
        return max(1.0, round(scenario.time_scale / slowdown, 1))
    if scenario.expect.outcome == "gives_up":
        return max(1.0, round(GIVES_UP_SCALE / slowdown, 1))
    gaps = judged_gaps(contract, scenario)
    if not gaps:
        return DEFAULT_TIME_SCALE
    once = one_gap_rules(scenario)

    def cost(rule: str) -> float:
        # A deadline's margin is for the whole round trip of a correct client on a loaded
        # machine (a stall of the event loop counts as much as CPU): a process's overhead.
        if rule == "scenario.deadline":
            return CLIENT_OVERHEAD
        return overhead * (ONE_GAP_MARGIN if rule in once else 1.0)

    pacing = min(pacing_scale(gap, cost(rule)) for rule, gap in gaps.items()) / slowdown
    return max(1.0, min(DEFAULT_TIME_SCALE, round(pacing, 1)))


async def run_in_frame(
    client: Client, env: dict[str, str], timeout: float, scale: float,
    provider_now: float | Callable[[], float],
    *, frame: str = "virtual", in_process: bool = False,
) -> tuple[ClientResult, Frame]:
    """Run the client in provider time where it can be; say which frame it had.

    A command, or a callable importable as ``module:function`` (started as a child process),
    runs under libfaketime at ``scale`` from ``provider_now``, and is told a scale of 1. An
    in-process callable (``in_process``: respx, or a function object) runs in real time and is
    told the scale. ``frame="told"`` asks for the latter for every client.
    """
    if scale == 1.0:
        env["IMAGEGEN_TIME_SCALE"] = "1.0"
        return await client.run(env, timeout), Frame("real", 1.0)
    command: CommandClient | None = None
    if isinstance(client, CommandClient):
        command = client
    elif isinstance(client, CallableClient) and client.spec and not in_process:
        command = CommandClient(
            [sys.executable, "-m", "imagegen_conformance._child", client.spec],
            name=client.name,
        )
    if frame == "told" or command is None:
        env["IMAGEGEN_TIME_SCALE"] = repr(float(scale))
        return await client.run(env, timeout), Frame("told", scale)
    blocker = frame_blocker(command.argv, {**os.environ, **env})
    library = None if blocker else libfaketime_path()
    if blocker is None and library is None:
        blocker = ("no libfaketime here (the PyPI package 'libfaketime' needs a C compiler to "
                   "build it once, or install Debian's 'faketime'; Linux only)")
    if blocker is not None or library is None:
        env["IMAGEGEN_TIME_SCALE"] = repr(float(scale))
        result = await command.run(env, timeout)
        return result, Frame("none", scale, False, f"{NOT_VIRTUALIZED}: {blocker}")
    with FrameSession(library, scale, provider_now) as frame_vars:
        preload = " ".join(p for p in (frame_vars["LD_PRELOAD"], env.get("LD_PRELOAD")
                                       or os.environ.get("LD_PRELOAD")) if p)
        env.update(frame_vars, LD_PRELOAD=preload, IMAGEGEN_TIME_SCALE="1.0")
        result = await command.run(env, timeout, watch=library)
    if result.clock_problem:
        return result, Frame("faketime", scale, False, f"{NOT_VIRTUALIZED}: {result.clock_problem}")
    return result, Frame("faketime", scale)


async def run_scenario(
    contract: Contract, scenario: Scenario, client: Client, *, target: str = "mock",
    time_scale: float | None = None, seed: int | None = 1, startup_slack: float = 10.0,
    api_key: str | None = None, extra_env: Mapping[str, str] | None = None, tls: bool = False,
    transport: str = "socket", frame: str = "virtual",
) -> ScenarioResult:
    """Run one scenario: set the target up, run the client, validate and check its exchanges.

    ``transport="respx"`` serves the mock in-process under the provider's real hostnames
    (for Python callables whose httpx clients hard-code them); ``"socket"`` binds a port.
    ``time_scale`` overrides the scale :func:`scenario_scale` would choose; ``frame`` is
    ``virtual`` (the client runs in provider time) or ``told`` (see :func:`run_in_frame`).
    """
    if frame not in FRAMES:
        raise ValueError(f"unknown frame {frame!r}; valid: {', '.join(FRAMES)}")
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; valid: {', '.join(TRANSPORTS)}")
    if transport == "respx" and not isinstance(client, CallableClient):
        raise ValueError("transport respx serves the mock inside this process: it needs a Python "
                         "callable client (module:function), not a command")
    if target != "mock":
        return await run_remote_scenario(
            contract, scenario, client, target=target, time_scale=time_scale or 1.0,
            startup_slack=startup_slack, api_key=api_key, extra_env=extra_env, frame=frame,
            run_client=run_in_frame,
        )
    in_process = transport == "respx" or (
        isinstance(client, CallableClient) and (not client.spec or client.honours_time_scale)
    )
    overhead = client_overhead(client, in_process=in_process, frame=frame)
    chosen = time_scale is None and scenario.time_scale is None and scenario.expect.outcome != "gives_up"
    slowdown = recent_slowdown() if chosen else 1.0
    scale = scenario_scale(contract, scenario, time_scale, overhead=overhead, slowdown=slowdown)
    once = functools.partial(
        _run_on_mock, contract, scenario, client, seed=seed, startup_slack=startup_slack,
        api_key=api_key, extra_env=extra_env, tls=tls, transport=transport, frame=frame,
        in_process=in_process, overhead=overhead,
    )
    result, after = await once(scale, watch_load=chosen)
    if chosen and after > slowdown * LOAD_RERUN and _load_may_have_decided(contract, scenario, result):
        # The machine got busier while the client ran: its overhead per request may have
        # filled the gaps judged, so a pass (or a deadline missed) is not evidence. Once more,
        # at the scale this load calls for.
        slower = scenario_scale(contract, scenario, overhead=overhead, slowdown=after)
        if slower < scale:
            first = result.seconds
            result, _ = await once(slower, watch_load=False)
            result.seconds += first
    return result


#: How much busier than when its scale was chosen the machine must be after a scenario (as
#: :func:`machine_slowdown` measures it) to run the scenario again at a slower scale.
LOAD_RERUN = 1.3


def _load_may_have_decided(contract: Contract, scenario: Scenario, result: ScenarioResult) -> bool:
    """Could a busier machine have decided this verdict: a pacing rule the scenario judges
    that passed (the client's overhead may have filled the gap), or a deadline missed?"""
    found = {d.rule for d in result.deviations}
    judged = judged_gaps(contract, scenario)
    if "scenario.deadline" in found:
        return True
    return any(rule not in found for rule in judged if rule != "scenario.deadline")


async def _run_on_mock(
    contract: Contract, scenario: Scenario, client: Client, scale: float, *, seed: int | None,
    startup_slack: float, api_key: str | None, extra_env: Mapping[str, str] | None, tls: bool,
    transport: str, frame: str, in_process: bool, overhead: float, watch_load: bool,
) -> tuple[ScenarioResult, float]:
    """One run on a fresh mock at ``scale``; with ``watch_load``, also the machine's slowdown
    measured as soon as the client ended (else 1)."""
    after = 1.0
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
            result, clock = await run_in_frame(
                client, env, client_timeout(contract, scenario) / scale + startup_slack, scale,
                server.clock.now, frame=frame, in_process=in_process,
            )
            if watch_load:
                after = remeasure_slowdown()
            exchanges = server.journal.entries()
            last = server.journal.last_seq
            verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
            async with httpx.AsyncClient(timeout=10.0, verify=verify) as http:
                result.images = await inspect_images(result, http)
                await probe_images(contract, exchanges, http)
            probes = server.journal.entries(since=last)
        finally:
            if served is not None:
                await served.close()
            else:
                await server.aclose()
    return evaluate(
        contract, scenario, client.name, "mock", exchanges, probes, result, scale,
        urls[server.roles[0]], time.perf_counter() - started, frame=clock, overhead=overhead,
    ), after


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
        if report.target_error is not None:
            result = ScenarioResult(
                provider=contract.provider, scenario=scenario.id, summary=scenario.summary,
                client=options.client.name, target=options.target, expect=dict(scenario.expect.raw),
                skipped=f"the target is unreachable: {report.target_error}",
            )
        else:
            try:
                result = await run_scenario(
                    contract, scenario, options.client, target=options.target,
                    time_scale=options.time_scale, seed=options.seed,
                    startup_slack=options.startup_slack, api_key=options.api_key,
                    extra_env=options.extra_env, tls=options.tls, transport=options.transport,
                    frame=options.frame,
                )
            except TargetUnreachable as exc:
                report.target_error = str(exc)
                result = ScenarioResult(
                    provider=contract.provider, scenario=scenario.id, summary=scenario.summary,
                    client=options.client.name, target=options.target,
                    expect=dict(scenario.expect.raw), skipped=f"the target is unreachable: {exc}",
                )
        report.results.append(result)
        if options.on_progress:
            options.on_progress("done", scenario.id, result)
    report.finished_at = time.time()
    return report
