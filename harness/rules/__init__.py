"""What a verdict is made of: exchanges, deviations, the contract's profile, schema checks, rules."""

from __future__ import annotations

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
from ._live import ClientSession, LiveDeviation, LiveRules
from ._profile import OperationProfile, Profile, Selector, json_path, operation_for, profile
from ._results import ClientResult, Frame, ImageResult, NotJudged
from ._rules import RULES, ClientOutcome, RuleContext, RuleInfo, check_rules, rule_catalogue
from ._targets import LiveTarget, live_target
from ._validate import validate_all, validate_exchange

__all__ = [
    "RULES",
    "ClientOutcome",
    "ClientResult",
    "ClientSession",
    "Deviation",
    "Frame",
    "ImageResult",
    "LiveDeviation",
    "LiveRules",
    "LiveTarget",
    "NotJudged",
    "OperationProfile",
    "Profile",
    "RecordingTransport",
    "RuleContext",
    "RuleInfo",
    "Selector",
    "Severity",
    "Side",
    "StreamEvent",
    "check_rules",
    "curl_line",
    "exchange_from_dict",
    "json_path",
    "live_target",
    "operation_for",
    "profile",
    "request_json",
    "response_json",
    "rule_catalogue",
    "stream_events",
    "validate_all",
    "validate_exchange",
]
