"""The ``imagegen-conformance`` command line."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import click

import contracts

from ._serve_cmd import ServeConfig, run_serve

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
                chosen.append(contracts.canonical(part))
            except contracts.ContractError as exc:
                raise click.BadParameter(str(exc), param_hint="--provider") from None
            if chosen[-1] not in contracts.available():
                raise click.BadParameter(
                    f"{chosen[-1]} has no contract in this installation; available: "
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


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="imagegen-conformance")
def main() -> None:
    """Mock image-generation providers, a conformance harness, and live health checks.

    \b
    Start mocks:       imagegen-conformance serve --provider cloudsway
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
@click.option("--seed", type=int, default=None, help="Make ids, timings, images and faults reproducible.")
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per listener.")
def serve(**kwargs: Any) -> None:
    """Start provider mocks and print `<provider> <base-url>` once each accepts connections.

    \b
    Examples:
      imagegen-conformance serve --provider cloudsway --port 8701
      imagegen-conformance serve --provider all --time-scale 50
      imagegen-conformance serve -p cloudsway --fault "http:503;op=getImageTask;times=2"
      imagegen-conformance serve -p fal --tls --tls-dir ./tls

    Stop with Ctrl-C or SIGTERM.
    """
    providers = _providers(kwargs.pop("provider"))
    if kwargs["port"] not in (None, 0) and len(providers) > 1:
        raise click.BadParameter("--port N needs exactly one --provider (0 is fine for many)",
                                 param_hint="--port")
    if kwargs["public_url"] and len(providers) > 1:
        raise click.BadParameter("--public-url needs exactly one --provider", param_hint="--public-url")
    if not _is_loopback(kwargs["host"]):
        click.echo(
            f"warning: binding {kwargs['host']} exposes the mocks (and their admin API) beyond "
            "this machine; use --admin-token", err=True,
        )
    config = ServeConfig(providers=providers, options=_options(kwargs.pop("options")), **kwargs)
    try:
        asyncio.run(run_serve(config, _emit(config.as_json)))
    except KeyboardInterrupt:
        pass
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _emit(as_json: bool) -> Any:
    def emit(kind: str, **fields: Any) -> None:
        if as_json:
            click.echo(json.dumps({"kind": kind, **fields}))
        elif kind == "listener":
            name = fields["provider"] if fields["primary"] else f"{fields['provider']}:{fields['role']}"
            click.echo(f"{name} {fields['url']}")
        elif kind == "ca_bundle":
            click.echo(f"ca-bundle {fields['path']}")
        sys.stdout.flush()

    return emit


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command(context_settings=CONTEXT)
@click.option("--options", "show_options", is_flag=True, help="Also list each provider's options.")
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
    from mocks import FAULTS

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
def check(provider: str, target: str | None, max_examples: int, api_key: str | None,
          seed: int | None, schemathesis_args: tuple[str, ...]) -> None:
    """Run Schemathesis over a provider's OpenAPI contract: every check, valid and invalid data.

    \b
    Examples:
      imagegen-conformance check --provider cloudsway --max-examples 100
      imagegen-conformance check -p cloudsway --target https://genaiapi.cloudsway.net --api-key $KEY
      imagegen-conformance check -p cloudsway -- --report junit   (extra args go to schemathesis)
    """
    from ._check_cmd import run_check

    try:
        name = contracts.canonical(provider)
    except contracts.ContractError as exc:
        raise click.BadParameter(str(exc), param_hint="--provider") from None
    try:
        code = run_check(name, target=target, max_examples=max_examples, api_key=api_key, seed=seed,
                         extra=schemathesis_args)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
