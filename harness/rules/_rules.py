"""Behaviour rules: checks over the sequence of exchanges of one client run.

Each rule has an id, a severity, the side at fault, and reads its parameters from the
provider's ``behaviour.yaml`` (polling, lifecycle, auth, retention, latency budget) and its
conformance profile (which operation polls, where task ids, states and images are). A rule
that the contract gives no meaning to (no polling guidance, no expiring URLs) does not apply.
"""

from __future__ import annotations

import email.utils
import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from imagegen_conformance.contracts import Contract, Scenario
from imagegen_conformance.mocks.engine import Exchange

from ._deviation import Deviation, Severity, Side
from ._exchanges import curl_line, header, media_type, stream_events
from ._profile import Profile, event_name, profile
from ._validate import DOWNLOAD, STREAM_MEDIA

__all__ = [
    "RULES",
    "ClientOutcome",
    "RuleContext",
    "RuleInfo",
    "check_rules",
    "rule_catalogue",
]

TOLERANCE = 0.98  # timing comparisons allow 2 % for clock granularity
TRANSIENT = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class RuleInfo:
    """A rule's identity, as reports and ``--help`` list it."""

    id: str
    severity: Severity
    side: Side
    summary: str
    reads: str = ""  # the contract parameters it reads


@dataclass
class ClientOutcome:
    """What the client said about its run (the runner fills it; rules read it)."""

    ok: bool
    images: int = 0
    timed_out: bool = False
    ended_at: float | None = None  # wall-clock epoch seconds


@dataclass
class Poll:
    exchange: Exchange
    state: str | None


@dataclass
class TaskTrace:
    """Everything the client did about one task: its creation, polls, returned URLs."""

    id: str
    created: Exchange | None = None
    polls: list[Poll] = field(default_factory=list)
    touches: list[Exchange] = field(default_factory=list)  # every exchange naming the task
    expected_images: int | None = None


@dataclass
class RuleContext:
    """One run's evidence: the contract, the client's exchanges, what the client reported."""

    contract: Contract
    exchanges: list[Exchange]
    outcome: ClientOutcome | None = None
    scenario: Scenario | None = None
    time_scale: float = 1.0
    probes: list[Exchange] = field(default_factory=list)  # the harness's own requests
    base_url: str | None = None
    _tasks: dict[str, TaskTrace] | None = None

    @property
    def profile(self) -> Profile:
        return profile(self.contract.provider)

    @property
    def api(self) -> list[Exchange]:
        """The client's exchanges with the provider's API (image downloads left out)."""
        prof = self.profile
        return [
            e for e in self.exchanges
            if e.operation != DOWNLOAD and getattr(prof.op(e.operation), "kind", "") != "download"
        ]

    def state_of(self, exchange: Exchange) -> str | None:
        """The lifecycle state an answer reports (None: it reports none)."""
        prof = self.profile.op(exchange.operation)
        if prof is None or exchange.status is None or not 200 <= exchange.status < 300:
            return None
        for state, selectors in prof.state_when.items():
            if any(v not in (None, False, "", [], {}) for v in selectors.values(exchange, self.contract)):
                return state
        if prof.state_when or prof.state is None:
            return None
        raw = prof.state.last(exchange, self.contract)
        if raw is None:
            return None
        key = str(raw).lower() if isinstance(raw, bool) else str(raw)
        return prof.state_map.get(key, key)

    def tasks(self) -> dict[str, TaskTrace]:
        if self._tasks is not None:
            return self._tasks
        traces: dict[str, TaskTrace] = {}
        for ex in self.api:
            prof = self.profile.op(ex.operation)
            if prof is None or prof.task_id is None:
                continue
            if prof.kind == "create" and not (ex.status and 200 <= ex.status < 300):
                continue
            task_id = prof.task_id.first(ex, self.contract)
            if task_id is None:
                continue
            trace = traces.setdefault(str(task_id), TaskTrace(str(task_id)))
            trace.touches.append(ex)
            if prof.kind == "create":
                trace.created = ex
                if prof.count is not None:
                    count = prof.count.first(ex, self.contract)
                    try:  # an absent count means one image, every provider's default
                        trace.expected_images = int(count) if count is not None else 1
                    except (TypeError, ValueError):
                        trace.expected_images = None
            elif prof.kind == "poll":
                trace.polls.append(Poll(ex, self.state_of(ex)))
        self._tasks = traces
        return traces

    def returned_images(self) -> list[tuple[str, Exchange]]:
        """Every image URL the provider returned, with the exchange that returned it."""
        out: list[tuple[str, Exchange]] = []
        for ex in self.api:
            prof = self.profile.op(ex.operation)
            if prof is None or prof.images is None or not ex.status or not 200 <= ex.status < 300:
                continue
            for url in prof.images.values(ex, self.contract):
                if isinstance(url, str) and url not in (u for u, _ in out):
                    out.append((url, ex))
        return out

    def repro(self, exchange: Exchange) -> str:
        return curl_line(exchange, self.base_url)


