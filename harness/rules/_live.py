"""Live rules: the schema checks and behaviour rules, evaluated as exchanges arrive.

A running mock (``serve --check``) or the proxy feeds every completed exchange to a
:class:`LiveRules`; it tells clients apart (by the key they send, as a one-way fingerprint, and
their ``User-Agent``), keeps each client's exchanges in order, and evaluates the same rules a
``run`` does over each client's sequence (tasks are told apart by the rules themselves). Every
deviation is reported once, with a sequence number of its own, so ``GET /__mock/deviations?since=N``
returns only what is new::

    live = LiveRules("cloudsway").attach(server)   # observer + GET /__mock/deviations
    ...
    live.deviations(severity=Severity.ERROR)

Rules that need the client's own verdict (did it report success?) cannot judge a live session
and stay silent: only ``run`` knows how a client ended.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from imagegen_conformance import contracts
from imagegen_conformance.mocks.engine import Exchange, MockRequest, MockResponse, MockServer

from ._deviation import Deviation, Severity
from ._exchanges import header
from ._rules import RuleContext, check_rules
from ._validate import DOWNLOAD, validate_exchange

__all__ = ["ClientSession", "LiveDeviation", "LiveRules"]

#: Exchanges of one client the rules look back over (older ones were judged when they came).
WINDOW = 1_000
#: Rules that judge a whole task: one deviation per task, its evidence updated as polls arrive.
PER_TASK = frozenset({"client.poll-interval", "client.stops-at-terminal"})
#: Rules that judge a habit of the client: one deviation per client and wrong value.
PER_CLIENT = frozenset({"client.auth-scheme"})


@dataclass
class ClientSession:
    """One client as the mock sees it: its key fingerprint, user agent, and exchanges in order."""

    label: str
    key_id: str | None
    user_agent: str | None
    exchanges: list[Exchange] = field(default_factory=list)
    judged: int = 0  # how many of the exchanges the rules have seen

    def to_dict(self) -> dict[str, Any]:
        return {"client": self.label, "key": self.key_id, "user_agent": self.user_agent,
                "exchanges": [e.seq for e in self.exchanges]}


@dataclass(frozen=True)
class LiveDeviation:
    """A deviation found live: its own sequence number, which client, when it was found."""

    seq: int
    client: str
    deviation: Deviation
    found_at: float  # wall-clock epoch seconds

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "client": self.client, "found_at": round(self.found_at, 3),
                **self.deviation.to_dict()}


def _identity(client: str, dev: Deviation, task_of: dict[int, str]) -> tuple[Any, ...]:
    """What makes a deviation the same one when the rules run again over more exchanges.

    A rule that judges a whole task (poll interval, stop at terminal) reports it once per task,
    its evidence updated as more polls arrive; one that judges a habit (the auth scheme), once
    per client; the others once per exchange they point at.
    """
    subject: Any = dev.exchanges[:1]
    if dev.rule in PER_TASK:
        subject = frozenset(task_of[s] for s in dev.exchanges if s in task_of) or subject
    elif dev.rule in PER_CLIENT:
        subject = repr(dev.actual)
    return client, dev.rule, dev.path, subject


class LiveRules:
    """Schema checks and behaviour rules over exchanges as they arrive, per client.

    ``on_deviation`` is called with each new deviation (``serve --check`` prints it). Feeding
    is cheap; the rules run at most every ``debounce`` seconds (longer if they grow slow), and
    :meth:`flush` runs them at once (the deviations endpoint always flushes first).
    """

    def __init__(
        self,
        provider: str,
        *,
        base_url: str | None = None,
        on_deviation: Callable[[LiveDeviation], None] | None = None,
        debounce: float = 0.05,
        window: int = WINDOW,
    ) -> None:
        self.contract = contracts.load(provider)
        self.base_url = base_url
        self.on_deviation = on_deviation
        self.debounce = debounce
        self.window = window
        self._lock = threading.RLock()
        self._clients: dict[tuple[str | None, str | None], ClientSession] = {}
        self._found: list[LiveDeviation] = []
        self._index: dict[tuple[Any, ...], int] = {}  # identity -> position in _found
        # Clients with new exchanges, in the order they arrived (a dict keeps it; a set does not).
        self._dirty: dict[tuple[str | None, str | None], None] = {}
        self._scheduled: asyncio.TimerHandle | None = None
        self._cost = 0.0  # seconds the last evaluation took

    # --- feeding ------------------------------------------------------------------------

    def attach(self, server: MockServer) -> LiveRules:
        """Observe ``server``'s exchanges and serve ``GET /__mock/deviations`` on it."""
        server.observe(self.add, on_reset=self.reset)
        server.add_admin_route(
            "GET", "/deviations", self._handle,
            "deviations found live (schema and behaviour rules), per client; "
            "?since=SEQ, ?severity=warning|error|critical, ?rule=ID",
        )
        if self.base_url is None and server.public_url:
            self.base_url = server.public_url
        return self

    def add(self, exchange: Exchange) -> None:
        """Take one completed exchange; the rules see it at the next evaluation."""
        with self._lock:
            key = self._client_key(exchange)
            session = self._clients.get(key)
            if session is None:
                label = self._label(*key)
                session = self._clients[key] = ClientSession(label, *key)
            session.exchanges.append(exchange)
            if len(session.exchanges) > 10 * self.window:  # bounded like the journal
                dropped = len(session.exchanges) - self.window
                del session.exchanges[:dropped]
                session.judged = max(0, session.judged - dropped)
            self._dirty[key] = None
        self._schedule()

    def _client_key(self, exchange: Exchange) -> tuple[str | None, str | None]:
        agent = header(exchange.request_headers, "User-Agent")
        if exchange.key_id is None and exchange.operation == DOWNLOAD:
            # Image links carry no key: a download belongs to the latest client with that agent.
            for key in reversed(list(self._clients)):
                if key[1] == agent and key[0] is not None:
                    return key
        return exchange.key_id, agent

    def _label(self, key_id: str | None, agent: str | None) -> str:
        return f"{key_id or 'no-key'} {agent or '(no user agent)'}"

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # fed from a thread without a loop: judge at once
            self.flush()
            return
        with self._lock:
            if self._scheduled is not None:
                return
            delay = max(self.debounce, 5 * self._cost)  # the rules never take the loop over
            self._scheduled = loop.call_later(delay, self._timer)

    def _timer(self) -> None:
        with self._lock:
            self._scheduled = None
        self.flush()

    def reset(self) -> None:
        """Forget every client and deviation (the mock was reset)."""
        with self._lock:
            self._clients.clear()
            self._found.clear()
            self._index.clear()
            self._dirty.clear()

    # --- judging ------------------------------------------------------------------------

    def flush(self) -> list[LiveDeviation]:
        """Run the rules over every client with new exchanges; return the new deviations."""
        new: list[LiveDeviation] = []
        started = time.perf_counter()
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            for key in dirty:
                session = self._clients.get(key)
                if session is not None:
                    new += self._judge(session)
            self._cost = time.perf_counter() - started
        if self.on_deviation is not None:
            for item in new:
                self.on_deviation(item)
        return new

    def _judge(self, session: ClientSession) -> list[LiveDeviation]:
        fresh = session.exchanges[session.judged :]
        session.judged = len(session.exchanges)
        found: list[Deviation] = []
        for exchange in fresh:
            found += validate_exchange(self.contract, exchange, self.base_url)
        ctx = RuleContext(self.contract, session.exchanges[-self.window :], base_url=self.base_url)
        found += check_rules(ctx)
        task_of = {ex.seq: trace.id for trace in ctx.tasks().values() for ex in trace.touches}
        new = []
        for dev in found:
            ident = _identity(session.label, dev, task_of)
            at = self._index.get(ident)
            if at is not None:
                old = self._found[at]
                self._found[at] = LiveDeviation(old.seq, old.client, dev, old.found_at)
                continue
            item = LiveDeviation(len(self._found) + 1, session.label, dev, time.time())
            self._index[ident] = len(self._found)
            self._found.append(item)
            new.append(item)
        return new

    # --- reading ------------------------------------------------------------------------

    def deviations(
        self, since: int = 0, severity: Severity | str | None = None, rule: str | None = None,
    ) -> list[LiveDeviation]:
        """Deviations after ``since``, at or above ``severity``, of ``rule``: judged up to now."""
        self.flush()
        level = Severity.parse(severity) if severity is not None else None
        with self._lock:
            return [
                d for d in self._found
                if d.seq > since and (level is None or d.deviation.severity >= level)
                and (rule is None or d.deviation.rule == rule)
            ]

    def clients(self) -> list[ClientSession]:
        with self._lock:
            return list(self._clients.values())

    def to_dict(self, deviations: Iterable[LiveDeviation]) -> dict[str, Any]:
        with self._lock:
            return {
                "provider": self.contract.provider,
                "last_seq": len(self._found),
                "clients": [c.to_dict() for c in self._clients.values()],
                "deviations": [d.to_dict() for d in deviations],
            }

    async def _handle(self, request: MockRequest) -> MockResponse:
        try:
            since = int(request.query.get("since", "0"))
            found = self.deviations(since, request.query.get("severity"), request.query.get("rule"))
        except ValueError as exc:
            return MockResponse.json({"error": f"{exc} (?since=SEQ, ?severity=info|warning|"
                                                "error|critical, ?rule=ID)"}, 400)
        return MockResponse.json(self.to_dict(found))
