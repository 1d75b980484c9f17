"""Provider simulators. ``MockServer("cloudsway")`` is one; ``make_app``/``mock_router`` serve it.

>>> from mocks import MockServer
>>> server = MockServer("cloudsway", clock="manual", seed=7)
"""

from __future__ import annotations

from ._registry import provider_class
from .engine import (
    DEFAULT_PORTS,
    FAULTS,
    FaultSpec,
    ManualClock,
    MockRequest,
    MockResponse,
    MockServer,
    ScaledClock,
    Served,
    ServeThread,
    TLSMaterial,
    make_app,
    mock_router,
    start,
)

__all__ = [
    "DEFAULT_PORTS",
    "FAULTS",
    "FaultSpec",
    "ManualClock",
    "MockRequest",
    "MockResponse",
    "MockServer",
    "ScaledClock",
    "ServeThread",
    "Served",
    "TLSMaterial",
    "make_app",
    "mock_router",
    "provider_class",
    "start",
]
