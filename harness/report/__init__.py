"""A run's report and its renderers: terminal, JSON, JUnit XML, HTML."""

from __future__ import annotations

from ._render import FORMATS, render, render_html, render_json, render_junit, render_terminal
from ._report import Report, ScenarioResult

__all__ = [
    "FORMATS",
    "Report",
    "ScenarioResult",
    "render",
    "render_html",
    "render_json",
    "render_junit",
    "render_terminal",
]
