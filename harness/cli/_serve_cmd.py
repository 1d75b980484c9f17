from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer, TLSMaterial, start
from imagegen_conformance.mocks.engine import (
    DriftSpec,
    Exchange,
    Replay,
    apply_drift,
    redact_url,
    share,
)

from ..rules._live import LiveDeviation, LiveRules

__all__ = ["ServeConfig", "build_servers", "exchange_line", "run_serve"]


@dataclass
class ServeConfig:
    providers: list[str]
    host: str = "127.0.0.1"
    port: int | None = None
    time_scale: float = 1.0
    clock: str | None = None
    lifecycle: str = "time"
    seed: int | None = None
    signing_secret: str | None = None
    api_keys: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    options: dict[str, dict[str, str]] = field(default_factory=dict)
    rate_limit: str = "off"
    tls: bool = False
    tls_dir: Path | None = None
    public_url: str | None = None
    admin_token: str | None = None
    allow_hosts: tuple[str, ...] = ()
    as_json: bool = False
    drifts: tuple[str, ...] = ()  # mocks.engine._drift specs: answers that deviate on purpose
    replay: Path | None = None  # serve this recording instead of the providers
    store: str = "memory"  # or redis://HOST:PORT/DB: state shared by workers, kept over restarts
    workers: int = 1  # processes serving the same ports (needs a shared store beyond 1)
    worker_ports: bool = False  # each worker also listens on a port of its own
    check: bool = False  # evaluate the rules live: GET /__mock/deviations, print each one found
    verbose: bool = False  # print one line per exchange


def build_servers(config: ServeConfig) -> list[MockServer]:
    servers = []
    for provider in config.providers:
        server = MockServer(
            provider,
            clock=config.clock or ("scaled" if config.time_scale != 1.0 else "real"),
            time_scale=config.time_scale,
            seed=config.seed,
            signing_secret=config.signing_secret,
            lifecycle=config.lifecycle,
            api_keys=config.api_keys,
            faults=config.faults,
            options=_options_for(provider, config),
            rate_limit=config.rate_limit,
            public_url=config.public_url,
            admin_token=config.admin_token,
            allow_hosts=config.allow_hosts,
        )
        apply_drift(server, [DriftSpec.parse(d) for d in config.drifts])
        servers.append(server)
    return servers


def _options_for(provider: str, config: ServeConfig) -> dict[str, str]:
    from imagegen_conformance.contracts import load

    declared = load(provider).behaviour.options
    chosen = {k: v for k, v in config.options.get("*", {}).items() if k in declared}
    unknown = set(config.options.get("*", {})) - set().union(
        *(load(p).behaviour.options for p in config.providers)
    )
    if unknown:
        raise ValueError(f"no served provider has option(s) {', '.join(sorted(unknown))}")
    chosen.update(config.options.get(provider, {}))
    return chosen


def exchange_line(ex: Exchange) -> str:
    """``#3 GET /v2/ai/e/images/tasks/1 -> 200 getImageTask 1.4 ms``, secrets redacted."""
    query = "?" + "&".join(f"{k}={v}" for k, v in ex.query) if ex.query else ""
    status = ex.status if ex.status is not None else "no answer"
    fault = f" fault={','.join(ex.faults)}" if ex.faults else ""
    took = f"{ex.duration_ms:.1f} ms" if ex.duration_ms is not None else "- ms"
    error = " (handler crashed)" if ex.error and "Traceback" in ex.error else ""
    return (f"#{ex.seq} {ex.method} {redact_url(ex.path + query)} -> {status} "
            f"{ex.operation or '-'}{fault} {took}{error}")


def _watch(server: MockServer, config: ServeConfig, emit: Callable[..., Any]) -> LiveRules | None:
    """Wire ``--verbose`` and ``--check`` to a server through its observer hook."""
    provider = server.provider_id
    if config.verbose:
        server.observe(lambda ex: emit("exchange", provider=provider, line=exchange_line(ex),
                                       exchange=ex.to_dict()))
    if not config.check:
        return None

    def found(item: LiveDeviation) -> None:
        emit("deviation", provider=provider, deviation=item.to_dict(), item=item)

    return LiveRules(provider, on_deviation=found).attach(server)


async def run_serve(
    config: ServeConfig, emit: Callable[..., Any], servers: list[MockServer] | None = None,
) -> None:
    """Start the servers, announce them, and wait for SIGINT/SIGTERM."""
    if config.replay is not None:
        await _run_replay(config, emit)
        return
    servers = servers if servers is not None else build_servers(config)
    if config.store != "memory":
        for server in servers:
            if server.provider.shareable:
                await share(server, config.store, secret_given=config.signing_secret is not None)
            else:
                print(f"warning: {server.provider_id} is served from this process's memory, not the "
                      "shared store (its state cannot be shared)", file=sys.stderr, flush=True)
    live = {s.provider_id: _watch(s, config, emit) for s in servers}
    if config.port is not None:
        ports = {p: config.port for p in config.providers}
    else:
        ports = {p: contracts.load(p).behaviour.port for p in config.providers}
    tls = TLSMaterial.create(config.tls_dir) if config.tls else None
    served = await start(servers, host=config.host, ports=ports, tls=tls)
    for provider, rules in live.items():
        if rules is not None and rules.base_url is None:
            rules.base_url = served.url(provider)  # reproduce lines name this server
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if tls is not None:
            emit("ca_bundle", path=str(tls.ca_path))
        for item in served.listeners:
            emit("listener", provider=item.provider, role=item.role, url=item.url, primary=item.primary)
        await stop.wait()
    finally:
        await served.close()


async def _run_replay(config: ServeConfig, emit: Callable[..., Any]) -> None:
    """``serve --replay FILE``: answer from a recording until SIGINT/SIGTERM."""
    assert config.replay is not None
    replay = Replay.load(config.replay, time_scale=config.time_scale)
    url = await replay.start(config.host, config.port or 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        emit("listener", provider=replay.provider, role="api", url=url, primary=True)
        await stop.wait()
    finally:
        await replay.close()
