"""``imagegen-conformance run``: turn CLI options into a run, show progress, write the report."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from imagegen_conformance import contracts

from ..report._report import Report, ScenarioResult
from ..rules._deviation import Severity
from ..run._clients import CommandClient, load_client
from ..run._runner import RunOptions, run
from ._output import write_report

__all__ = ["RunConfig", "UsageError", "execute_run"]


class UsageError(ValueError):
    """A bad option: the message says what is valid. The CLI exits 2."""


@dataclass
class RunConfig:
    provider: str
    client: str | None
    scenarios: tuple[str, ...] = ()
    target: str = "mock"
    report: str = "terminal"
    out: Path | None = None
    fail_on: str = "error"
    time_scale: float | None = None
    seed: int | None = 1
    startup_slack: float = 10.0
    env: Mapping[str, str] = field(default_factory=dict)
    tls: bool = False
    api_key: str | None = None
    transport: str = "socket"
    frame: str = "virtual"


def _options(config: RunConfig) -> RunOptions:
    try:
        provider = contracts.canonical(config.provider)
    except contracts.ContractError as exc:
        raise UsageError(str(exc)) from None
    if provider not in contracts.available():
        raise UsageError(f"{provider} has no contract here; available: {', '.join(contracts.available())}")
    contract = contracts.load(provider)
    known = [s.id for s in contract.scenarios]
    for scenario in config.scenarios:
        if scenario not in known:
            import difflib

            close = difflib.get_close_matches(scenario, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"{provider} has no scenario {scenario!r}.{hint} Known: {', '.join(known)}")
    if config.target != "mock" and not config.target.startswith(("http://", "https://")):
        raise UsageError(f"--target must be 'mock' or an http(s) URL, got {config.target!r}")
    if config.tls and config.target != "mock":
        raise UsageError("--tls serves the harness's own mocks; it needs --target mock")
    try:
        fail_on = Severity.parse(config.fail_on)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    spec = config.client
    if spec is None:
        from ..rules._profile import profile

        spec = profile(provider).reference_client
        if spec is None:
            raise UsageError(f"{provider} has no reference client yet; pass --client CMD|module:function")
    try:
        client = load_client(spec)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if isinstance(client, CommandClient):
        _check_command(client.argv[0])
    if config.transport == "respx" and (config.target != "mock" or ":" not in spec or " " in spec):
        raise UsageError("--transport respx needs --target mock and a module:function client")
    return RunOptions(
        provider=provider, client=client, scenarios=list(config.scenarios) or None,
        target=config.target, time_scale=config.time_scale, seed=config.seed, fail_on=fail_on,
        startup_slack=config.startup_slack, extra_env=dict(config.env), tls=config.tls,
        api_key=config.api_key, transport=config.transport, frame=config.frame,
    )


def _check_command(program: str) -> None:
    """A command that cannot start is a usage error, with the likely fix."""
    path = Path(program)
    if shutil.which(program) is not None:
        return
    if path.is_file():
        if os.access(path, os.X_OK):
            return
        runner = {".py": "python", ".js": "node", ".mjs": "node", ".sh": "sh"}.get(path.suffix)
        hint = f" Did you mean '{runner} {program}'?" if runner else " Make it executable (chmod +x)."
        raise UsageError(f"client {program!r} is not executable.{hint}")
    raise UsageError(f"client command {program!r} not found (not on PATH, not a file); "
                     "pass a command line or module:function")


def execute_run(config: RunConfig, console: Console | None = None) -> int:
    """Run, report, and return the exit code (0 clean, 1 deviations; UsageError for 2)."""
    options = _options(config)
    err = Console(stderr=True) if console is None else console
    status = err.status("starting", spinner="dots")
    if config.report == "terminal" or err.is_terminal:
        status.start()

    def progress(kind: str, scenario: str, result: ScenarioResult | None) -> None:
        if kind == "start":
            status.update(f"{options.provider}: running scenario [bold]{scenario}[/bold]")
        elif result is not None:
            mark = "[green]passed[/green]" if result.passed(options.fail_on) else "[red]FAILED[/red]"
            if result.skipped:
                mark = "[dim]skipped[/dim]"
            judged = f", {len(result.not_judged)} not judged" if result.not_judged else ""
            err.print(f"  {scenario}: {mark} ({len(result.exchanges)} exchanges, "
                      f"{len(result.deviations)} deviations{judged})", highlight=False)

    options.on_progress = progress
    try:
        report: Report = asyncio.run(run(options))
    finally:
        status.stop()
    write_report(report, config.report, config.out, err, console)
    return report.exit_code
