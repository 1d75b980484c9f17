"""The ``imagegen-conformance`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from imagegen_conformance import contracts
from imagegen_conformance.mocks.engine import PortInUse, check_store, is_loopback

from ..rules._live import LiveDeviation
from ._serve_cmd import ServeConfig, build_servers, run_serve
from ._workers import run_workers

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _providers(values: tuple[str, ...]) -> list[str]:
    chosen: list[str] = []
    for value in values or ("all",):
        for part in value.split(","):
            part = part.strip()
            if part == "all":
                chosen.extend(contracts.available())
                continue
            try:
                provider = contracts.canonical(part)
            except contracts.ContractError as exc:
                raise click.BadParameter(str(exc), param_hint="--provider") from None
            # An alias is kept: a mock started under one may serve that alias's own variant.
            chosen.append(part.lower() if part.lower() in contracts.aliases() else provider)
            if provider not in contracts.available():
                raise click.BadParameter(
                    f"{provider} has no contract in this installation; available: "
                    + ", ".join(contracts.available()),
                    param_hint="--provider",
                )
    return list(dict.fromkeys(chosen))


def _options(values: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``--option error_shape=openai`` (every provider that has it) or ``cloudsway.error_shape=openai``."""
    out: dict[str, dict[str, str]] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            raise click.BadParameter(f"{value!r} must be NAME=VALUE", param_hint="--option")
        provider, dot, name = key.partition(".")
        if not dot:
            provider, name = "*", key
        out.setdefault(provider, {})[name] = val
    return out


def _add_contracts(ctx: click.Context, param: click.Parameter, value: tuple[Path, ...]) -> None:
    try:
        if value:
            contracts.add_contracts(*value)
        contracts.available()  # a broken IMAGEGEN_CONTRACTS or folder is a usage error, here
    except contracts.ContractError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


#: ``--contracts DIR`` on every command that takes ``--provider``.
contracts_option = click.option(
    "--contracts", "contract_dirs", multiple=True, metavar="DIR", expose_value=False, is_eager=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path), callback=_add_contracts,
    help="Load more providers from DIR (folders <id>/ with openapi, behaviour and scenarios YAML); "
         "repeatable. IMAGEGEN_CONTRACTS (os.pathsep-separated) does the same.",
)



@click.group(context_settings=CONTEXT)
@click.version_option(package_name="imagegen-conformance")
def main() -> None:
    """Mock image-generation providers, a conformance harness, and live health checks.

    \b
    Start mocks:       imagegen-conformance serve --provider cloudsway
    Judge as you go:   imagegen-conformance serve -p cloudsway --check, then verify --target URL
    List what exists:  imagegen-conformance providers
    """


@main.command(context_settings=CONTEXT)
@click.option("--provider", "-p", "provider", multiple=True, metavar="ID|all",
              help="Provider to serve (repeat or comma-separate); default all. "
                   "IDs: cloudsway, acedata, fal, yunyx (alias siliconflow), dify.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback exposes the mocks to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port of the primary host (one provider only); 0 picks a free port. "
                   "Defaults: cloudsway 8701, acedata 8702, fal 8703, yunyx 8704, dify 8705.")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Run provider time this many times faster than real time.")
@click.option("--clock", type=click.Choice(["real", "scaled", "manual"]), default=None,
              help="real/scaled follow the wall clock; manual moves only via "
                   "POST /__mock/clock/advance. Default: scaled if --time-scale is set, else real.")
@click.option("--lifecycle", type=click.Choice(["time", "polls"]), default="time",
              show_default=True, help="Advance tasks with time, or one step per poll.")
@click.option("--seed", type=int, default=None,
              help="Make ids, timings, images and faults reproducible (not link signatures: "
                   "see --signing-secret).")
@click.option("--signing-secret", default=None, envvar="IMAGEGEN_SIGNING_SECRET", metavar="SECRET",
              help="Sign image and file links with a key made from SECRET (env "
                   "IMAGEGEN_SIGNING_SECRET), so links stay valid across restarts. Default: a "
                   "random key per process; never derived from --seed.")
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Accept only these keys (repeatable). Default: any well-formed key.")
@click.option("--fault", "faults", multiple=True, metavar="SPEC",
              help="Run-wide fault, NAME[:ARG][;op=OPERATION][;times=N][;p=P]. "
                   "See `imagegen-conformance faults`.")
