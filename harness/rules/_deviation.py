"""Deviations: what the harness reports, as values with their evidence."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Deviation", "Severity", "Side"]


class Severity(enum.IntEnum):
    """How bad a deviation is; ``--fail-on`` picks the threshold."""

    INFO = 10
    WARNING = 20
    ERROR = 30
    CRITICAL = 40

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        """``Severity.parse("warning")``; the error lists the valid names."""
        if isinstance(value, Severity):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            valid = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {value!r}; valid: {valid}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class Side(enum.StrEnum):
    """Who is at fault: the client under test, or the provider (or its mock)."""

    CLIENT = "client"
    PROVIDER = "provider"


@dataclass(frozen=True)
class Deviation:
    """One place where a client or a provider broke the contract.

    ``exchanges`` are journal sequence numbers (:attr:`mocks.engine.Exchange.seq`);
    ``path`` is where in the exchange (``request.body$.batchsize``, ``response.headers.Retry-After``);
    ``reproduce`` is a ``curl`` line or a CLI command; ``rerun`` the ``imagegen-conformance run``
    command that repeats the scenario (both still work once the run has ended).
    """

    rule: str
    severity: Severity
    side: Side
    message: str
    exchanges: tuple[int, ...] = ()
    path: str | None = None
    expected: Any = None
    actual: Any = None
    reproduce: str | None = None
    scenario: str | None = None
    rerun: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.label,
            "side": self.side.value,
            "message": self.message,
            "exchanges": list(self.exchanges),
            "path": self.path,
            "expected": _jsonable(self.expected),
            "actual": _jsonable(self.actual),
            "reproduce": self.reproduce,
            "rerun": self.rerun,
            "scenario": self.scenario,
            **({"extra": _jsonable(self.extra)} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deviation:
        """The inverse of :meth:`to_dict` (what ``GET /__mock/deviations`` returns)."""
        return cls(
            rule=str(data["rule"]), severity=Severity.parse(str(data["severity"])),
            side=Side(str(data["side"])), message=str(data.get("message") or ""),
            exchanges=tuple(int(s) for s in data.get("exchanges") or ()), path=data.get("path"),
            expected=data.get("expected"), actual=data.get("actual"),
            reproduce=data.get("reproduce"), scenario=data.get("scenario"),
            rerun=data.get("rerun"), extra=dict(data.get("extra") or {}),
        )

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        ex = f" (exchange {', '.join(f'#{s}' for s in self.exchanges)})" if self.exchanges else ""
        return f"[{self.severity.label}] {self.rule} ({self.side.value}){where}: {self.message}{ex}"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return repr(value)
