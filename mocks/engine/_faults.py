from __future__ import annotations

import difflib
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from imagegen_conformance.contracts import FAULT_CATALOGUE

__all__ = [
    "FAULTS",
    "STAGES",
    "FaultError",
    "FaultNotApplicable",
    "FaultPlan",
    "FaultSpec",
    "check_applicable",
    "parse_faults",
]

#: Every fault the engine knows, and what it does (contracts/faults.yaml). The same names work
#: for all providers.
FAULTS: dict[str, str] = {name: spec["doc"] for name, spec in FAULT_CATALOGUE.items()}
#: fault name -> the stage where the engine applies it: request, response, stream, task, link, delivery.
STAGES: dict[str, str] = {name: spec["stage"] for name, spec in FAULT_CATALOGUE.items()}
#: Faults the engine applies itself, before or after the provider's handler.
ENGINE_FAULTS = frozenset(name for name, stage in STAGES.items() if stage in ("request", "response"))


class FaultError(ValueError):
    """A fault specification that cannot be understood; the message says how to write one."""


class FaultNotApplicable(FaultError):
    """A fault the provider's contract lists under ``faults.not_applicable``, with its reason."""


def check_applicable(
    specs: Iterable[FaultSpec], provider: str, not_applicable: Mapping[str, str], where: str
) -> None:
    """Refuse a fault that means nothing for ``provider`` (its behaviour.yaml says why).

    ``where`` names how it was set (``--fault``, ``POST /__mock/faults``, ``X-Mock-Fault``,
    scenario ``id``) so the message points at what to change.
    """
    for spec in specs:
        reason = not_applicable.get(spec.name)
        if reason is not None:
            usable = ", ".join(n for n in FAULTS if n not in not_applicable)
            raise FaultNotApplicable(
                f"fault {spec.name!r} ({where}) does not apply to {provider}: {reason}. "
                f"Faults that do: {usable}"
            )


@dataclass(frozen=True)
class FaultSpec:
    """``NAME[:ARG][;op=OPERATION][;times=N][;p=PROBABILITY]``, e.g. ``http:503;op=getImageTask;times=2``."""

    name: str
    arg: str | None = None
    operation: str | None = None
    times: int | None = None
    probability: float = 1.0

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        head, *opts = [part.strip() for part in text.strip().split(";")]
        name, _, arg = head.partition(":")
        name = name.strip()
        if name not in FAULTS:
            close = difflib.get_close_matches(name, FAULTS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise FaultError(f"unknown fault {name!r}.{hint} Valid faults: {', '.join(FAULTS)}")
        fields: dict[str, Any] = {"name": name, "arg": arg.strip() or None}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep:
                raise FaultError(f"fault option {opt!r} must be key=value (op=, times=, p=)")
            try:
                if key == "op":
                    fields["operation"] = value
                elif key == "times":
                    fields["times"] = int(value)
                elif key == "p":
                    fields["probability"] = float(value)
                else:
                    raise FaultError(f"unknown fault option {key!r}; valid: op, times, p")
            except ValueError as exc:
                if isinstance(exc, FaultError):
                    raise
                raise FaultError(f"fault option {opt!r}: {exc}") from exc
        spec = cls(**fields)
        spec.validate()
        return spec

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultSpec:
        if "spec" in data:
            return cls.parse(str(data["spec"]))
        unknown = set(data) - {"name", "arg", "operation", "times", "probability"}
        if unknown:
            raise FaultError(f"unknown fault fields {sorted(unknown)}")
        if data.get("name") not in FAULTS:
            return cls.parse(str(data.get("name")))
        arg = data.get("arg")
        spec = cls(
            name=str(data["name"]),
            arg=None if arg is None else str(arg),
            operation=data.get("operation"),
            times=None if data.get("times") is None else int(data["times"]),
            probability=float(data.get("probability", 1.0)),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise FaultError(f"fault probability must be within 0..1, got {self.probability}")
        if self.times is not None and self.times < 1:
            raise FaultError(f"fault times must be at least 1, got {self.times}")
        if self.name in ("http",) and self.arg:
            status = self.arg.split(":", 1)[0]
            if not status.isdigit() or not 400 <= int(status) <= 599:
                raise FaultError(f"http fault needs a 4xx/5xx status, got {self.arg!r}")
        if self.name in ("rate_limit", "truncate", "late_webhook") and self.arg:
            try:
                float(self.arg)
            except ValueError:
                raise FaultError(f"{self.name} needs a number, got {self.arg!r}") from None
        if self.name == "latency":
            self.latency_seconds(random.Random(0))

    def latency_seconds(self, rng: random.Random) -> float:
        text = (self.arg or "100").removesuffix("ms")
        try:
            if "-" in text:
                low, high = (float(v) for v in text.split("-", 1))
                return rng.uniform(low, high) / 1000
            return float(text) / 1000
        except ValueError:
            raise FaultError(f"latency needs milliseconds (e.g. 50 or 20-80), got {self.arg!r}") from None

    def http_status(self) -> tuple[int, str | None]:
        status, _, code = (self.arg or "500").partition(":")
        return int(status), code or None

    def number(self, default: float) -> float:
        return default if self.arg is None else float(self.arg)

    def __str__(self) -> str:
        out = self.name + (f":{self.arg}" if self.arg else "")
        if self.operation:
            out += f";op={self.operation}"
        if self.times is not None:
            out += f";times={self.times}"
        if self.probability != 1.0:
            out += f";p={self.probability}"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spec": str(self)}


def parse_faults(text: str | None) -> list[FaultSpec]:
    """Parse a comma-separated list, as in the ``X-Mock-Fault`` header."""
    if not text:
        return []
    return [FaultSpec.parse(part) for part in text.split(",") if part.strip()]


class _Entry:
    __slots__ = ("remaining", "spec")

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.remaining = spec.times


class FaultPlan:
    """The faults active for a whole run (CLI flag, admin API), each with its remaining count."""

    def __init__(self, specs: list[FaultSpec] | None = None) -> None:
        self._lock = threading.Lock()
        self._entries = [_Entry(s) for s in specs or []]

    def add(self, spec: FaultSpec) -> None:
        with self._lock:
            self._entries.append(_Entry(spec))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def specs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**e.spec.to_dict(), "remaining": e.remaining} for e in self._entries]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def select(self, operation: str | None, rng: random.Random) -> list[FaultSpec]:
        """The faults that fire for one request; each firing uses up one of its ``times``."""
        if not self._entries:
            return []
        fired: list[FaultSpec] = []
        with self._lock:
            for entry in self._entries:
                spec = entry.spec
                if spec.operation is not None and spec.operation != operation:
                    continue
                if entry.remaining == 0:
                    continue
                if spec.probability < 1.0 and rng.random() >= spec.probability:
                    continue
                if entry.remaining is not None:
                    entry.remaining -= 1
                fired.append(spec)
            self._entries = [e for e in self._entries if e.remaining != 0]
        return fired


def select_header(specs: list[FaultSpec], operation: str | None, rng: random.Random) -> list[FaultSpec]:
    """Faults named in a request's own header: they apply to that request alone."""
    return [
        s
        for s in specs
        if (s.operation is None or s.operation == operation)
        and (s.probability >= 1.0 or rng.random() < s.probability)
    ]