class Rule(ABC):
    """A behaviour check. Subclasses set ``info`` and implement ``applies`` and ``check``."""

    info: ClassVar[RuleInfo]

    def applies(self, ctx: RuleContext) -> bool:
        return True

    @abstractmethod
    def check(self, ctx: RuleContext) -> list[Deviation]: ...

    def deviation(self, message: str, exchanges: Iterable[Exchange] = (), **kw: Any) -> Deviation:
        return Deviation(
            self.info.id, self.info.severity, self.info.side, message,
            tuple(e.seq for e in exchanges), **kw,
        )


def _ok(ex: Exchange) -> bool:
    return ex.status is not None and 200 <= ex.status < 300


def _retry_after(value: str | None, now_epoch: float) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_epoch)


# --- client-side rules -------------------------------------------------------------------


class PollInterval(Rule):
    info = RuleInfo(
        "client.poll-interval", Severity.ERROR, Side.CLIENT,
        "Polls of one task are no closer than the provider's minimum poll interval.",
        "polling.min_interval",
    )

    def applies(self, ctx: RuleContext) -> bool:
        return ctx.contract.behaviour.polling is not None and bool(ctx.profile.of_kind("poll"))

    def check(self, ctx: RuleContext) -> list[Deviation]:
        polling = ctx.contract.behaviour.polling
        assert polling is not None
        lifecycle = ctx.contract.behaviour.lifecycle
        terminal = lifecycle.terminal if lifecycle is not None else ()
        out = []
        for trace in ctx.tasks().values():
            short: list[tuple[float, Exchange, Exchange]] = []
            for before, after in zip(trace.polls, trace.polls[1:], strict=False):
                if not _ok(before.exchange):
                    continue  # a retry after an error answer is judged by the retry rules
                if before.state in terminal:
                    # Nothing is being waited for any more: a re-read after the end (fal-client
                    # fetches the status once more, at once) is judged by client.stops-at-terminal.
                    continue
                gap = after.exchange.provider_time - before.exchange.provider_time
                if gap < polling.min_interval * TOLERANCE:
                    short.append((gap, before.exchange, after.exchange))
            if short:
                gap, a, b = min(short, key=lambda s: s[0])
                out.append(self.deviation(
                    f"task {trace.id}: {len(short)} poll(s) sooner than the minimum interval; "
                    f"the shortest gap was {gap:.3f} s",
                    [a, b], path="timing.poll_interval",
                    expected=f">= {polling.min_interval} s", actual=f"{gap:.3f} s",
                    reproduce=ctx.repro(b),
                ))
        return out


