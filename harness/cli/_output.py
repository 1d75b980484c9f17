"""Where a report goes: the terminal (stdout), or a file in the format ``--report`` names."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from rich.console import Console

from ..report import Report, render, render_terminal

__all__ = ["write_report"]

#: Width of a terminal report written to a file: its evidence lines are never wrapped anyway.
FILE_WIDTH = 160


def write_report(report: Report, fmt: str, out: Path | None, err: Console,
                 console: Console | None = None) -> None:
    """Render ``report`` as ``fmt`` to ``out`` (stdout when None); ``--out`` follows ``--report``."""
    if fmt == "terminal" and out is None:
        render_terminal(report, console or Console())
        return
    if fmt == "terminal":
        buffer = io.StringIO()
        render_terminal(report, Console(file=buffer, width=FILE_WIDTH, no_color=True,
                                        force_terminal=False, highlight=False))
        text = buffer.getvalue()
    else:
        text = render(report, fmt) or ""
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    err.print(f"{fmt} report written to {out}", highlight=False, soft_wrap=True)
