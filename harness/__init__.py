"""The conformance harness: validation, rules, proxy, runners, reports, CLI.

>>> import contracts, harness
>>> client = harness.load_client("harness.clients.cloudsway:run")
>>> # report = asyncio.run(harness.run(harness.RunOptions("cloudsway", client)))
"""

from __future__ import annotations

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
