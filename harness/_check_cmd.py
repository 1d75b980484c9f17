"""`imagegen-conformance check`: Schemathesis runs a provider's OpenAPI contract against a target."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from importlib import resources

import contracts
from mocks import MockServer, ServeThread

#: The key the mock is told to accept, so that Schemathesis's "invalid auth" checks mean something.
CHECK_KEY = "imagegen-check-key"


def schemathesis_command() -> list[str]:
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        sibling = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        if os.path.exists(sibling):
            exe = sibling
    if exe is None:
        raise RuntimeError("schemathesis is not installed: pip install schemathesis")
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
    """Run Schemathesis (all checks, positive and negative data); its exit code is ours."""
    name = contracts.canonical(provider)
    contract = contracts.load(name)
    auth = contract.behaviour.auth
    with ExitStack() as stack:
        spec = stack.enter_context(
            resources.as_file(resources.files("contracts").joinpath(name, "openapi.yaml"))
        )
        if target is None:
            key = api_key or CHECK_KEY
            thread = stack.enter_context(ServeThread(lambda: [
                MockServer(name, api_keys=[key], time_scale=100.0, seed=seed)
            ]))
            base = thread.url(name)
        else:
            key = api_key or os.environ.get("IMAGEGEN_API_KEY", "")
            base = target.rstrip("/")
        credential = f"{auth.scheme} {key}" if auth.scheme else key
        cmd = [
            *schemathesis_command(), "run", str(spec), "--url", base,
            "--checks", "all", "--mode", "all", "--max-examples", str(max_examples),
            "-H", f"{auth.header}: {credential}",
        ]
        # Where the provider is documented to answer differently from what a generic check
        # expects (AceData answers a missing token with 400 no_token), the contract says so.
        conformance = contract.behaviour.raw.get("conformance") or {}
        excluded = [c["check"] if isinstance(c, dict) else c
                    for c in conformance.get("exclude_checks") or ()]
        if excluded:
            cmd += ["--exclude-checks", ",".join(excluded)]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        cmd += list(extra)
        return subprocess.call(cmd)
