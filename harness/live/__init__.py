"""Live health checks of the real providers, with drift against the contract."""

from __future__ import annotations

from ._probe import Drift, ProbeResult, exit_code, probe, probe_scenario

__all__ = [
    "Drift",
    "ProbeResult",
    "exit_code",
    "probe",
    "probe_scenario",
]
