"""Running a scenario against a URL: a mock started elsewhere, or a live endpoint.

The client talks to a :class:`ValidatingProxy` in front of the target, so its exchanges are
recorded the same way as against an in-process mock. When the target is a mock (it answers
``/__mock/health``) the scenario's faults are set through its admin API; a live endpoint
cannot be told to fail, so scenarios that need faults are skipped there.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from imagegen_conformance.contracts import Contract, Scenario

from ..proxy._proxy import ValidatingProxy
from ..report import ScenarioResult
from ..rules import ClientResult, Frame
from ._clients import CallableClient, Client, inspect_images
from ._evaluate import build_env, canary_key, client_timeout, evaluate, probe_images

__all__ = ["TargetUnreachable", "mock_health", "run_remote_scenario"]

RunClient = Callable[..., Awaitable[tuple[ClientResult, Frame]]]


class TargetUnreachable(ConnectionError):
    """``--target`` does not answer: the target's failure, not the client's (exit status 3)."""


async def _reachable(http: httpx.AsyncClient, target: str) -> None:
    try:
        await http.get(target.rstrip("/") + "/", timeout=10.0)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
        raise TargetUnreachable(f"{target}: {type(exc).__name__}: {exc or 'no answer'}") from exc
    except httpx.HTTPError:
        return  # it answered something: reachable


async def mock_health(http: httpx.AsyncClient, target: str) -> dict[str, Any] | None:
    """The target's ``/__mock/health`` if it is one of our mocks, else None."""
    try:
        response = await http.get(target.rstrip("/") + "/__mock/health")
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if response.status_code == 200 and isinstance(data, dict) and "provider" in data else None


async def run_remote_scenario(
    contract: Contract, scenario: Scenario, client: Client, *, target: str, time_scale: float,
    startup_slack: float, api_key: str | None, extra_env: Mapping[str, str] | None,
    frame: str = "virtual", run_client: RunClient | None = None,
) -> ScenarioResult:
    """Raises :class:`TargetUnreachable` when nothing answers at ``target``."""
    key = api_key or canary_key()
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10.0) as http:
        await _reachable(http, target)
        health = await mock_health(http, target)
        if health is not None:
            if health.get("provider") != contract.provider:
                return _skipped(contract, scenario, client, target,
                                f"the target is a {health.get('provider')} mock, not {contract.provider}")
            time_scale = float(health.get("time_scale") or time_scale)
            base = target.rstrip("/")
            await http.post(base + "/__mock/reset")
            for spec in scenario.faults:
                answer = await http.post(base + "/__mock/faults", json={"spec": spec})
                if answer.status_code >= 400:
                    return _skipped(contract, scenario, client, target,
                                    f"the mock refused fault {spec!r}: {answer.text[:200]}")
            if scenario.options or scenario.lifecycle:
                return _skipped(contract, scenario, client, target,
                                "the scenario needs mock options or a lifecycle set at start-up")
        elif scenario.faults or scenario.options or scenario.lifecycle:
            return _skipped(contract, scenario, client, target,
                            "the scenario sets faults up, which only a mock can do")
        proxy = ValidatingProxy(contract.provider, target, time_scale=time_scale)
        proxy_url = await proxy.start()
        try:
            roles = list(contract.behaviour.hosts) or ["api"]
            with tempfile.TemporaryDirectory(prefix="imagegen-out-") as out_dir:
                env = build_env(contract, scenario, {roles[0]: proxy_url}, key, out_dir,
                                time_scale, extra_env)
                timeout = client_timeout(contract, scenario) / time_scale + startup_slack
                if run_client is not None:
                    now = await _provider_now(http, target) if health is not None else time.time()
                    in_process = isinstance(client, CallableClient) and (
                        not client.spec or client.honours_time_scale)
                    result, clock = await run_client(client, env, timeout, time_scale, now, frame=frame,
                                                     in_process=in_process)
                else:
                    result, clock = await client.run(env, timeout), Frame("told", time_scale)
                exchanges = proxy.journal.entries()
                last = proxy.journal.last_seq
                result.images = await inspect_images(result, http)
                await probe_images(contract, exchanges, http)
            probes = proxy.journal.entries(since=last)
        finally:
            await proxy.close()
    return evaluate(contract, scenario, client.name, target, exchanges, probes, result, time_scale,
                    proxy_url, time.perf_counter() - started, frame=clock)


async def _provider_now(http: httpx.AsyncClient, target: str) -> float:
    """The remote mock's provider "now" (its clock may run scaled or be set by hand)."""
    try:
        data = (await http.get(target.rstrip("/") + "/__mock/clock")).json()
        return float(data["now"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return time.time()


def _skipped(contract: Contract, scenario: Scenario, client: Client, target: str, why: str) -> ScenarioResult:
    return ScenarioResult(
        provider=contract.provider, scenario=scenario.id, summary=scenario.summary,
        client=client.name, target=target, expect=dict(scenario.expect.raw), skipped=why,
        result=ClientResult(False, error="not run"),
    )