class StopsAtTerminal(Rule):
    info = RuleInfo(
        "client.stops-at-terminal", Severity.ERROR, Side.CLIENT,
        "Polling a task stops once it has reported a terminal state.",
        "lifecycle.terminal, conformance.after_terminal_polls",
    )

    def applies(self, ctx: RuleContext) -> bool:
        return ctx.contract.behaviour.lifecycle is not None and bool(ctx.profile.of_kind("poll"))

    def check(self, ctx: RuleContext) -> list[Deviation]:
        lifecycle = ctx.contract.behaviour.lifecycle
        assert lifecycle is not None
        grace = ctx.profile.after_terminal_polls
        out = []
        for trace in ctx.tasks().values():
            terminal_at = next(
                (i for i, p in enumerate(trace.polls) if p.state in lifecycle.terminal), None
            )
            if terminal_at is None:
                continue
            extra = trace.polls[terminal_at + 1 :]
            if len(extra) > grace:
                seen = trace.polls[terminal_at]
                out.append(self.deviation(
                    f"task {trace.id} reported {seen.state!r} (terminal) yet was polled "
                    f"{len(extra)} more time(s)",
                    [seen.exchange, *(p.exchange for p in extra[:5])],
                    path="response.body state", expected=f"at most {grace} poll(s) after a terminal state",
                    actual=f"{len(extra)} poll(s)", reproduce=ctx.repro(extra[0].exchange),
                ))
        return out


class HonoursRetryAfter(Rule):
    info = RuleInfo(
        "client.retry-after", Severity.ERROR, Side.CLIENT,
        "After a 429 (or 503) with Retry-After, the next request waits at least that long.",
        "response header Retry-After",
    )

    def check(self, ctx: RuleContext) -> list[Deviation]:
        out = []
        api = ctx.api
        for i, ex in enumerate(api):
            if ex.status not in (429, 503):
                continue
            wait = _retry_after(header(ex.response_headers, "Retry-After"), ex.started_at)
            if wait is None or i + 1 >= len(api):
                continue
            nxt = api[i + 1]
            gap = nxt.provider_time - ex.provider_time
            if gap < wait * TOLERANCE:
                out.append(self.deviation(
                    f"HTTP {ex.status} asked to retry after {wait:g} s; the next request came "
                    f"{gap:.3f} s later",
                    [ex, nxt], path="response.headers.Retry-After",
                    expected=f">= {wait:g} s", actual=f"{gap:.3f} s", reproduce=ctx.repro(nxt),
                ))
        return out


class FollowsReturnedUrls(Rule):
    info = RuleInfo(
        "client.follows-urls", Severity.ERROR, Side.CLIENT,
        "URLs the provider returns (status_url, response_url...) are followed, not rebuilt.",
        "conformance.operations.*.returns_urls",
    )

    def applies(self, ctx: RuleContext) -> bool:
        return any(p.returns_urls for p in ctx.profile.operations.values())

    def check(self, ctx: RuleContext) -> list[Deviation]:
        returned: dict[str, set[str]] = {}  # task/request id -> returned paths
        given_by: dict[str, Exchange] = {}
        out = []
        for ex in ctx.api:
            for task_id, paths in returned.items():
                if task_id not in ex.path:
                    continue
                if not any(ex.path == p or ex.path.startswith(p.rstrip("/") + "/") for p in paths):
                    out.append(self.deviation(
                        f"{ex.method} {ex.path} rebuilds a URL for {task_id} instead of using the "
                        "one the provider returned",
                        [given_by[task_id], ex], path="request.path",
                        expected=sorted(paths), actual=ex.path, reproduce=ctx.repro(ex),
                    ))
            prof = ctx.profile.op(ex.operation)
            if prof is None or not prof.returns_urls or not _ok(ex):
                continue
            urls = [u for sel in prof.returns_urls for u in sel.values(ex, ctx.contract)]
            rid: Any = prof.task_id.first(ex, ctx.contract) if prof.task_id else None
            if rid is None:
                continue
            returned.setdefault(str(rid), set()).update(
                urlsplit(u).path for u in urls if isinstance(u, str)
            )
            given_by.setdefault(str(rid), ex)
        return out


