"""What the pytest plugin hands to tests: mock handles, the session's servers, live targets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer, ServeThread
from imagegen_conformance.mocks.engine import Exchange, FaultSpec

from .rules._deviation import Deviation, Severity
from .rules._rules import RuleContext, check_rules
from .rules._targets import LiveTarget
from .rules._validate import validate_all

#: The key a fixture's ``headers`` send. Its mock accepts any well-formed key, as ``serve`` does,
#: unless the marker pins some (``api_keys=[...]``).
TEST_KEY = "imagegen-test-key"
DEFAULT_TIME_SCALE = 50.0
#: What ``@pytest.mark.imagegen(...)`` takes.
MARKER_KEYS = ("scenario", "faults", "time_scale", "clock", "lifecycle", "options", "api_keys",
               "allow_deviations")


@dataclass(frozen=True)
class MockConfig:
    """What makes two mocks different servers: clock, lifecycle, options."""

    provider: str
    clock: str = "scaled"
    time_scale: float = DEFAULT_TIME_SCALE
    lifecycle: str = "time"
    options: tuple[tuple[str, str], ...] = ()
    api_keys: tuple[str, ...] = ()  # empty: any well-formed key

    @classmethod
    def from_marker(cls, provider: str, kwargs: Mapping[str, Any]) -> MockConfig:
        scale = float(kwargs.get("time_scale") or DEFAULT_TIME_SCALE)
        clock = kwargs.get("clock") or ("real" if scale == 1.0 else "scaled")
        keys = kwargs.get("api_keys") or ()
        return cls(provider, clock, scale, kwargs.get("lifecycle") or "time",
                   tuple(sorted((kwargs.get("options") or {}).items())),
                   (keys,) if isinstance(keys, str) else tuple(keys))


class MockHub:
    """The session's mocks: one server thread per distinct configuration, started on first use."""

    def __init__(self) -> None:
        self._threads: dict[MockConfig, ServeThread] = {}

    def get(self, config: MockConfig) -> ServeThread:
        thread = self._threads.get(config)
        if thread is None:
            def build() -> list[MockServer]:
                return [MockServer(config.provider, clock=config.clock, time_scale=config.time_scale,
                                   lifecycle=config.lifecycle, options=dict(config.options),
                                   api_keys=config.api_keys)]

            thread = self._threads[config] = ServeThread(build).start()
        return thread

    def close(self) -> None:
        for thread in self._threads.values():
            thread.stop()
        self._threads.clear()


@dataclass
class ProviderMock:
    """One provider's mock for one test: where it is, what it saw, and how to steer it.

    ``url`` is the primary host's base URL (``urls`` has every host by role), ``headers`` the
    auth header it accepts. ``advance()`` moves a manual clock, ``fault()`` adds a fault for the
    rest of the test, ``journal()`` is what the mock saw in this test.
    """

    __test__ = False

    provider: str
    thread: ServeThread
    config: MockConfig
    check_deviations: bool = True
    api_key: str = TEST_KEY
    urls: dict[str, str] = field(default_factory=dict)
    allowed: frozenset[str] = frozenset()  # rule ids the test allows (allow_deviations=[...])

    def __post_init__(self) -> None:
        if self.config.api_keys and self.api_key not in self.config.api_keys:
            self.api_key = self.config.api_keys[0]  # headers send a key the mock accepts

    @property
    def server(self) -> MockServer:
        return self.thread.server(self.provider)

    @property
    def url(self) -> str:
        return self.thread.url(self.provider)

    @property
    def headers(self) -> dict[str, str]:
        auth = contracts.load(self.provider).behaviour.auth
        return {auth.header: f"{auth.scheme} {self.api_key}" if auth.scheme else self.api_key}

    def reset(self, faults: Iterable[str] = ()) -> None:
        server = self.server
        self.thread.call(server.reset)
        for spec in faults:
            self.fault(spec)
        self.urls = {role: self.thread.url(self.provider, role) for role in server.roles}

    def fault(self, spec: str) -> None:
        parsed = FaultSpec.parse(spec)
        self.thread.call(lambda: self.server.faults.add(parsed))

    def advance(self, seconds: float) -> float:
        return self.thread.call(lambda: self.server.clock.advance(seconds))

    def journal(self) -> list[Exchange]:
        return self.server.journal.entries()

    def tasks(self) -> list[Any]:
        return list(self.server.tasks)

    def deviations(self) -> list[Deviation]:
        """Schema and behaviour deviations in this test's exchanges, by the harness's rules."""
        contract = contracts.load(self.provider)
        exchanges = self.journal()
        found = validate_all(contract, exchanges, self.url)
        found += check_rules(RuleContext(contract, exchanges, time_scale=self.config.time_scale,
                                         base_url=self.url))
        return found


@dataclass
class LiveProvider:
    """The same handle shape against the real endpoint (``--imagegen-live``)."""

    __test__ = False

    provider: str
    target: LiveTarget
    check_deviations: bool = False

    @property
    def url(self) -> str:
        return self.target.base_url

    @property
    def api_key(self) -> str:
        return self.target.api_key

    @property
    def headers(self) -> dict[str, str]:
        auth = contracts.load(self.provider).behaviour.auth
        return {auth.header: f"{auth.scheme} {self.api_key}" if auth.scheme else self.api_key}


def allowed_rules(value: Any) -> tuple[bool, frozenset[str]]:
    """``allow_deviations`` of the marker: (check at all, rule ids allowed)."""
    if value is True:
        return False, frozenset()
    if not value:
        return True, frozenset()
    return True, frozenset([value] if isinstance(value, str) else value)


def format_deviations(provider: str, deviations: list[Deviation], journal: list[Exchange]) -> str:
    """A failure message with the evidence: rule, side, field, expected vs actual, reproduce,
    and how to allow the deviation when the test means it (a negative test)."""
    by_seq = {e.seq: e for e in journal}
    lines = [f"{len(deviations)} contract deviation(s) in this test's {provider} exchanges:"]
    for dev in deviations:
        lines.append(f"- [{dev.severity.label}] {dev.rule} ({dev.side}): {dev.message}")
        if dev.path:
            lines.append(f"    at {dev.path}: expected {dev.expected!r}, got {dev.actual!r}")
        for seq in dev.exchanges[:3]:
            ex = by_seq.get(seq)
            if ex is not None:
                lines.append(f"    exchange #{seq}: {ex.method} {ex.path} -> {ex.status}")
        if dev.reproduce:
            lines.append(f"    reproduce: {dev.reproduce}")
    rules = sorted({d.rule for d in deviations})
    lines += [
        "If the test means it (a negative test, e.g. sending an invalid body to assert the 400), "
        "allow it:",
        f"    @pytest.mark.imagegen(allow_deviations={rules!r})   # or allow_deviations=True for any",
        "or raise the threshold for the whole run: pytest --imagegen-fail-on critical",
    ]
    return "\n".join(lines)


def at_or_above(deviations: list[Deviation], threshold: str) -> list[Deviation]:
    level = Severity.parse(threshold)
    return [d for d in deviations if d.severity >= level]