@click.option("--option", "options", multiple=True, metavar="[PROVIDER.]NAME=VALUE",
              help="Select a documented alternative behaviour, e.g. cloudsway.ratio_9_16=720x1080. "
                   "See `imagegen-conformance providers --options`.")
@click.option("--rate-limit", default="off", show_default=True, metavar="off|contract|N/SECONDS",
              help="Per-key rate limit answered with the provider's 429 and Retry-After.")
@click.option("--tls", is_flag=True, help="Serve HTTPS with a throwaway CA; its bundle path is printed.")
@click.option("--tls-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where --tls writes ca.pem (default: a new temporary directory).")
@click.option("--public-url", default=None, metavar="URL",
              help="Base URL to put in returned links (behind a proxy); one provider only.")
@click.option("--admin-token", default=None, envvar="IMAGEGEN_ADMIN_TOKEN",
              help="Require this X-Admin-Token on /__mock/ (env IMAGEGEN_ADMIN_TOKEN).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="HOST",
              help="Also deliver webhooks/callbacks to this host (default: loopback only).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON lines: one object per listener (and per exchange / deviation).")
@click.option("--check", is_flag=True,
              help="Evaluate the behaviour rules live over every client's exchanges: print each "
                   "deviation as it is found, serve them at GET /__mock/deviations (the gate: "
                   "`imagegen-conformance verify --target URL`).")
@click.option("--verbose", "-v", is_flag=True,
              help="Print one line per exchange: method, path, status, operation, fault, ms "
                   "(secrets redacted).")
@click.option("--drift", "drifts", multiple=True, metavar="SPEC",
              help="Make answers deviate from the contract on purpose (to test drift detection): "
                   "rename:OLD=NEW, drop:KEY or status:CODE, with ;op=OPERATION;times=N. "
                   "See docs/probe.md.")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Answer from a recording (proxy --record, JSON lines or HAR) instead of a mock: "
                   "the n-th request of a path gets its n-th recorded answer, timing scaled by "
                   "--time-scale. --port 0 for a free port.")
@click.option("--store", default="memory", show_default=True, envvar="IMAGEGEN_STORE",
              metavar="memory|redis://HOST:PORT/DB",
              help="Where tasks, journal, faults, rate limits, deliveries and the clock live. "
                   "memory: this process, forgotten on restart. redis://: shared by every worker "
                   "and host pointed at it, kept over restarts (env IMAGEGEN_STORE).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes serving the same ports as one mock (needs --store redis://...).")
@click.option("--worker-ports", is_flag=True,
              help="With --workers: each worker also listens on a free port of its own, printed "
                   "as `worker N <provider> <url>`.")