class NoBlindRetry(Rule):
    info = RuleInfo(
        "client.no-blind-retry", Severity.ERROR, Side.CLIENT,
        "A non-idempotent request answered 4xx is not sent again unchanged.",
        "conformance.retryable_4xx, operations.*.idempotent",
    )

    def check(self, ctx: RuleContext) -> list[Deviation]:
        out = []
        api = ctx.api
        flagged: set[int] = set()
        for i, ex in enumerate(api):
            if ex.status is None or not 400 <= ex.status < 500 or ex.status in ctx.profile.retryable_4xx:
                continue
            if ctx.profile.idempotent(ex) or ex.seq in flagged:
                continue
            again = [
                later for later in api[i + 1 :]
                if later.method == ex.method and later.path == ex.path
                and later.request_body == ex.request_body
            ]
            if again:
                flagged.update(e.seq for e in again)
                out.append(self.deviation(
                    f"{ex.operation or ex.path} was answered HTTP {ex.status} and sent again "
                    f"unchanged {len(again)} time(s)",
                    [ex, *again[:5]], path="request",
                    expected="no resend of a rejected non-idempotent request",
                    actual=f"{len(again)} resend(s)", reproduce=ctx.repro(again[0]),
                ))
        return out


class AuthScheme(Rule):
    info = RuleInfo(
        "client.auth-scheme", Severity.ERROR, Side.CLIENT,
        "Every authenticated request carries the provider's auth header in its scheme.",
        "auth.header, auth.scheme",
    )

    def check(self, ctx: RuleContext) -> list[Deviation]:
        auth = ctx.contract.behaviour.auth
        wrong: dict[str, list[Exchange]] = {}
        for ex in ctx.api:
            if ex.operation is None:
                continue
            declared, anonymous = _security(ctx.contract, ex.operation)
            if not declared:
                continue
            value = header(ex.request_headers, auth.header)
            if value is None:
                # fal's public models take no key ({} in the operation's security); a key
                # that is sent must still be in the scheme.
                if not anonymous:
                    wrong.setdefault("(no header)", []).append(ex)
                continue
            if auth.scheme is not None and not value.startswith(auth.scheme + " "):
                scheme = value.split(" ", 1)[0] if " " in value else "(no scheme)"
                wrong.setdefault(scheme, []).append(ex)
        expected = f"{auth.header}: {auth.scheme + ' ' if auth.scheme else ''}<key>"
        return [
            self.deviation(
                f"{len(exs)} request(s) sent {auth.header} as {actual}, not {expected}",
                exs[:5], path=f"request.headers.{auth.header}", expected=expected,
                actual=actual if actual.startswith("(") else f"{actual} <key>",
                reproduce=ctx.repro(exs[0]),
            )
            for actual, exs in wrong.items()
        ]


def _security(contract: Contract, operation: str) -> tuple[bool, bool]:
    """(the operation declares a security scheme, it also takes anonymous ``{}`` requests)."""
    spec = contract.operation(operation).spec
    security = spec.get("security", contract.openapi.get("security")) or []
    declared = any(bool(req) for req in security)
    return declared, declared and any(not req for req in security)


class RetriesTransient(Rule):
    info = RuleInfo(
        "client.retries-transient", Severity.ERROR, Side.CLIENT,
        "A transient 5xx (or dropped connection) on an idempotent call is retried with backoff, "
        "not fatal.",
        "operations.*.idempotent, polling.min_interval (the smallest backoff)",
    )

    def check(self, ctx: RuleContext) -> list[Deviation]:
        polling = ctx.contract.behaviour.polling
        backoff = ctx.profile.retry_backoff_min
        if backoff is None:
            backoff = polling.min_interval if polling else 0.0
        out = []
        api = ctx.api
        for i, ex in enumerate(api):
            if not (ex.status in TRANSIENT or (ex.status is None and ex.complete)):
                continue
            if not ctx.profile.retries_5xx(ex) or header(ex.response_headers, "Retry-After"):
                continue  # Retry-After answers are judged by client.retry-after
            prof = ctx.profile.op(ex.operation)
            key = prof.task_id.first(ex, ctx.contract) if prof and prof.task_id else None
            retry = next(
                (
                    later for later in api[i + 1 :]
                    if later.operation == ex.operation
                    and (key is None or (prof and prof.task_id and
                                         prof.task_id.first(later, ctx.contract) == key))
                ),
                None,
            )
            what = f"HTTP {ex.status}" if ex.status else "a dropped connection"
            if retry is None:
                if ctx.outcome is not None and not ctx.outcome.ok and not ctx.outcome.timed_out:
                    out.append(self.deviation(
                        f"{ex.operation} got {what} and the client gave up instead of retrying",
                        [ex], path="response.status", expected="a retry with backoff",
                        actual="no retry; the client failed", reproduce=ctx.repro(ex),
                    ))
                continue
            gap = retry.provider_time - ex.provider_time
            if gap < backoff * TOLERANCE:
                out.append(self.deviation(
                    f"{ex.operation} got {what} and was retried after {gap:.3f} s, without backoff",
                    [ex, retry], path="timing.retry_backoff", expected=f">= {backoff:g} s",
                    actual=f"{gap:.3f} s", reproduce=ctx.repro(retry),
                ))
        return out


