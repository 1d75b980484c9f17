"""What a client under test reported, as the harness measured it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from imagegen_conformance.mocks.engine import redact_text

__all__ = ["ClientResult", "Frame", "ImageResult", "NotJudged"]


@dataclass
class ImageResult:
    """One image the client delivered, as the harness measured it."""

    url: str | None
    path: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None
    thumbnail: str | None = None  # a data: URI (PNG, at most 160 px), for the HTML report

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "thumbnail"}
        url = self.url
        if url and url.startswith("data:") and len(url) > 64:
            url = url[:48] + f"...<{len(url)} chars>"
        out["url"] = redact_text(url)
        return out


@dataclass
class ClientResult:
    """How the client's run ended."""

    ok: bool
    exit_code: int | None = None
    timed_out: bool = False
    output: Any = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    images: list[ImageResult] = field(default_factory=list)
    #: why the client's clock could not be trusted, found while it ran (None: nothing found)
    clock_problem: str | None = None

    @property
    def raw_images(self) -> list[Any]:
        if isinstance(self.output, dict) and isinstance(self.output.get("images"), list):
            return list(self.output["images"])
        return []

    def to_dict(self) -> dict[str, Any]:
        """Everything about the run, signed links in it redacted (the key already is)."""
        output = self.output
        if output is not None:
            output = json.loads(redact_text(json.dumps(output, default=str)) or "null")
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "error": redact_text(self.error),
            "output": output,
            "stdout": redact_text(self.stdout),
            "stderr": redact_text(self.stderr),
            "seconds": round(self.ended_at - self.started_at, 3),
            "images": [i.to_dict() for i in self.images],
            "clock_problem": self.clock_problem,
        }


@dataclass(frozen=True)
class Frame:
    """The time frame a client ran in.

    ``kind``: ``faketime`` (its clocks, sleeps and timeouts ran in provider time, through
    libfaketime), ``told`` (it ran in real time and was told the scale in
    ``IMAGEGEN_TIME_SCALE``: in-process callables), ``real`` (scale 1: nothing to virtualize)
    or ``none`` (the frame could not be applied). ``virtualized`` is False when timing checks
    cannot be trusted; ``reason`` says why.
    """

    kind: str
    scale: float
    virtualized: bool = True
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "virtualized": self.virtualized,
                "reason": self.reason}


@dataclass(frozen=True)
class NotJudged:
    """A check the harness could not judge fairly in this run, and why (never a deviation).

    ``withheld`` counts the deviations it would have reported: they are not evidence, since
    the client's clock was not the provider's.
    """

    rule: str
    reason: str
    withheld: int = 0
    scenario: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "reason": self.reason, "withheld": self.withheld,
                "scenario": self.scenario}

    def __str__(self) -> str:
        return f"{self.rule}: not judged: {self.reason}"
