"""Running a client: a command or a callable, over a provider's scenarios, against a target."""

from __future__ import annotations

from ._clients import CallableClient, Client, CommandClient, load_client
from ._evaluate import build_env, canary_key, evaluate
from ._runner import RunOptions, run, run_scenario

__all__ = [
    "CallableClient",
    "Client",
    "CommandClient",
    "RunOptions",
    "build_env",
    "canary_key",
    "evaluate",
    "load_client",
    "run",
    "run_scenario",
]
