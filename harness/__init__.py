"""The conformance harness: validation, rules, proxy, runners, reports, CLI.

>>> import contracts, harness
>>> client = harness.load_client("harness.clients.cloudsway:run")
>>> # report = asyncio.run(harness.run(harness.RunOptions("cloudsway", client)))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._clients import (
        CallableClient,
        Client,
        ClientResult,
        CommandClient,
        ImageResult,
        load_client,
    )
    from ._deviation import Deviation, Severity, Side
    from ._exchanges import (
        RecordingTransport,
        StreamEvent,
        curl_line,
        exchange_from_dict,
        request_json,
        response_json,
        stream_events,
    )
    from ._profile import OperationProfile, Profile, Selector, json_path, operation_for, profile
    from ._proxy import ValidatingProxy
    from ._render import FORMATS, render, render_html, render_json, render_junit, render_terminal
    from ._report import Report, ScenarioResult
    from ._rules import RULES, ClientOutcome, RuleContext, RuleInfo, check_rules, rule_catalogue
    from ._runner import RunOptions, build_env, canary_key, evaluate, run, run_scenario
    from ._validate import validate_all, validate_exchange

# Imported on first use, so `python -m harness.clients.<id>` starts in a blink.
_LAZY = {
    "CallableClient": "._clients",
    "Client": "._clients",
    "ClientOutcome": "._rules",
    "ClientResult": "._clients",
    "CommandClient": "._clients",
    "Deviation": "._deviation",
    "FORMATS": "._render",
    "ImageResult": "._clients",
    "OperationProfile": "._profile",
    "Profile": "._profile",
    "RULES": "._rules",
    "RecordingTransport": "._exchanges",
    "Report": "._report",
    "RuleContext": "._rules",
    "RuleInfo": "._rules",
    "RunOptions": "._runner",
    "ScenarioResult": "._report",
    "Selector": "._profile",
    "Severity": "._deviation",
    "Side": "._deviation",
    "StreamEvent": "._exchanges",
    "ValidatingProxy": "._proxy",
    "build_env": "._runner",
    "canary_key": "._runner",
    "check_rules": "._rules",
    "curl_line": "._exchanges",
    "evaluate": "._runner",
    "exchange_from_dict": "._exchanges",
    "json_path": "._profile",
    "load_client": "._clients",
    "operation_for": "._profile",
    "profile": "._profile",
    "render": "._render",
    "render_html": "._render",
    "render_json": "._render",
    "render_junit": "._render",
    "render_terminal": "._render",
    "request_json": "._exchanges",
    "response_json": "._exchanges",
    "rule_catalogue": "._rules",
    "run": "._runner",
    "run_scenario": "._runner",
    "stream_events": "._exchanges",
    "validate_all": "._validate",
    "validate_exchange": "._validate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMATS",
    "RULES",
    "CallableClient",
    "Client",
    "ClientOutcome",
    "ClientResult",
    "CommandClient",
    "Deviation",
    "ImageResult",
    "OperationProfile",
    "Profile",
    "RecordingTransport",
    "Report",
    "RuleContext",
    "RuleInfo",
    "RunOptions",
    "ScenarioResult",
    "Selector",
    "Severity",
    "Side",
    "StreamEvent",
    "ValidatingProxy",
    "build_env",
    "canary_key",
    "check_rules",
    "curl_line",
    "evaluate",
    "exchange_from_dict",
    "json_path",
    "load_client",
    "operation_for",
    "profile",
    "render",
    "render_html",
    "render_json",
    "render_junit",
    "render_terminal",
    "request_json",
    "response_json",
    "rule_catalogue",
    "run",
    "run_scenario",
    "stream_events",
    "validate_all",
    "validate_exchange",
]