@contracts_option
def serve(**kwargs: Any) -> None:
    """Start provider mocks and print `<provider> <base-url>` once each accepts connections.

    \b
    Examples:
      imagegen-conformance serve --provider cloudsway --port 8701
      imagegen-conformance serve --provider all --time-scale 50
      imagegen-conformance serve -p cloudsway --fault "http:503;op=getImageTask;times=2"
      imagegen-conformance serve -p fal --tls --tls-dir ./tls
      imagegen-conformance serve --replay session.jsonl --port 0 --time-scale 10
      imagegen-conformance serve -p fal --workers 2 --store redis://127.0.0.1:6379/0
      imagegen-conformance serve -p cloudsway --check --verbose   (then: verify --target URL)

    Stop with Ctrl-C or SIGTERM. Exit status: 0 stopped, 2 usage error (a bad flag value, a
    port in use).
    """
    for spec in kwargs["drifts"]:
        try:
            from imagegen_conformance.mocks.engine import DriftSpec

            DriftSpec.parse(spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--drift") from None
    if kwargs["replay"] is not None:
        kwargs["provider"] = kwargs["provider"] or ("all",)
    providers = _providers(kwargs.pop("provider"))
    if kwargs["port"] not in (None, 0) and len(providers) > 1:
        raise click.BadParameter("--port N needs exactly one --provider (0 is fine for many)",
                                 param_hint="--port")
    if kwargs["public_url"] and len(providers) > 1:
        raise click.BadParameter("--public-url needs exactly one --provider", param_hint="--public-url")
    if not is_loopback(kwargs["host"]):
        click.echo(
            f"warning: binding {kwargs['host']} exposes the mocks (and their admin API) beyond "
            "this machine; use --admin-token", err=True,
        )
    store = kwargs["store"]
    if store != "memory" and not store.startswith(("redis://", "rediss://", "unix://")):
        raise click.BadParameter(f"{store!r}: expected memory or redis://HOST:PORT/DB", param_hint="--store")
    if kwargs["workers"] > 1 and store == "memory":
        raise click.BadParameter(
            "--workers N needs a store they share: --store redis://HOST:PORT/DB "
            "(start one with: redis-server --port 6379)", param_hint="--workers")
    if kwargs["workers"] > 1 and kwargs["check"]:
        # The live rules judge each client's whole sequence of exchanges; spread over workers,
        # each would see a part of it (and call a correct client's pacing wrong).
        raise click.BadParameter(
            "--check judges each client in one process; drop --workers, or judge the shared "
            "journal afterwards with: imagegen-conformance verify --target URL", param_hint="--check")
    if kwargs["workers"] > 1 and kwargs["replay"] is not None:
        raise click.BadParameter("--replay serves from one process; drop --workers", param_hint="--workers")
    config = ServeConfig(providers=providers, options=_options(kwargs.pop("options")), **kwargs)
    servers = None
    if config.replay is None:
        try:
            servers = build_servers(config)
        except ValueError as exc:  # a bad --fault, --option, --rate-limit, --lifecycle...
            raise click.UsageError(str(exc)) from None
    try:
        if config.workers > 1:
            asyncio.run(check_store(config.store))
            run_workers(config, _emit(config.as_json))
        else:
            asyncio.run(run_serve(config, _emit(config.as_json), servers))
    except KeyboardInterrupt:
        pass
    except PortInUse as exc:
        raise click.UsageError(str(exc.strerror or exc)) from None
    except (ValueError, OSError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None


def _emit(as_json: bool) -> Any:
    def emit(kind: str, **fields: Any) -> None:
        if as_json:
            click.echo(json.dumps({"kind": kind, **fields}, default=str))
        elif kind == "listener":
            name = fields["provider"] if fields["primary"] else f"{fields['provider']}:{fields['role']}"
            click.echo(f"{name} {fields['url']}")
        elif kind == "worker":
            name = fields["provider"] if fields["primary"] else f"{fields['provider']}:{fields['role']}"
            click.echo(f"worker {fields['worker']} {name} {fields['url']}")
        elif kind == "ca_bundle":
            click.echo(f"ca-bundle {fields['path']}")
        elif kind == "exchange":
            click.echo(f"{fields['provider']} {fields['line']}")
        elif kind == "deviation":
            click.echo("\n".join(live_lines(fields["provider"], fields["item"])))
        sys.stdout.flush()

    def emit_json(kind: str, **fields: Any) -> None:
        fields.pop("item", None)
        fields.pop("line", None)
        emit(kind, **fields)

    return emit_json if as_json else emit


def live_lines(provider: str, item: LiveDeviation) -> list[str]:
    """A live deviation with its evidence, one fact per line, never wrapped."""
    dev = item.deviation
    lines = [f"{provider} deviation #{item.seq} {dev}", f"    client:    {item.client}"]
    if dev.expected is not None or dev.actual is not None:
        lines.append(f"    expected:  {_short(dev.expected)}")
        lines.append(f"    actual:    {_short(dev.actual)}")
    if dev.reproduce:
        lines.append(f"    reproduce: {dev.reproduce}")
    return lines


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."




@main.command(context_settings=CONTEXT)
@click.option("--options", "show_options", is_flag=True, help="Also list each provider's options.")
@contracts_option
def providers(show_options: bool) -> None:
    """List the providers, their hosts, operations and selectable options."""
    for name in contracts.available():
        contract = contracts.load(name)
        hosts = ", ".join(f"{r}={u}" for r, u in contract.behaviour.hosts.items())
        click.echo(f"{name}: {contract.title}  [{hosts}]")
        for op in contract.operations.values():
            click.echo(f"    {op.method:6} {op.path}  ({op.operation_id})")
        if show_options:
            for opt in contract.behaviour.options.values():
                click.echo(f"    option {opt.name}={'|'.join(opt.choices)} (default {opt.default})")
                click.echo(f"        {opt.doc}")


@main.command(context_settings=CONTEXT)
def faults() -> None:
    """List the fault catalogue shared by every provider."""
    from imagegen_conformance.mocks import FAULTS

    click.echo("Faults: NAME[:ARG][;op=OPERATION][;times=N][;p=PROBABILITY]")
    click.echo("Per request: header X-Mock-Fault; per run: --fault; live: POST /__mock/faults.\n")
    for name, doc in FAULTS.items():
        click.echo(f"  {name:18} {doc}")



@main.command(context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.option("--provider", "-p", required=True, metavar="ID", help="Provider whose contract to check.")
@click.option("--target", default=None, metavar="URL",
              help="Base URL to check (a live endpoint or a running mock). Default: a fresh mock.")
@click.option("--max-examples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Hypothesis examples per operation and phase.")
@click.option("--api-key", default=None, envvar="IMAGEGEN_API_KEY",
              help="Key to send (env IMAGEGEN_API_KEY). With no --target, the mock accepts only it.")
@click.option("--seed", type=int, default=None, help="Reproduce a previous run.")
@click.argument("schemathesis_args", nargs=-1, type=click.UNPROCESSED)
@contracts_option
def check(provider: str, target: str | None, max_examples: int, api_key: str | None,
          seed: int | None, schemathesis_args: tuple[str, ...]) -> None:
    """Run Schemathesis over a provider's OpenAPI contract: every check, valid and invalid data.

    Needs the [check] extra: pip install 'imagegen-conformance[check]'.

    \b
    Examples:
      imagegen-conformance check --provider cloudsway --max-examples 100
      imagegen-conformance check -p cloudsway --target https://genaiapi.cloudsway.net --api-key $KEY
      imagegen-conformance check -p cloudsway -- --report junit   (extra args go to schemathesis)
    """
    from ._check_cmd import MissingExtra, run_check

    try:
        name = contracts.canonical(provider)
    except contracts.ContractError as exc:
        raise click.BadParameter(str(exc), param_hint="--provider") from None
    try:
        code = run_check(name, target=target, max_examples=max_examples, api_key=api_key, seed=seed,
                         extra=schemathesis_args)
    except MissingExtra as exc:
        raise click.UsageError(str(exc)) from None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command(context_settings=CONTEXT)
@click.option("--provider", "-p", required=True, metavar="ID",
              help="Provider whose contract and scenarios to use (cloudsway, acedata, fal, yunyx, dify).")
@click.option("--client", "-c", default=None, metavar="CMD|module:function",
              help="The client under test: a command line (any language) or a Python callable. "
                   "Default: the provider's reference client.")
@click.option("--scenario", "-s", "scenarios", multiple=True, metavar="ID",
              help="Scenario to run (repeatable); default all of the provider's scenarios.")
@click.option("--target", default="mock", show_default=True, metavar="mock|URL",
              help="A fresh in-process mock per scenario, or the base URL of a running mock or a "
                   "live endpoint (the client then goes through the validating proxy).")
@click.option("--report", "report", type=click.Choice(["terminal", "json", "junit", "html"]),
              default="terminal", show_default=True, help="Report format.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report, in the --report format, to this file (default stdout).")
@click.option("--fail-on", default="error", show_default=True,
              type=click.Choice(["info", "warning", "error", "critical"]),
              help="Exit 1 when a deviation at or above this severity is found.")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Provider time speed-up for every scenario, overriding each scenario's own. "
                   "Default: per scenario, as fast as the pacing it judges can still be seen "
                   "(at most x100; x1000 for scenarios that end in giving up).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the mocks.")
@click.option("--startup-slack", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Real seconds a client may spend starting up, beyond the scenario's deadline.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Extra environment variable for the client (repeatable).")
@click.option("--tls", is_flag=True,
              help="Serve the mocks over HTTPS with a throwaway CA, given to the client as "
                   "SSL_CERT_FILE (for SDKs that hard-code https, such as fal-client).")
@click.option("--api-key", default=None, envvar="IMAGEGEN_RUN_API_KEY",
              help="Key the client sends (env IMAGEGEN_RUN_API_KEY); needed for a live --target. "
                   "Default: a throwaway canary key. Reports never contain it.")
@click.option("--transport", type=click.Choice(["socket", "respx"]), default="socket",
              show_default=True,
              help="socket: mocks on free ports (any client). respx: mocks in-process under the "
                   "provider's real hostnames (a module:function client using httpx).")
@click.option("--frame", type=click.Choice(["virtual", "told"]), default="virtual", show_default=True,
              help="virtual: the client's clocks, sleeps and timeouts run in provider time "
                   "(libfaketime; a module:function client runs as a child process). told: it "
                   "runs in real time, in-process for callables, and must divide its waits by "
                   "IMAGEGEN_TIME_SCALE.")
@contracts_option
def run(**kwargs: Any) -> None:
    """Run a client against the provider's scenarios and report every deviation.

    \b
    The client gets IMAGEGEN_PROVIDER, IMAGEGEN_BASE_URL, IMAGEGEN_API_KEY, IMAGEGEN_REQUEST
    (JSON body), IMAGEGEN_OUTPUT_DIR, IMAGEGEN_TIME_SCALE and the provider SDK's own variables,
    and prints {"images": [...]} on stdout (non-zero exit on failure).

    \b
    Examples:
      imagegen-conformance run -p cloudsway
      imagegen-conformance run -p cloudsway --client "node my-client.js" --report junit --out r.xml
      imagegen-conformance run -p cloudsway -c mypkg.client:generate -s happy-path --report html --out r.html

    \b
    The client runs in provider time: its clock starts at the mock's "now" and runs as fast as
    the mock's, so a real-second sleep is a provider second (IMAGEGEN_TIME_SCALE is then 1).
    Where that cannot be done (a static or Go binary), timing checks are "not judged".

    Exit status: 0 nothing at or above --fail-on, 1 deviations, 2 usage error, 3 the --target
    URL is unreachable.
    """
    from ._run_cmd import RunConfig, UsageError, execute_run

    env: dict[str, str] = {}
    for item in kwargs.pop("env"):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} must be NAME=VALUE", param_hint="--env")
        env[name] = value
    config = RunConfig(scenarios=tuple(kwargs.pop("scenarios")), env=env, **kwargs)
    try:
        code = execute_run(config)
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(code)


@main.command(context_settings=CONTEXT)
@click.option("--target", required=True, metavar="URL",
              help="Base URL of a running mock (serve --check) or of a proxy.")
@click.option("--fail-on", default="error", show_default=True,
              type=click.Choice(["info", "warning", "error", "critical"]),
              help="Exit 1 when a deviation at or above this severity was found.")
@click.option("--report", "report", type=click.Choice(["terminal", "json", "junit", "html"]),
              default="terminal", show_default=True, help="Report format (one section per client).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report, in the --report format, to this file (default stdout).")
@click.option("--admin-token", default=None, envvar="IMAGEGEN_ADMIN_TOKEN",
              help="The mock's --admin-token (env IMAGEGEN_ADMIN_TOKEN).")
@click.option("--reset", is_flag=True, help="Reset the mock once read, so the next job starts clean.")
def verify(target: str, fail_on: str, report: str, out: Path | None, admin_token: str | None,
           reset: bool) -> None:
    """Gate CI on what a running mock saw: exit 1 on any deviation at or above --fail-on.

    \b
    For clients in any language that run their own tests against `serve`:
      imagegen-conformance serve -p cloudsway --port 8701 --check &
      npm test                      # your suite, pointed at http://127.0.0.1:8701
      imagegen-conformance verify --target http://127.0.0.1:8701 --report junit --out live.xml

    \b
    Clients are told apart by key (a one-way fingerprint), user agent and task; the rules are
    those of `run` (`imagegen-conformance rules`), except those that need the client's own
    verdict. A mock started without --check is judged from its journal.

    \b
    Exit status: 0 nothing at or above --fail-on, 1 deviations, 2 usage error (not a mock),
    3 the target is unreachable.
    """
    from rich.console import Console

    from ..rules._deviation import Severity
    from ._output import write_report
    from ._verify_cmd import Unreachable, VerifyError, fetch_session, live_report

    if not target.startswith(("http://", "https://")):
        raise click.BadParameter(f"{target!r} is not an http(s) URL", param_hint="--target")
    err = Console(stderr=True)
    try:
        session = fetch_session(target, admin_token=admin_token)
    except VerifyError as exc:
        raise click.UsageError(str(exc)) from None
    except Unreachable as exc:
        err.print(f"Error: {exc}", highlight=False, markup=False)
        sys.exit(3)
    for note in session.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    if not session.exchanges and not session.deviations:
        err.print(f"note: {session.target} has seen no exchanges yet", highlight=False, markup=False)
    result = live_report(session, Severity.parse(fail_on))
    write_report(result, report, out, err)
    if reset:
        import httpx

        headers = {"X-Admin-Token": admin_token} if admin_token else {}
        httpx.post(session.target + "/__mock/reset", headers=headers, timeout=30.0)
    sys.exit(result.exit_code)


@main.command(context_settings=CONTEXT)
@click.option("--provider", "-p", required=True, metavar="ID", help="Provider whose contract validates.")
@click.option("--target", required=True, metavar="URL", help="Base URL of a mock or a live endpoint.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to listen on; 0 picks a free one (printed).")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Time scale of the target mock (timing rules use it).")
@click.option("--record", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Record every exchange (redacted) to this file, for serve --replay or other "
                   "tools (JSON lines are appended; HAR is rewritten).")
@click.option("--record-format", type=click.Choice(["jsonl", "har"]), default="jsonl",
              show_default=True, help="JSON lines (exchanges, deviations, image bytes, stream "
                                      "timing) or an HTTP Archive 1.2.")
@contracts_option
def proxy(provider: str, target: str, host: str, port: int, time_scale: float,
          record: Path | None, record_format: str) -> None:
    """A validating, recording reverse proxy in front of a mock or a live endpoint.

    \b
    Streams (SSE, NDJSON) pass through as they arrive and are validated event by event;
    the behaviour rules run over each client's exchanges as they pass (as serve --check);
    secrets (Authorization, keys, signed query strings) are redacted before anything is
    printed or recorded. GET /__proxy/journal returns what it saw, GET /__proxy/deviations
    what it found (verify --target PROXY-URL gates on it). Exit status 2: a usage error.

    \b
    Example:
      imagegen-conformance serve -p cloudsway --port 8701 &
      imagegen-conformance proxy -p cloudsway --target http://127.0.0.1:8701 --port 9701
      imagegen-conformance proxy -p fal --target https://queue.fal.run --record s.jsonl
    """
    from ..proxy._record import recorder_for
    from ._proxy_cmd import run_proxy

    try:
        name = contracts.canonical(provider)
    except contracts.ContractError as exc:
        raise click.BadParameter(str(exc), param_hint="--provider") from None
    if not target.startswith(("http://", "https://")):
        raise click.BadParameter(f"{target!r} is not an http(s) URL", param_hint="--target")
    try:
        recorder = recorder_for(name, target, record, record_format) if record is not None else None
        asyncio.run(run_proxy(name, target, host=host, port=port, time_scale=time_scale,
                              recorder=recorder))
    except KeyboardInterrupt:
        pass
    except PortInUse as exc:
        raise click.UsageError(str(exc.strerror or exc)) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


@main.command(context_settings=CONTEXT)
@click.option("--provider", "-p", default=None, metavar="ID",
              help="Show which rules apply to this provider and the parameters they read.")
@contracts_option
def rules(provider: str | None) -> None:
    """List every check the harness makes: id, severity, side at fault, what it reads."""
    from ..rules._rules import applicable_rules, rule_catalogue

    applies: set[str] | None = None
    if provider:
        try:
            contract = contracts.load(provider)
        except contracts.ContractError as exc:
            raise click.BadParameter(str(exc), param_hint="--provider") from None
        applies = {r.info.id for r in applicable_rules(contract)}
    for info in rule_catalogue().values():
        mark = ""
        if applies is not None and not info.id.startswith(("schema.", "scenario.")):
            mark = "  [applies]" if info.id in applies else "  [n/a]"
        click.echo(f"{info.id:32} {info.severity.label:8} {info.side.value:8}{mark}")
        click.echo(f"    {info.summary}" + (f"  (reads {info.reads})" if info.reads else ""))


@main.command(context_settings=CONTEXT)
@click.option("--provider", "-p", required=True, metavar="ID", help="Provider whose scenarios to list.")
@contracts_option
def scenarios(provider: str) -> None:
    """List a provider's scenarios: how the mock is set up and what a correct client does."""
    try:
        contract = contracts.load(provider)
    except contracts.ContractError as exc:
        raise click.BadParameter(str(exc), param_hint="--provider") from None
    for scenario in contract.scenarios:
        click.echo(f"{scenario.id}: {scenario.summary}")
        setup = [*scenario.faults, *(f"{k}={v}" for k, v in scenario.options.items())]
        if setup:
            click.echo(f"    mock: {', '.join(setup)}")
        click.echo(f"    expect: {json.dumps(dict(scenario.expect.raw), ensure_ascii=False)}")


@main.command(context_settings=CONTEXT)
@click.option("--provider", "-p", "provider", multiple=True, metavar="ID|all",
              help="Provider to probe (repeat or comma-separate); default all (those not configured "
                   "are listed and skipped).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="Real seconds the lifecycle may take before it counts as a "
                                      "task that never finishes.")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Real seconds to reach the base URL.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON file remembering when each drift was first seen (keep it between "
                   "scheduled runs, e.g. in a CI cache).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON report here ('-' for stdout).")
@click.option("--junit", "junit_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a JUnit XML report here.")
@click.option("--prometheus", "prom_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the Prometheus text format here (textfile collector).")
@click.option("--quiet", "-q", is_flag=True, help="No terminal table.")
@contracts_option
def probe(provider: tuple[str, ...], timeout: float, connect_timeout: float, state_path: Path | None,
          json_out: Path | None, junit_out: Path | None, prom_out: Path | None, quiet: bool) -> None:
    """Health-check live providers: the cheapest complete request, validated, every phase timed.

    \b
    Credentials and base URLs come from the environment:
      cloudsway  CLOUDSWAY_API_KEY, CLOUDSWAY_ENDPOINT_PATH, CLOUDSWAY_BASE_URL (optional)
      acedata    ACEDATACLOUD_API_TOKEN, ACEDATA_BASE_URL (optional)
      fal        FAL_KEY, FAL_QUEUE_BASE_URL (optional), FAL_MODEL (optional)
      yunyx      YUNYX_API_KEY, YUNYX_BASE_URL (optional)
      dify       DIFY_API_KEY, DIFY_BASE_URL (required: Dify may be self-hosted)

    \b
    Exit status (several providers: the most severe, in this order):
      3 unreachable     no connection to the base URL
      5 unauthorized    the provider refused the key (401/403)
      6 timeout         the task did not finish within --timeout
      1 drift           the provider deviates from its contract
      7 failed          an error answer or a failed task, without drift
      4 not configured  credentials missing (with --provider all: only if none is configured)
      0 healthy
      2 usage error

    \b
    Examples:
      imagegen-conformance probe -p fal
      imagegen-conformance probe --state probe-state.json --junit probe.xml --prometheus probe.prom
    """
    from rich.console import Console

    from ..live._probe import exit_code, render_json, render_junit, render_prometheus, render_terminal
    from ..live._probe import probe as run_probe

    names = _providers(provider)
    every = not provider or any(part.strip() == "all" for value in provider for part in value.split(","))
    console = Console(stderr=json_out == Path("-"))
    results = asyncio.run(run_probe(names, timeout=timeout, connect_timeout=connect_timeout,
                                    state_path=state_path))
    code = exit_code(results, every=every)
    if not quiet:
        render_terminal(results, console)
    for path, text in ((json_out, render_json(results, code)), (junit_out, render_junit(results)),
                       (prom_out, render_prometheus(results))):
        if path is None:
            continue
        if path == Path("-"):
            click.echo(text)
        else:
            path.write_text(text, encoding="utf-8")
    sys.exit(code)
