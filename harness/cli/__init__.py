"""The ``imagegen-conformance`` command line (``python -m imagegen_conformance``)."""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
