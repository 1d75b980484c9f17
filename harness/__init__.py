"""The conformance harness: validation, rules, proxy, runners, reports, CLI.

Subpackages by role: ``rules`` (exchanges, deviations, schema checks, behaviour rules),
``report`` (the report and its renderers), ``proxy`` (validating proxy, recorder), ``run``
(clients and the runner), ``live`` (probes), ``cli``.

>>> from imagegen_conformance import harness
>>> client = harness.load_client("imagegen_conformance.clients.cloudsway:run")
>>> # report = asyncio.run(harness.run(harness.RunOptions("cloudsway", client)))
"""

from __future__ import annotations

from .proxy import ValidatingProxy
from .report import (
    FORMATS,
    Report,
    ScenarioResult,
    render,
    render_html,
    render_json,
    render_junit,
    render_terminal,
)
from .rules import (
    RULES,
    ClientOutcome,
    ClientResult,
    Deviation,
    ImageResult,
    OperationProfile,
    Profile,
    RecordingTransport,
    RuleContext,
    RuleInfo,
    Selector,
    Severity,
    Side,
    StreamEvent,
    check_rules,
    curl_line,
    exchange_from_dict,
    json_path,
    operation_for,
    profile,
    request_json,
    response_json,
    rule_catalogue,
    stream_events,
    validate_all,
    validate_exchange,
)
from .run import (
    CallableClient,
    Client,
    CommandClient,
    RunOptions,
    build_env,
    canary_key,
    evaluate,
    load_client,
    run,
    run_scenario,
)

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
