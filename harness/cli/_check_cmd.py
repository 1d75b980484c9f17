"""`imagegen-conformance check`: Schemathesis runs a provider's OpenAPI contract against a target."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from importlib import resources

from imagegen_conformance import CHECK_EXTRA, contracts
from imagegen_conformance.mocks import MockServer, ServeThread

#: The key the mock is told to accept, so that Schemathesis's "invalid auth" checks mean something.
CHECK_KEY = "imagegen-check-key"


MISSING = f"`check` runs Schemathesis, which the core install leaves out; install it with: {CHECK_EXTRA}"


class MissingExtra(RuntimeError):
    """Schemathesis is not installed (the CLI exits 2 and says how to get it)."""


def schemathesis_command() -> list[str]:
    try:  # importable here, not merely some `schemathesis` on PATH from another environment
        import schemathesis  # noqa: F401
    except ImportError:
        raise MissingExtra(MISSING) from None
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        sibling = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        if os.path.exists(sibling):
            exe = sibling
    if exe is None:
        raise MissingExtra(MISSING)
    return [exe]


def run_check(
    provider: str,
    *,
    target: str | None,
    max_examples: int,
    api_key: str | None,
    seed: int | None,
    extra: tuple[str, ...] = (),
) -> int:
    """Run Schemathesis (all checks, positive and negative data); non-zero if any run failed.

    Operations that the contract puts on another host (fal's ``runSync`` on fal.run) are
    checked in a run of their own against that host, since ``--url`` sets one base for all.
    """
    command = schemathesis_command()  # before any mock starts: a missing extra is said at once
    name = contracts.canonical(provider)
    contract = contracts.load(name)
    auth = contract.behaviour.auth
    conformance = contract.behaviour.raw.get("conformance") or {}
    with ExitStack() as stack:
        spec = stack.enter_context(
            resources.as_file(
                resources.files("imagegen_conformance.contracts").joinpath(name, "openapi.yaml")
            )
        )
        if target is None:
            key = api_key or CHECK_KEY
            thread = stack.enter_context(ServeThread(lambda: [
                MockServer(name, api_keys=[key], time_scale=100.0, seed=seed)
            ]))
            bases = {role: thread.url(name, role) for role in thread.server(name).roles}
        else:
            key = api_key or os.environ.get("IMAGEGEN_API_KEY", "")
            bases = {next(iter(contract.behaviour.hosts), "api"): target.rstrip("/")}
        credential = f"{auth.scheme} {key}" if auth.scheme else key
        common = [
            "--checks", "all", "--mode", "all", "--max-examples", str(max_examples),
            "-H", f"{auth.header}: {credential}",
        ]
        # Where the provider is documented to answer differently from what a generic check
        # expects (AceData answers a missing token with 400 no_token), the contract says so.
        excluded = [c["check"] if isinstance(c, dict) else c
                    for c in conformance.get("exclude_checks") or ()]
        if excluded:
            common += ["--exclude-checks", ",".join(excluded)]
        if seed is not None:
            common += ["--seed", str(seed)]
        config: list[str] = []
        if conformance.get("expected_statuses"):
            path = stack.enter_context(tempfile.TemporaryDirectory()) + "/schemathesis.toml"
            with open(path, "w", encoding="utf-8") as f:
                f.write(_expected_statuses_toml(conformance["expected_statuses"]))
            config = ["--config-file", path]
        primary, *_ = bases
        elsewhere = {op: role for op, role in _operation_roles(contract).items()
                     if role != primary and role in bases}
        code = 0
        for role, base in bases.items():
            ops = [op for op, r in elsewhere.items() if r == role]
            if role != primary and not ops:
                continue
            select = ([f"--include-operation-id={op}" for op in ops] if role != primary
                      else [f"--exclude-operation-id={op}" for op in elsewhere])
            cmd = [*command, *config, "run", str(spec), "--url", base,
                   *common, *select, *extra]
            code = subprocess.call(cmd) or code
        return code


def _operation_roles(contract: contracts.Contract) -> dict[str, str]:
    """operationId -> the role of the host its path-level ``servers`` names (if it names one)."""
    roles = {url.rstrip("/"): role for role, url in contract.behaviour.hosts.items()}
    out: dict[str, str] = {}
    for item in (contract.openapi.get("paths") or {}).values():
        servers = item.get("servers") or []
        role = roles.get(str(servers[0].get("url", "")).rstrip("/")) if servers else None
        if role is None:
            continue
        for op in item.values():
            if isinstance(op, dict) and "operationId" in op:
                out[op["operationId"]] = role
    return out


def _expected_statuses_toml(entries: list[dict[str, object]]) -> str:
    """A Schemathesis config: the statuses one check accepts for one operation (by the contract)."""
    lines: list[str] = []
    for entry in entries:
        statuses = ", ".join(json.dumps(str(s)) for s in entry["statuses"])  # type: ignore[attr-defined]
        lines += [
            "[[operations]]",
            f"include-operation-id = {json.dumps(str(entry['operation']))}",
            f"[operations.checks.{entry['check']}]",
            f"expected-statuses = [{statuses}]",
            "",
        ]
    return "\n".join(lines)