class DownloadsBeforeExpiry(Rule):
    info = RuleInfo(
        "client.downloads-before-expiry", Severity.ERROR, Side.CLIENT,
        "Returned image URLs are downloaded before they expire.",
        "retention.image_url",
    )

    def applies(self, ctx: RuleContext) -> bool:
        return ctx.contract.behaviour.retention.image_url is not None

    def check(self, ctx: RuleContext) -> list[Deviation]:
        ttl = ctx.contract.behaviour.retention.image_url
        assert ttl is not None
        out = []
        for url, given in ctx.returned_images():
            path = urlsplit(url).path
            downloads = [e for e in ctx.exchanges if e.path == path and e.method in ("GET", "HEAD")]
            for dl in downloads:
                late = dl.provider_time - given.provider_time
                if late > ttl or (dl.status in (403, 410) and not given.faults and not dl.faults):
                    out.append(self.deviation(
                        f"image {path} was downloaded {late:.1f} s after it was returned; "
                        f"it expires after {ttl:g} s",
                        [given, dl], path="timing.download", expected=f"<= {ttl:g} s",
                        actual=f"{late:.1f} s (HTTP {dl.status})", reproduce=ctx.repro(dl),
                    ))
                    break
        return out


class SurfacesFailure(Rule):
    info = RuleInfo(
        "client.surfaces-failure", Severity.ERROR, Side.CLIENT,
        "A task that ends failed is reported as an error, not as an (empty) success.",
        "lifecycle.failure",
    )

    def applies(self, ctx: RuleContext) -> bool:
        lc = ctx.contract.behaviour.lifecycle
        return lc is not None and lc.failure is not None and ctx.outcome is not None

    def check(self, ctx: RuleContext) -> list[Deviation]:
        lifecycle = ctx.contract.behaviour.lifecycle
        assert lifecycle is not None and ctx.outcome is not None
        if not ctx.outcome.ok:
            return []
        failed: list[Exchange] = []
        if lifecycle.failure != lifecycle.success:  # else the state alone cannot tell (fal)
            failed += [
                p.exchange for t in ctx.tasks().values() for p in t.polls
                if p.state == lifecycle.failure
            ]
        if lifecycle.failure != lifecycle.success:
            polled = {p.exchange.seq for t in ctx.tasks().values() for p in t.polls}
            failed += [
                ex for ex in ctx.api
                if ex.seq not in polled and ctx.state_of(ex) == lifecycle.failure
            ]
        failed += _failed_results(ctx)
        if not failed:
            return []
        return [self.deviation(
            f"the provider reported a failure (#{failed[0].seq}) but the client exited successfully "
            f"with {ctx.outcome.images} image(s)",
            failed[:1], path="client.outcome", expected="an error (non-zero exit)",
            actual=f"success with {ctx.outcome.images} image(s)",
        )]


def _failed_results(ctx: RuleContext) -> list[Exchange]:
    """Result fetches answered with an error and never fetched successfully afterwards."""
    out = []
    results = [e for e in ctx.api if getattr(ctx.profile.op(e.operation), "kind", "") == "result"]
    for i, ex in enumerate(results):
        if ex.status is None or ex.status < 400 or ex.status == 429 or ex.faults:
            continue
        if not any(later.path == ex.path and _ok(later) for later in results[i + 1 :]):
            out.append(ex)
    return out


