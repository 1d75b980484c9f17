"""The machinery every provider simulator shares: one behaviour, two transports.

A provider is a :class:`Provider` subclass whose routes answer :class:`MockRequest` with
:class:`MockResponse`; :class:`MockServer` adds the clock, tasks, faults, journal and admin
API; :func:`make_app` serves it with aiohttp and :func:`mock_router` with respx.
"""

from __future__ import annotations

from ._aiohttp import make_app
from ._body import Body, FormPart
from ._clock import Clock, ManualClock, ScaledClock, make_clock
from ._connections import ConnectionLimits, ProtocolLog, server_options
from ._deliver import Deliverer, Delivery, DeliveryPolicy, is_loopback, refusal
from ._drift import DRIFTS, DriftSpec, apply_drift
from ._faults import FAULTS, STAGES, FaultError, FaultNotApplicable, FaultPlan, FaultSpec, parse_faults
from ._http import MAX_DEPTH, BodyError, MockRequest, MockResponse, dumps, loads
from ._images import FORMATS, ImageSpec, ImageTokenError, ImageTokens, render
from ._journal import Exchange, Journal, key_fingerprint
from ._links import LinkSigner
from ._pings import Pings
from ._provider import Provider, Route, provider_class, route
from ._ratelimit import RateLimiter
from ._redact import redact_exchange, redact_headers, redact_query, redact_text, redact_url
from ._replay import RecordedAnswer, Replay, ReplayError
from ._respx import mock_router
from ._serve import Listener, PortInUse, Served, TLSMaterial, bind, start
from ._server import ADMIN_PREFIX, FAULT_HEADER, SCENARIO_HEADER, AdminHandler, Call, MockServer, Observer
from ._shared import Shared, StoreUnavailable, check_store, share
from ._shelf import Counter, Shelf
from ._signing import Ed25519Signer
from ._store_redis import RedisTaskStore
from ._streams import ndjson_line, sse_comment, sse_event
from ._tasks import MemoryTaskStore, StoreFull, Task, TaskStore, compact, new_task, uuid4_text
from ._thread import ServeThread

__all__ = [
    "ADMIN_PREFIX",
    "DRIFTS",
    "FAULTS",
    "FAULT_HEADER",
    "FORMATS",
    "MAX_DEPTH",
    "SCENARIO_HEADER",
    "STAGES",
    "AdminHandler",
    "Body",
    "BodyError",
    "Call",
    "Clock",
    "ConnectionLimits",
    "Counter",
    "Deliverer",
    "Delivery",
    "DeliveryPolicy",
    "DriftSpec",
    "Ed25519Signer",
    "Exchange",
    "FaultError",
    "FaultNotApplicable",
    "FaultPlan",
    "FaultSpec",
    "FormPart",
    "ImageSpec",
    "ImageTokenError",
    "ImageTokens",
    "Journal",
    "LinkSigner",
    "Listener",
    "ManualClock",
    "MemoryTaskStore",
    "MockRequest",
    "MockResponse",
    "MockServer",
    "Observer",
    "Pings",
    "PortInUse",
    "ProtocolLog",
    "Provider",
    "RateLimiter",
    "RecordedAnswer",
    "RedisTaskStore",
    "Replay",
    "ReplayError",
    "Route",
    "ScaledClock",
    "ServeThread",
    "Served",
    "Shared",
    "Shelf",
    "StoreFull",
    "StoreUnavailable",
    "TLSMaterial",
    "Task",
    "TaskStore",
    "apply_drift",
    "bind",
    "check_store",
    "compact",
    "dumps",
    "is_loopback",
    "key_fingerprint",
    "loads",
    "make_app",
    "make_clock",
    "mock_router",
    "ndjson_line",
    "new_task",
    "parse_faults",
    "provider_class",
    "redact_exchange",
    "redact_headers",
    "redact_query",
    "redact_text",
    "redact_url",
    "refusal",
    "render",
    "route",
    "server_options",
    "share",
    "sse_comment",
    "sse_event",
    "start",
    "uuid4_text",
]
