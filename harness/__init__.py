"""The conformance harness: validation, rules, proxy, runners, reports, CLI."""

from __future__ import annotations

__all__: list[str] = []