class ReadsStream(Rule):
    info = RuleInfo(
        "client.reads-stream", Severity.ERROR, Side.CLIENT,
        "A streamed answer is read to its final event, and keep-alive pings are ignored.",
        "conformance.operations.*.stream_end",
    )

    def applies(self, ctx: RuleContext) -> bool:
        return any(p.stream_end for p in ctx.profile.operations.values())

    def check(self, ctx: RuleContext) -> list[Deviation]:
        out = []
        for ex in ctx.api:
            prof = ctx.profile.op(ex.operation)
            if prof is None or not prof.stream_end or media_type(ex.response_headers) not in STREAM_MEDIA:
                continue
            if any(f.startswith("truncate") for f in ex.faults):
                continue
            events = [e for e in stream_events(ex) if not e.comment and e.data is not None]
            names = [event_name(e.event, e.json()) for e in events]
            gave_up = (ctx.scenario is not None and ctx.scenario.expect.outcome == "gives_up"
                       and ctx.outcome is not None and not ctx.outcome.ok)
            if (not names or names[-1] not in prof.stream_end) and not gave_up:
                # (hanging up on a stream that never ends is what giving up means)
                out.append(self.deviation(
                    f"the client stopped reading the {ex.operation} stream after {len(names)} "
                    "event(s), before its final event",
                    [ex], path="response.events", expected=f"one of {list(prof.stream_end)} last",
                    actual=names[-1] if names else None, reproduce=ctx.repro(ex),
                ))
            elif ctx.outcome is not None and not ctx.outcome.ok and not ctx.outcome.timed_out \
                    and ctx.state_of(ex) != _failure(ctx) and names[-1] in prof.stream_end \
                    and names[-1] != "error":
                pings = len(stream_events(ex)) - len(events)
                out.append(self.deviation(
                    f"the {ex.operation} stream ended normally ({names[-1]}) with {pings} keep-alive "
                    "ping(s), but the client failed",
                    [ex], path="response.events", expected="a successful client",
                    actual="client error", reproduce=ctx.repro(ex),
                ))
        return out


def _failure(ctx: RuleContext) -> str | None:
    lifecycle = ctx.contract.behaviour.lifecycle
    return None if lifecycle is None else lifecycle.failure


# --- provider-side rules -----------------------------------------------------------------


class LegalTransitions(Rule):
    info = RuleInfo(
        "provider.legal-transitions", Severity.ERROR, Side.PROVIDER,
        "A task only moves along the lifecycle's declared transitions and states.",
        "lifecycle.states, lifecycle.transitions",
    )

    def applies(self, ctx: RuleContext) -> bool:
        return ctx.contract.behaviour.lifecycle is not None

    def check(self, ctx: RuleContext) -> list[Deviation]:
        lifecycle = ctx.contract.behaviour.lifecycle
        assert lifecycle is not None
        out = []
        for trace in ctx.tasks().values():
            seen = [p for p in trace.polls if p.state is not None and not p.exchange.faults]
            for poll in seen:
                if poll.state not in lifecycle.states:
                    out.append(self.deviation(
                        f"task {trace.id} reported the undeclared state {poll.state!r}",
                        [poll.exchange], path="response.body state",
                        expected=list(lifecycle.states), actual=poll.state,
                    ))
                    return out
            for a, b in itertools.pairwise(seen):
                assert a.state is not None and b.state is not None
                if not lifecycle.is_legal(a.state, b.state):
                    out.append(self.deviation(
                        f"task {trace.id} went from {a.state!r} to {b.state!r}",
                        [a.exchange, b.exchange], path="response.body state",
                        expected=f"{a.state} -> {list(lifecycle.transitions.get(a.state, ()))}",
                        actual=f"{a.state} -> {b.state}",
                    ))
        return out


