"""The result of a run: per scenario, its exchanges, the client's result and the deviations."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from imagegen_conformance.mocks.engine import Exchange, redact_exchange

from ..rules import ClientResult, Frame, NotJudged
from ..rules._deviation import Deviation, Severity
from ..rules._rules import RuleInfo, rule_catalogue

__all__ = ["Report", "ScenarioResult"]


@dataclass
class ScenarioResult:
    """One scenario run against one client."""

    provider: str
    scenario: str
    summary: str
    client: str
    target: str
    expect: dict[str, Any]
    deviations: list[Deviation] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    probes: list[Exchange] = field(default_factory=list)
    result: ClientResult | None = None
    rules: list[str] = field(default_factory=list)  # the checks that applied
    time_scale: float = 1.0
    seconds: float = 0.0  # wall-clock
    skipped: str | None = None  # why the scenario did not run
    base_url: str | None = None
    frame: Frame | None = None  # the time frame the client ran in
    not_judged: list[NotJudged] = field(default_factory=list)  # checks set aside, with the reason

    def worst(self) -> Severity | None:
        return max((d.severity for d in self.deviations), default=None)

    def passed(self, fail_on: Severity) -> bool:
        return self.skipped is not None or all(d.severity < fail_on for d in self.deviations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "scenario": self.scenario,
            "summary": self.summary,
            "client": self.client,
            "target": self.target,
            "expect": self.expect,
            "skipped": self.skipped,
            "time_scale": self.time_scale,
            "frame": self.frame.to_dict() if self.frame else None,
            "seconds": round(self.seconds, 3),
            "rules": self.rules,
            "not_judged": [n.to_dict() for n in self.not_judged],
            "result": self.result.to_dict() if self.result else None,
            "deviations": [d.to_dict() for d in self.deviations],
            "exchanges": [redact_exchange(e).to_dict() for e in self.exchanges],
            "probes": [redact_exchange(e).to_dict() for e in self.probes],
        }


@dataclass
class Report:
    """Everything one ``run`` found; the reporters render it."""

    provider: str
    client: str
    target: str
    fail_on: Severity = Severity.ERROR
    results: list[ScenarioResult] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    target_error: str | None = None  # --target did not answer: the target's failure

    #: Exit status when the target cannot be reached (as ``probe`` uses for "unreachable").
    UNREACHABLE = 3

    @property
    def deviations(self) -> list[Deviation]:
        return [d for r in self.results for d in r.deviations]

    def failing(self) -> list[Deviation]:
        return [d for d in self.deviations if d.severity >= self.fail_on]

    @property
    def ok(self) -> bool:
        return not self.failing() and self.target_error is None

    @property
    def not_judged(self) -> list[NotJudged]:
        return [n for r in self.results for n in r.not_judged]

    @property
    def exit_code(self) -> int:
        """0 clean, 1 deviations at or above ``fail_on``, 3 the target is unreachable."""
        if self.target_error is not None:
            return self.UNREACHABLE
        return 0 if self.ok else 1

    def catalogue(self) -> dict[str, RuleInfo]:
        return rule_catalogue()

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for d in self.deviations:
            counts[d.severity.label] = counts.get(d.severity.label, 0) + 1
        return {
            "tool": "imagegen-conformance",
            "provider": self.provider,
            "client": self.client,
            "target": self.target,
            "fail_on": self.fail_on.label,
            "ok": self.ok,
            "target_error": self.target_error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "summary": {
                "scenarios": len(self.results),
                "passed": sum(1 for r in self.results if r.passed(self.fail_on) and not r.skipped),
                "failed": sum(1 for r in self.results if not r.passed(self.fail_on)),
                "skipped": sum(1 for r in self.results if r.skipped),
                "deviations": counts,
                "not_judged": len(self.not_judged),
            },
            "rules": {
                i.id: {"severity": i.severity.label, "side": i.side.value, "summary": i.summary,
                       "reads": i.reads}
                for i in rule_catalogue().values()
            },
            "scenarios": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)
