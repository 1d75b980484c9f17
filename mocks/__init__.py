"""Provider simulators. ``MockServer("cloudsway")`` is one; ``make_app``/``mock_router`` serve it.

>>> from mocks import MockServer
>>> server = MockServer("cloudsway", clock="manual", seed=7)
"""

from __future__ import annotations

from .engine import (
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
    provider_class,
    start,
)

__all__ = [
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