class SuccessHasImages(Rule):
    info = RuleInfo(
        "provider.success-has-images", Severity.ERROR, Side.PROVIDER,
        "A task in its success state carries its images (as many as were asked for).",
        "lifecycle.success, conformance.operations.*.images/count",
    )

    def applies(self, ctx: RuleContext) -> bool:
        lc = ctx.contract.behaviour.lifecycle
        return lc is not None and lc.success is not None and any(
            p.images for p in ctx.profile.operations.values()
        )

    def check(self, ctx: RuleContext) -> list[Deviation]:
        lifecycle = ctx.contract.behaviour.lifecycle
        assert lifecycle is not None
        out = []
        for trace in ctx.tasks().values():
            for poll in trace.polls:
                if poll.state != lifecycle.success or poll.exchange.faults:
                    continue
                prof = ctx.profile.op(poll.exchange.operation)
                if prof is None or prof.images is None:
                    continue
                urls = prof.images.values(poll.exchange, ctx.contract)
                want = trace.expected_images
                if not urls or (want is not None and len(urls) != want):
                    out.append(self.deviation(
                        f"task {trace.id} is {lifecycle.success!r} with {len(urls)} image(s)",
                        [poll.exchange], path=f"response.body {prof.images.expr}",
                        expected=want if want is not None else ">= 1", actual=len(urls),
                    ))
                break
            for ex in trace.touches:
                prof = ctx.profile.op(ex.operation)
                if prof is None or prof.kind != "result" or prof.images is None or not _ok(ex):
                    continue
                if ex.faults:
                    continue
                urls = prof.images.values(ex, ctx.contract)
                want = trace.expected_images
                if not urls or (want is not None and len(urls) != want):
                    out.append(self.deviation(
                        f"the result of {trace.id} carries {len(urls)} image(s)",
                        [ex], path=f"response.body {prof.images.expr}",
                        expected=want if want is not None else ">= 1", actual=len(urls),
                    ))
        return out


class UrlsResolve(Rule):
    info = RuleInfo(
        "provider.urls-resolve", Severity.ERROR, Side.PROVIDER,
        "Every image URL the provider returns resolves to an image; returned links resolve.",
        "conformance.operations.*.images, returns_urls",
    )

    def check(self, ctx: RuleContext) -> list[Deviation]:
        expired_tasks = {
            t.id for t in ctx.tasks().values()
            if t.created is not None and any(f.startswith("expired_url") for f in t.created.faults)
        }
        out = []
        for url, given in ctx.returned_images():
            if given.faults or any(t in given.path for t in expired_tasks):
                continue
            path = urlsplit(url).path
            tries = [e for e in [*ctx.exchanges, *ctx.probes] if e.path == path and e.method == "GET"]
            if not tries:
                continue
            first = tries[0]
            ctype = media_type(first.response_headers)
            if first.status == 200 and ctype.startswith("image/"):
                continue
            late = ctx.contract.behaviour.retention.image_url
            if late is not None and first.provider_time - given.provider_time > late:
                continue  # an expired link is the client's lateness, judged by its own rule
            out.append(self.deviation(
                f"image URL {path} answered HTTP {first.status} ({ctype or 'no content type'})",
                [given, first], path="response.body image url", expected="HTTP 200 image/*",
                actual=f"HTTP {first.status} {ctype}", reproduce=f"curl -sSI {url}",
            ))
        out += self._followed_links(ctx)
        return out

    def _followed_links(self, ctx: RuleContext) -> list[Deviation]:
        """Returned links (status_url...) the client followed must not be unknown paths."""
        out = []
        for i, ex in enumerate(ctx.api):
            prof = ctx.profile.op(ex.operation)
            if prof is None or not prof.returns_urls or not _ok(ex) or ex.faults:
                continue
            for sel in prof.returns_urls:
                for url in sel.values(ex, ctx.contract):
                    path = urlsplit(str(url)).path
                    used = next((e for e in ctx.api[i + 1 :] if e.path == path), None)
                    if used is not None and used.status == 404 and not used.faults:
                        out.append(self.deviation(
                            f"the returned link {path} answered 404", [ex, used],
                            path=f"response.body {sel}", expected="a link that resolves",
                            actual="HTTP 404", reproduce=ctx.repro(used),
                        ))
        return out


