"""The validating reverse proxy and its recorder."""

from __future__ import annotations

from ._proxy import ValidatingProxy
from ._record import Recorder, recorder_for

__all__ = [
    "Recorder",
    "ValidatingProxy",
    "recorder_for",
]
