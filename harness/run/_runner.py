"""The runner: a client x the provider's scenarios x a target (a fresh mock, or a URL)."""

from __future__ import annotations

import contextlib
import ssl
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
from ..rules import Severity
from ._clients import CallableClient, Client, inspect_images
from ._evaluate import build_env, canary_key, client_timeout, evaluate, probe_images
from ._remote import run_remote_scenario

__all__ = ["DEFAULT_TIME_SCALE", "TRANSPORTS", "RunOptions", "run", "run_scenario"]

DEFAULT_TIME_SCALE = 100.0
TRANSPORTS = ("socket", "respx")
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
            result = await client.run(env, client_timeout(contract, scenario) / scale + startup_slack)
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
        urls[server.roles[0]], time.perf_counter() - started,
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