class LatencyBudget(Rule):
    info = RuleInfo(
        "provider.latency", Severity.WARNING, Side.PROVIDER,
        "Each operation answers within the contract's latency budget (headers, not streams).",
        "latency_budget",
    )

    def applies(self, ctx: RuleContext) -> bool:
        return bool(ctx.contract.behaviour.latency_budget)

    def check(self, ctx: RuleContext) -> list[Deviation]:
        budget = ctx.contract.behaviour.latency_budget
        out = []
        for ex in ctx.api:
            limit = budget.get(ex.operation or "")
            if limit is None or ex.duration_ms is None or ex.faults:
                continue
            if media_type(ex.response_headers) in STREAM_MEDIA:
                continue
            seconds = ex.duration_ms / 1000
            if seconds > limit:
                out.append(self.deviation(
                    f"{ex.operation} took {seconds:.2f} s; the budget is {limit:g} s",
                    [ex], path="timing.duration", expected=f"<= {limit:g} s", actual=f"{seconds:.2f} s",
                    reproduce=ctx.repro(ex),
                ))
        return out


class MockCrash(Rule):
    info = RuleInfo(
        "provider.mock-crash", Severity.CRITICAL, Side.PROVIDER,
        "The mock's handler never crashes (a crash is a mock bug, reported with its traceback).",
    )

    def check(self, ctx: RuleContext) -> list[Deviation]:
        return [
            self.deviation(
                f"the mock crashed answering {ex.method} {ex.path}", [ex], path="mock",
                expected="an answer", actual=(ex.error or "").strip().splitlines()[-1:],
                reproduce=ctx.repro(ex),
            )
            for ex in ctx.exchanges if ex.error and "Traceback" in ex.error
        ]


RULES: tuple[Rule, ...] = (
    PollInterval(), StopsAtTerminal(), HonoursRetryAfter(), FollowsReturnedUrls(), NoBlindRetry(),
    AuthScheme(), RetriesTransient(), DownloadsBeforeExpiry(), SurfacesFailure(), ReadsStream(),
    LegalTransitions(), SuccessHasImages(), UrlsResolve(), LatencyBudget(), MockCrash(),
)

#: Checks that are not behaviour rules but report deviations the same way.
OTHER_CHECKS: tuple[RuleInfo, ...] = (
    RuleInfo("schema.request", Severity.ERROR, Side.CLIENT,
             "Request bodies match the operation's OpenAPI schema.", "openapi.yaml"),
    RuleInfo("schema.endpoint", Severity.ERROR, Side.CLIENT,
             "Every request addresses an operation of the contract.", "openapi.yaml paths"),
    RuleInfo("schema.response", Severity.ERROR, Side.PROVIDER,
             "Response bodies and stream events match the operation's OpenAPI schema.", "openapi.yaml"),
    RuleInfo("schema.status", Severity.WARNING, Side.PROVIDER,
             "Every answered status is documented for the operation.", "openapi.yaml responses"),
    RuleInfo("scenario.outcome", Severity.ERROR, Side.CLIENT,
             "The client ends as the scenario says: N images of WxH, an error, or giving up.",
             "scenarios.yaml expect"),
    RuleInfo("scenario.deadline", Severity.ERROR, Side.CLIENT,
             "The client ends within the scenario's deadline (provider seconds).",
             "scenarios.yaml expect.within_seconds"),
)


def rule_catalogue() -> dict[str, RuleInfo]:
    """Every check the harness makes, by id."""
    return {**{i.id: i for i in OTHER_CHECKS}, **{r.info.id: r.info for r in RULES}}


def applicable_rules(contract: Contract, ctx: RuleContext | None = None) -> list[Rule]:
    ctx = ctx or RuleContext(contract, [])
    return [r for r in RULES if r.applies(ctx)]


def check_rules(ctx: RuleContext, only: Iterable[str] | None = None) -> list[Deviation]:
    """Run every applicable rule (or those in ``only``) over one run's exchanges."""
    wanted = set(only) if only is not None else None
    out: list[Deviation] = []
    for rule in RULES:
        if wanted is not None and rule.info.id not in wanted:
            continue
        if rule.applies(ctx):
            out += rule.check(ctx)
    return out

