"""Typed views of a provider contract: the OpenAPI document, behaviour.yaml and scenarios.yaml.

The dataclasses are read-only views built by :func:`contracts.load`; the raw mappings stay
available (``Contract.openapi``, ``Behaviour.raw``) for tools that need more than the view.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Auth",
    "Behaviour",
    "Contract",
    "ContractError",
    "Duration",
    "ErrorSpec",
    "Expectation",
    "Lifecycle",
    "LiveSpec",
    "Operation",
    "Option",
    "Phase",
    "Polling",
    "ProbeSpec",
    "Quirk",
    "Retention",
    "Scenario",
]


class ContractError(ValueError):
    """A contract file is missing, malformed, or asked for something it does not define."""


@dataclass(frozen=True)
class Duration:
    """A range of provider seconds; a task's phase draws its length uniformly from it."""

    low: float
    high: float

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, int | float):
            return cls(float(value), float(value))
        if isinstance(value, list | tuple) and len(value) == 2:
            low, high = (math.inf if v is None else float(v) for v in value)
            if low > high:
                raise ContractError(f"duration range {value!r}: low is above high")
            return cls(low, high)
        raise ContractError(f"duration {value!r}: expected a number or [low, high]")


@dataclass(frozen=True)
class Phase:
    """One non-terminal state a task passes through, how long it lasts, how many polls it takes."""

    state: str
    seconds: Duration
    polls: int


@dataclass(frozen=True)
class Lifecycle:
    states: tuple[str, ...]
    initial: str
    terminal: tuple[str, ...]
    success: str | None
    failure: str | None
    transitions: Mapping[str, tuple[str, ...]]
    phases: tuple[Phase, ...]

    def is_legal(self, before: str, after: str) -> bool:
        """True when a task may be seen in ``before`` and later in ``after``."""
        if before == after:
            return True
        seen: set[str] = set()
        frontier = [before]
        while frontier:
            state = frontier.pop()
            for nxt in self.transitions.get(state, ()):
                if nxt == after:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        return False


@dataclass(frozen=True)
class Polling:
    """What the provider asks of a polling client, in provider seconds."""

    min_interval: float
    recommended_interval: float
    max_wait: float


@dataclass(frozen=True)
class Retention:
    """How long the provider keeps things, in provider seconds (None: not known to expire)."""

    task: float | None
    image_url: float | None


@dataclass(frozen=True)
class Auth:
    header: str
    scheme: str | None

    def well_formed(self, value: str | None) -> bool:
        """True when ``value`` is a non-empty credential in this scheme."""
        if not value:
            return False
        if self.scheme is None:
            return bool(value.strip())
        prefix = self.scheme + " "
        return value.startswith(prefix) and bool(value[len(prefix) :].strip())

    def key_of(self, value: str | None) -> str | None:
        if not self.well_formed(value):
            return None
        assert value is not None
        return value[len(self.scheme) + 1 :].strip() if self.scheme else value.strip()


@dataclass(frozen=True)
class ErrorSpec:
    """The provider's answer for one HTTP status: its default code and message."""

    status: int
    code: str | int | None
    message: str
    meaning: str


@dataclass(frozen=True)
class Option:
    """A selectable behaviour, typically where the seed and the reference disagree."""

    name: str
    default: str
    choices: tuple[str, ...]
    doc: str


@dataclass(frozen=True)
class Quirk:
    """A discrepancy or oddity in the provider's own documents, recorded with its sources."""

    id: str
    summary: str
    seed: str
    reference: str
    mock: str


@dataclass(frozen=True)
class LiveSpec:
    """Where the live provider is and which environment variables hold its credentials."""

    key_var: str
    base_url_var: str
    base_url: str | None  # None: the user must say (a self-hosted Dify)
    required_vars: tuple[str, ...] = ()  # also needed (Cloudsway's endpoint path)
    client_env: Mapping[str, str] = field(default_factory=dict)  # reference client var <- user's var


@dataclass(frozen=True)
class ProbeSpec:
    """The probe's cheapest complete request, merged over the first plain success scenario's."""

    request: Mapping[str, Any]
    size: tuple[int, int] | None  # the image the probe request asks for, when it changes the size


@dataclass(frozen=True)
class Behaviour:
    provider: str
    mock: str  # "module:Class", the simulator
    port: int  # serve's default port
    aliases: tuple[str, ...]
    fixture: str  # the pytest plugin's fixture name
    live: LiveSpec | None
    probe: ProbeSpec
    not_applicable: Mapping[str, str]  # fault name -> why it means nothing for this provider
    hosts: Mapping[str, str]
    auth: Auth
    lifecycle: Lifecycle | None
    polling: Polling | None
    retention: Retention
    limits: Mapping[str, Any]
    latency_budget: Mapping[str, float]
    errors: Mapping[int, ErrorSpec]
    options: Mapping[str, Option]
    quirks: tuple[Quirk, ...]
    raw: Mapping[str, Any]

    def variant(self, name: str) -> dict[str, Any]:
        """What ``aliases: {<name>: {...}}`` changes when the provider is asked for by that alias
        (option defaults, hosts, provider data); {} for the provider id or a plain alias."""
        declared = self.raw.get("aliases")
        if not isinstance(declared, Mapping):
            return {}
        return dict(declared.get(name) or {})


@dataclass(frozen=True)
class Expectation:
    """What a correct client does in a scenario."""

    outcome: str  # "success" | "error" | "gives_up"
    images: int | None = None
    width: int | None = None
    height: int | None = None
    error_status: int | None = None
    within_seconds: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    id: str
    summary: str
    faults: tuple[str, ...]
    time_scale: float | None
    lifecycle: str | None
    options: Mapping[str, str]
    request: Mapping[str, Any]
    expect: Expectation
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class Contract:
    """Everything known about one provider: ``contracts.load("cloudsway")``."""

    provider: str
    title: str
    openapi: Mapping[str, Any]
    behaviour: Behaviour
    scenarios: tuple[Scenario, ...]
    operations: Mapping[str, Operation]
    folder: str = ""  # where the contract files are

    def operation(self, operation_id: str) -> Operation:
        try:
            return self.operations[operation_id]
        except KeyError:
            known = ", ".join(sorted(self.operations))
            raise ContractError(
                f"{self.provider} has no operation {operation_id!r}; known: {known}"
            ) from None

    def scenario(self, scenario_id: str) -> Scenario:
        for scenario in self.scenarios:
            if scenario.id == scenario_id:
                return scenario
        known = ", ".join(s.id for s in self.scenarios)
        raise ContractError(f"{self.provider} has no scenario {scenario_id!r}; known: {known}")
