from __future__ import annotations

import asyncio
import hashlib
import json as _json
import os
import random
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from imagegen_conformance import contracts
from imagegen_conformance.contracts import Contract, ContractError

from ._admin import handle_admin
from ._body import Body, CheckedBodies, FormPart, body_kinds, read_multipart
from ._clock import Clock, make_clock
from ._deliver import Deliverer
from ._faults import (
    STAGES,
    FaultError,
    FaultNotApplicable,
    FaultPlan,
    FaultSpec,
    check_applicable,
    parse_faults,
    select_header,
)
from ._http import MockRequest, MockResponse
from ._images import ImageSpec, ImageTokenError, ImageTokens, render
from ._journal import EVENT_LIMIT, Exchange, Journal, body_text, key_fingerprint
from ._links import LinkSigner
from ._provider import Provider, Route, provider_class
from ._ratelimit import RateLimiter
from ._redact import redact_headers, redact_query, redact_text
from ._shelf import Counter, Shelf
from ._tasks import MemoryTaskStore, StoreFull, Task, TaskStore, new_task

if TYPE_CHECKING:
    from ._shared import Shared

__all__ = ["ADMIN_PREFIX", "AdminHandler", "Call", "MockServer", "Observer", "signing_key"]

ADMIN_PREFIX = "/__mock/"
FAULT_HEADER = "X-Mock-Fault"
SCENARIO_HEADER = "X-Mock-Scenario"
LIFECYCLES = ("time", "polls")
#: Finished tasks' answers kept by :meth:`Call.answer_once` (the oldest is dropped first).
ANSWERS_KEPT = 4096
_NO_NAMES: frozenset[str] = frozenset()
#: Credentials whose journal fingerprint is kept (see MockServer._key_id).
FINGERPRINTS_KEPT = 1024
#: Fault stages that travel with the task a request creates (to its links and deliveries).
CARRIED = frozenset({"task", "link", "delivery"})

#: Called with each exchange once it is complete (a stream: once its last chunk has passed).
Observer = Callable[[Exchange], None]
#: An extra admin endpoint: the request in, the answer out (see MockServer.add_admin_route).
AdminHandler = Callable[[MockRequest], Awaitable[MockResponse]]


class Call:
    """What a handler gets besides the request: the server's state and this request's faults."""

    __slots__ = ("checked", "faults", "request", "route", "server")

    def __init__(self, server: MockServer, request: MockRequest, route: Route | None,
                 faults: list[FaultSpec], checked: Body | None = None) -> None:
        self.server = server
        self.request = request
        self.route = route
        self.faults = faults
        #: What the engine made of the request body (parsed, normalised, validated).
        self.checked = checked

    @property
    def now(self) -> float:
        return self.server.clock.now()

    @property
    def tasks(self) -> TaskStore:
        return self.server.tasks

    @property
    def rng(self) -> random.Random:
        return self.server.rng

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body, parsed and accepted by the provider's :meth:`~Provider.refuse`."""
        if self.checked is None or self.checked.data is None:
            raise RuntimeError("this route's operation takes no JSON body (or it was not parsed)")
        return self.checked.data

    @property
    def parts(self) -> list[FormPart]:
        """The parts of a multipart/form-data body."""
        return [] if self.checked is None else self.checked.parts

    def fault(self, name: str) -> FaultSpec | None:
        """The fault ``name`` if it fires for this request (the engine applies them; a
        provider reads one only for what is its own, such as how a stream fails)."""
        for spec in self.faults:
            if spec.name == name:
                return spec
        return None

    def new_task(
        self,
        data: dict[str, Any],
        *,
        task_id: str | None = None,
        phases: Sequence[tuple[str, float]] | None = None,
        polls: Sequence[int | float] | None = None,
        work: int | None = None,
        mode: str | None = None,
        keep: bool = True,
    ) -> Task:
        """Create (and store, unless ``keep=False``) a task, with this request's task faults.

        The timeline follows the contract's lifecycle, or ``phases`` ((state, provider
        seconds), with ``polls`` per phase for ``--lifecycle polls``). ``task_fail`` ends it
        in the failure state after phase ``work`` (default: the last), ``never_finish`` keeps
        it in that phase forever; its link and delivery faults travel with it. ``mode``
        overrides the server's lifecycle mode (a run whose answer waits on the clock).
        Raises :class:`StoreFull` when the store is full; the engine answers ``overloaded``.
        """
        lifecycle = self.server.contract.behaviour.lifecycle
        if lifecycle is None and phases is None:
            raise ContractError(f"{self.server.provider_id} declares no lifecycle")
        fail = self.fault("task_fail")
        task = new_task(
            lifecycle,
            now=self.now,
            rng=self.rng,
            mode=mode or self.server.lifecycle,
            fail=False if fail is None else (fail.arg or True),
            never_finish=self.fault("never_finish") is not None,
            phases=phases,
            polls=polls,
            work=work,
            faults=tuple(f for f in self.faults if STAGES[f.name] in CARRIED),
            task_id=task_id,
            data=data,
        )
        if keep:
            self.server.tasks.add(task)
        return task

    def answer_once(self, task: Task, make: Callable[[], MockResponse]) -> MockResponse:
        """A finished task's answer: made on its first poll, the same bytes on every poll after.

        For answers that can no longer change (the task is terminal and its links do not expire
        with the clock); the handler still counts the poll. Made afresh while a fault applies to
        this request or travels with the task, so a fault always shows; forgotten on reset and
        when the task is (its id is never reused). Drift applies on top, as to any answer.
        """
        if self.faults or task.faults:
            return make()
        request = self.request
        query = tuple(sorted(request.query.items())) if request.query else ()
        key = (task.id, request.role, request.base_url, request.path, query)
        answers = self.server.answers
        kept = answers.get(key)
        if kept is None:
            response = make()
            if response.is_stream or response.action != "respond":
                return response
            body = bytes(response.body)  # type: ignore[arg-type]
            # What the journal stores of it too: one string for every poll's entry.
            text = body_text(body, response.headers.get("Content-Type"))
            kept = (response.status, tuple(response.headers.items()), body, text)
            if len(answers) >= ANSWERS_KEPT:
                del answers[next(iter(answers))]  # the oldest
            answers[key] = kept
        status, headers, body, text = kept
        answer = MockResponse(status, dict(headers), body)
        answer.journal_text = (body, answer.headers.get("Content-Type"), text)
        return answer

    async def flush(self) -> None:
        """Write what this request changed so far to a shared store (nothing to do in memory).

        For a handler about to wait long for its answer (a blocking run): the other workers
        find its task meanwhile, to show, stop or count it.
        """
        if self.server.shared is not None:
            await self.server.shared.flush()

    def link_times(self, task: Task | None = None) -> tuple[float, float | None]:
        """(issued, expires) for a link made now: see :meth:`MockServer.link_times`."""
        return self.server.link_times(task=task, faults=self.faults)

    def image_url(self, spec: ImageSpec, *, task: Task | None = None) -> str:
        """A link to a placeholder image the mock serves (engine route, provider's prefix)."""
        return self.server.image_url(spec, self.request.base_url, task=task, faults=self.faults)


def signing_key(secret: str | bytes | None) -> bytes:
    """The key that signs image tokens and file links: 32 random bytes unless a secret is given.

    Never derived from ``seed`` or any other public input: a seed is in the command line, the
    scenario and the report, and a key made from it let anyone forge a link of any lifetime.
    A given secret (``serve --signing-secret``, ``IMAGEGEN_SIGNING_SECRET``) makes links valid
    across restarts and processes sharing it.
    """
    if secret is None:
        return os.urandom(32)
    raw = secret.encode() if isinstance(secret, str) else secret
    if not raw:
        raise ValueError("the signing secret is empty; omit it for a random one")
    return hashlib.sha256(b"imagegen-conformance signing key\x00" + raw).digest()


async def _drop_body(response: MockResponse) -> None:
    """A HEAD answer: the status and headers of the GET answer, and its length, without body."""
    body = response.body
    if isinstance(body, bytes | bytearray):
        if body and not any(k.lower() == "content-length" for k in response.headers):
            response.headers["Content-Length"] = str(len(body))
        response.body = b""
        return
    aclose = getattr(body, "aclose", None)  # a stream is never started
    if aclose is not None:
        await aclose()
    response.body = b""
    if response.on_close is not None:
        response.on_close()
        response.on_close = None


class MockServer:
    """One provider's simulator: its clock, tasks, faults, journal, and dispatch.

    Transport-neutral: the aiohttp adapter and the respx router both call :meth:`dispatch`.
    ``seed`` makes ids, durations, images and probabilistic faults repeat; link signatures stay
    random per server unless ``signing_secret`` is given.

    >>> server = MockServer("cloudsway", clock="manual", seed=1)
    """

    def __init__(
        self,
        provider: str,
        *,
        clock: Clock | str | None = None,
        time_scale: float = 1.0,
        seed: int | None = None,
        lifecycle: str = "time",
        api_keys: Iterable[str] = (),
        faults: Iterable[str | FaultSpec] = (),
        options: Mapping[str, str] | None = None,
        rate_limit: str | None = None,
        journal_size: int = 10_000,
        max_tasks: int | None = None,
        public_url: str | None = None,
        admin_token: str | None = None,
        allow_hosts: Iterable[str] = (),
        store: TaskStore | None = None,
        signing_secret: str | bytes | None = None,
    ) -> None:
        self.contract: Contract = contracts.load(provider)
        self.provider_id = self.contract.provider
        behaviour = self.contract.behaviour
        #: The name the mock was asked for: the provider id, or one of its contract's aliases.
        self.name = provider.strip().lower()
        #: What the contract's ``aliases.<name>`` section changes for this alias ({} otherwise):
        #: option defaults, hosts, and provider data read through ``Provider.setting()``.
        self.variant: dict[str, Any] = behaviour.variant(self.name)
        if isinstance(clock, str) or clock is None:
            kind = clock or ("scaled" if time_scale != 1.0 else "real")
            clock = make_clock(kind, time_scale)
        self.clock: Clock = clock
        if lifecycle not in LIFECYCLES:
            raise ValueError(f"unknown lifecycle {lifecycle!r}; valid: {', '.join(LIFECYCLES)}")
        self.lifecycle = lifecycle
        self.seed = seed
        self.rng = random.Random(seed)
        self.secret = signing_key(signing_secret)
        self.images = ImageTokens(self.secret)
        self.signer = LinkSigner(self.secret)  # a provider's own signed links (Dify, yunyx)
        self.api_keys = frozenset(api_keys)
        self.options = self._options(options or {})
        limits = behaviour.limits
        self.max_body = int(limits.get("max_body_bytes", 1_048_576))
        self.tasks: TaskStore = store or MemoryTaskStore(
            self.clock,
            retention=behaviour.retention.task,
            max_tasks=max_tasks or int(limits.get("max_tasks", 100_000)),
        )
        self.journal = Journal(journal_size)
        self._fingerprints: dict[str, str | None] = {}  # credential header -> key_fingerprint()
        self._fingerprinted_with = self.secret
        #: (task id, role, base URL, path, query) -> (status, headers, body) of a finished task's answer.
        self.answers: dict[tuple[Any, ...], tuple[int, tuple[tuple[str, str], ...], bytes, str | None]] = {}
        run_faults = [f if isinstance(f, FaultSpec) else FaultSpec.parse(f) for f in faults]
        self.check_faults(run_faults, "a run fault (--fault)")
        self.faults = FaultPlan(run_faults)
        self.rate_limiter = self._rate_limiter(rate_limit)
        self.public_url = public_url.rstrip("/") if public_url else None
        self.admin_token = admin_token
        self.allow_hosts = frozenset(allow_hosts)
        self.shelves: dict[str, Shelf] = {}  # a provider's records beside its tasks (shelf())
        self.counters: dict[str, Counter] = {}  # a provider's numberings (counter())
        self.provider: Provider = provider_class(self.provider_id)(self)
        self.routes = self.provider.routes()
        self.body_kinds = body_kinds(self.contract)  # operationId -> "json" | "multipart"
        self.bodies = CheckedBodies()
        # The first role is the primary host: the one `serve` prints and the default for requests.
        self.roles = tuple(dict.fromkeys([*behaviour.hosts, *(r.role for r in self.routes)])) or ("api",)
        self._image_prefix = self.provider.image_prefix
        self.background: set[asyncio.Task[Any]] = set()
        self.deliveries = Deliverer(self)
        self.errors: list[str] = []  # handler crashes, newest last; surfaced by tests and reports
        self.shared: Shared | None = None  # set by share(): the state lives in Redis (_shared.py)
        self._observers: list[Observer] = []
        self._reset_hooks: list[Callable[[], None]] = []
        self.admin_routes: dict[tuple[str, str], tuple[AdminHandler, str]] = {}

    # --- extension points (the harness builds on these; the engine knows nothing of it) ---

    def observe(self, on_exchange: Observer, *, on_reset: Callable[[], None] | None = None) -> None:
        """Call ``on_exchange`` with every exchange once it is complete, in the server's loop.

        ``on_reset`` runs when the mock is reset (``POST /__mock/reset``). An observer that
        raises is recorded in :attr:`errors`, like a handler crash; the answer is not affected.
        """
        self._observers.append(on_exchange)
        if on_reset is not None:
            self._reset_hooks.append(on_reset)

    def add_admin_route(self, method: str, path: str, handler: AdminHandler, doc: str = "") -> None:
        """Serve ``method /__mock/<path>`` with ``handler`` (listed at ``GET /__mock/``)."""
        self.admin_routes[(method.upper(), "/" + path.strip("/"))] = (handler, doc)

    def _completed(self, exchange: Exchange) -> None:
        for observer in self._observers:
            try:
                observer(exchange)
            except Exception as exc:  # a bug in an observer must surface, not vanish
                self.errors.append(f"observer {observer!r} failed on #{exchange.seq}: {exc!r}")

    # --- configuration -------------------------------------------------------------------

    def _options(self, given: Mapping[str, str]) -> dict[str, str]:
        declared = self.contract.behaviour.options
        out = {name: opt.default for name, opt in declared.items()}
        # An alias's own defaults (the contract checked their names and values when it loaded).
        out.update({name: str(value) for name, value in (self.variant.get("options") or {}).items()})
        for name, value in given.items():
            name = name.split(".", 1)[1] if name.startswith(self.provider_id + ".") else name
            if name not in declared:
                known = ", ".join(declared) or "none"
                raise ValueError(f"{self.provider_id} has no option {name!r}; options: {known}")
            if str(value) not in declared[name].choices:
                raise ValueError(
                    f"{self.provider_id} option {name}={value!r}: valid values are "
                    + ", ".join(declared[name].choices)
                )
            out[name] = str(value)
        return out

    def option(self, name: str) -> str:
        return self.options[name]

    def check_faults(self, specs: Iterable[FaultSpec], where: str) -> None:
        """Refuse faults the contract lists under ``faults.not_applicable`` (FaultNotApplicable)."""
        check_applicable(specs, self.provider_id, self.contract.behaviour.not_applicable, where)

    def add_fault(self, spec: FaultSpec) -> None:
        """Add a run fault (the admin API), refused when it does not apply to this provider."""
        self.check_faults([spec], "POST /__mock/faults")
        self.faults.add(spec)

    # --- links -----------------------------------------------------------------------------

    def shelf(self, name: str, *, limit: int, budget: int | None = None,
              encode: Callable[[Any], Any] | None = None,
              decode: Callable[[Any], Any] | None = None) -> Shelf:
        """A provider's records beside its tasks, by a key of their own (see :class:`Shelf`).

        Bounded in memory; with a shared store every worker finds them (the records a request
        needs are named by :meth:`Provider.shelf_keys`).
        """
        made = Shelf(name, limit=limit, budget=budget, encode=encode, decode=decode)
        self.shelves[name] = made
        return made

    def counter(self, name: str) -> Counter:
        """A numbering of the whole mock, 1, 2, 3... (see :class:`Counter`); reset with the mock."""
        made = self.counters[name] = Counter(name)
        return made

    def use_secret(self, key: bytes) -> None:
        """Sign image tokens, file links and webhooks with ``key`` from now on.

        A shared store hands every worker the mock's one key (the first worker's, or the
        ``--signing-secret`` given); keys the provider derives from it follow (fal's JWKS).
        """
        self.secret = key
        self.images = ImageTokens(key)
        self.signer = LinkSigner(key)
        self.provider.on_secret()

    def link_times(
        self, *, task: Task | None = None, faults: Iterable[FaultSpec] = ()
    ) -> tuple[float, float | None]:
        """(issued, expires) in provider time for an image or file link made now.

        A link lives the provider's :meth:`~Provider.link_lifetime` (None: forever). With the
        ``expired_url`` fault (on this request, or on the one that created ``task``) it was
        issued one lifetime and a second ago, so it has just expired, whatever the lifetime.
        """
        now = self.clock.now()
        lifetime = self.provider.link_lifetime()
        carried = task.faults if task is not None else ()
        if any(f.name == "expired_url" for f in (*faults, *carried)):
            issued = now - (lifetime or 0.0) - 1
            return issued, now - 1
        return now, None if lifetime is None else now + lifetime

    def image_url(
        self, spec: ImageSpec, base_url: str, *, task: Task | None = None,
        faults: Iterable[FaultSpec] = (),
    ) -> str:
        """A link under the engine's image route (the provider's ``image_prefix``)."""
        prefix = self.provider.image_prefix
        if prefix is None:
            raise RuntimeError(f"{self.provider_id} serves its own image routes")
        _, expires = self.link_times(task=task, faults=faults)
        token = self.images.issue(spec, expires_at=expires)
        return f"{base_url}{prefix}{token}{spec.extension}"

    def _rate_limiter(self, spec: str | None) -> RateLimiter | None:
        if spec in (None, "", "off"):
            return None
        if spec == "contract":
            rl = self.contract.behaviour.limits.get("rate_limit")
            if not rl:
                raise ValueError(f"{self.provider_id}'s contract declares no rate limit")
            return RateLimiter(self.clock, int(rl["requests"]), float(rl["per_seconds"]))
        assert spec is not None
        return RateLimiter.parse(self.clock, spec)

    def reset(self) -> None:
        """Forget tasks, journal, run faults and rate-limit state; keep the configuration."""
        self.tasks.clear()
        self.answers.clear()
        self.bodies.clear()
        self.journal.clear()
        self.faults.clear()
        self.errors.clear()
        self.deliveries.clear()
        for shelf in self.shelves.values():
            shelf.clear()
        for counter in self.counters.values():
            counter.reset()
        if self.rate_limiter:
            self.rate_limiter.reset()
        self.provider.on_reset()
        for hook in self._reset_hooks:
            hook()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a background job (a webhook delivery) that :meth:`aclose` waits for or cancels."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def aclose(self) -> None:
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        await self.deliveries.aclose()
        if self.shared is not None:
            await self.shared.aclose()

    # --- dispatch ------------------------------------------------------------------------

    def match(self, request: MockRequest) -> tuple[Route | None, bool]:
        """The route for a request, and whether some route had the path but not the method.

        HEAD takes a GET route when the provider declares no HEAD route of its own: the
        providers' frameworks (Flask/werkzeug, Starlette, ...) answer HEAD as GET, without body.
        """
        path_matched = False
        as_get: Route | None = None
        for route in self.routes:
            if route.role != request.role:
                continue
            m = route.regex.match(request.path)
            if m is None:
                continue
            if route.method != request.method:
                if request.method == "HEAD" and route.method == "GET" and as_get is None:
                    as_get, params = route, m.groupdict()
                path_matched = True
                continue
            request.params = m.groupdict()
            return route, False
        if as_get is not None:
            request.params = params
            return as_get, False
        return None, path_matched

    def dispatch(self, request: MockRequest) -> Coroutine[Any, Any, MockResponse]:
        """Answer one request exactly as the provider would, faults and all (await it).

        A plain method handing back the coroutine that answers: no coroutine of its own
        wrapped around it on every request.
        """
        if self.shared is not None:
            # Load what the request needs from the shared store, write back what it changed.
            return self.shared.dispatch(request, self._dispatch)
        return self._dispatch(request)

    async def _dispatch(self, request: MockRequest) -> MockResponse:
        if self.public_url and request.role == self.roles[0]:
            # The public URL names the primary host; other hosts (fal's sync host) keep theirs.
            request.base_url = self.public_url
        if request.path.startswith(ADMIN_PREFIX):
            return await handle_admin(self, request)
        started = time.perf_counter()
        route, wrong_method = self.match(request)
        operation = route.operation if route else None
        if route is None and self._image_prefix and request.path.startswith(self._image_prefix):
            operation = "downloadImage"
        exchange = Exchange(
            seq=self.journal.next_seq(),
            provider=self.provider_id,
            role=request.role,
            operation=operation,
            method=request.method,
            path=request.path,
            query=redact_query(request.query.items()),
            request_headers=redact_headers(request.headers),
            request_body=redact_text(body_text(request.body, request.headers.get("Content-Type"))),
            started_at=time.time(),
            provider_time=self.clock.now(),
            key_id=self._key_id(request),
        )
        try:
            faults = self._faults_for(request, operation)
        except FaultNotApplicable as exc:
            # Understood but meaningless here: the provider's own 400, with the reason.
            response = self.provider.error(request, 400, message=str(exc))
            response.headers["X-Mock-Error"] = "fault-not-applicable"
            faults = []
        except (FaultError, ContractError) as exc:
            # A bad X-Mock-Fault header is the test author's mistake: say so plainly.
            response = MockResponse.json({"mock_error": str(exc)}, 400, {"X-Mock-Error": "bad-fault"})
            faults = []
        else:
            if faults:
                exchange.faults = [str(f) for f in faults]
            try:
                if wrong_method and not faults and request.method == "OPTIONS":
                    response = self.provider.options(request, self._allowed(request))
                elif wrong_method and not faults:
                    response = self.provider.method_not_allowed(request, self._allowed(request))
                else:
                    response = await self._answer(request, route, operation, faults)
            except asyncio.CancelledError:
                # The client went away before the answer: the exchange is still recorded.
                exchange.error = "client disconnected before the answer"
                exchange.duration_ms = (time.perf_counter() - started) * 1000
                exchange.complete = True
                self.journal.append(exchange)
                self._completed(exchange)
                raise
            except Exception as exc:  # a handler crash is a mock bug: record it, answer, surface it
                if self.shared is not None and isinstance(exc, self.shared.outage):
                    raise  # the shared store is down, not the mock: it answers the provider's 503
                exchange.error = traceback.format_exc()
                self.errors.append(f"{request.method} {request.path}: {exc!r}")
                response = self.provider.error(request, 500, message="mock handler crashed")
                response.headers["X-Mock-Error"] = "handler-crashed"
        if request.method == "HEAD" and response.action == "respond":
            await _drop_body(response)
        exchange.status = response.status if response.action == "respond" else None
        exchange.response_headers = redact_headers(response.headers)
        if response.is_stream:
            truncate = next((f for f in faults if f.name == "truncate"), None)
            inner = response.body
            assert not isinstance(inner, bytes | bytearray)
            # The provider's iterator is handed over now: the tap runs lazily, after this
            # assignment has replaced response.body with the tap itself.
            response.body = self._tap(
                inner, response, exchange, started,
                None if truncate is None else int(truncate.number(1)),
            )
        else:
            assert isinstance(response.body, bytes | bytearray)
            known = response.journal_text
            ctype = response.headers.get("Content-Type")
            if known is not None and known[0] is response.body and known[1] == ctype:  # unchanged
                exchange.response_body = known[2]
            else:
                exchange.response_body = body_text(bytes(response.body), ctype)
            exchange.duration_ms = (time.perf_counter() - started) * 1000
            exchange.complete = True
        self.journal.append(exchange)
        if exchange.complete:
            self._completed(exchange)
        return response

    def _key_id(self, request: MockRequest) -> str | None:
        auth = self.contract.behaviour.auth
        value = request.headers.get(auth.header)
        if value is None:
            return None
        # An HMAC per request costs more than the rest of the journal entry: each credential's
        # fingerprint is made once (a few clients send a few keys; the cache is bounded).
        if self._fingerprinted_with is not self.secret:  # the key changed (share() sets it)
            self._fingerprints.clear()
            self._fingerprinted_with = self.secret
        known = self._fingerprints.get(value)
        if known is None:
            if len(self._fingerprints) >= FINGERPRINTS_KEPT:
                self._fingerprints.clear()
            known = self._fingerprints[value] = key_fingerprint(self.secret, auth.key_of(value) or value)
        return known

    def _allowed(self, request: MockRequest) -> list[str]:
        return sorted({r.method for r in self.routes
                       if r.role == request.role and r.regex.match(request.path)})

    def _faults_for(self, request: MockRequest, operation: str | None) -> list[FaultSpec]:
        header = request.headers.get(FAULT_HEADER)
        specs: list[FaultSpec] = []
        if header:
            named = parse_faults(header)
            self.check_faults(named, f"the {FAULT_HEADER} header")
            specs = select_header(named, operation, self.rng)
        scenario = request.headers.get(SCENARIO_HEADER)
        if scenario:
            chosen = self.contract.scenario(scenario)
            named = [FaultSpec.parse(f) for f in chosen.faults]
            self.check_faults(named, f"scenario {scenario!r}")
            specs += select_header(named, operation, self.rng)
        if self.faults:
            specs += self.faults.select(operation, self.rng)
        return specs

    async def _answer(
        self, request: MockRequest, route: Route | None, operation: str | None,
        faults: list[FaultSpec],
    ) -> MockResponse:
        provider = self.provider
        for spec in faults:
            if spec.name == "latency":
                await asyncio.sleep(spec.latency_seconds(self.rng))
        names = {f.name for f in faults} if faults else _NO_NAMES
        if "reset" in names:
            return MockResponse.reset()
        if operation == "downloadImage":
            return self._serve_image(request)
        if route is None:
            return provider.not_found(request)
        if "rate_limit" in names:
            spec = next(f for f in faults if f.name == "rate_limit")
            return provider.rate_limited(request, spec.number(1.0))
        if "http" in names:
            status, code = next(f for f in faults if f.name == "http").http_status()
            return provider.error(request, status, code)
        if route.auth:
            denied = self._check_auth(request, operation)
            if denied is not None:
                return denied
        if self.rate_limiter is not None and route.auth:
            # Only the API is rate limited; file downloads (no auth) are not counted.
            key = self.contract.behaviour.auth.key_of(
                request.headers.get(self.contract.behaviour.auth.header)
            )
            wait = self.rate_limiter.check(key or request.peer or "anonymous")
            if wait > 0:
                return provider.rate_limited(request, wait)
        if request.oversized or len(request.body) > self.max_body:
            return provider.too_large(request, self.max_body)
        if request.timed_out:
            return provider.request_timeout(request)
        kind = self.body_kinds.get(route.operation or "")
        checked: Body | None = None
        if kind == "json":
            checked = self.bodies.read(self.provider, self.contract, request, route.operation or "")
        elif kind == "multipart":
            checked = await read_multipart(request, route.operation or "")
        refused = provider.refuse(request, checked) if checked is not None else None
        if refused is not None:
            response = refused
        else:
            handler = getattr(provider, route.handler)
            try:
                response = await handler(request, Call(self, request, route, faults, checked))
            except StoreFull:
                return provider.overloaded(request)
        if "malformed" in names:
            return provider.malformed(request)
        return response

    def _check_auth(self, request: MockRequest, operation: str | None) -> MockResponse | None:
        auth = self.contract.behaviour.auth
        value = request.headers.get(auth.header)
        if not value:
            if operation is not None and self.provider.anonymous_allowed(request, operation):
                return None
            return self.provider.auth_error(request, "missing")
        if not auth.well_formed(value):
            return self.provider.auth_error(request, "scheme")
        if self.api_keys and auth.key_of(value) not in self.api_keys:
            return self.provider.auth_error(request, "invalid")
        return None

    def _serve_image(self, request: MockRequest) -> MockResponse:
        assert self._image_prefix is not None
        name = request.path[len(self._image_prefix) :]
        token = name.rsplit(".", 1)[0]
        if request.method not in ("GET", "HEAD"):
            return self.provider.not_found(request)
        try:
            spec = self.images.open(token, now=self.clock.now())
        except ImageTokenError as exc:
            status = 403 if exc.expired else 404
            return MockResponse.raw(str(exc).encode(), status, "text/plain; charset=utf-8")
        # HEAD too: dispatch drops the body and keeps its length.
        return MockResponse.raw(render(spec), 200, spec.content_type,
                                {"Cache-Control": "public, max-age=3600"})

    async def _tap(
        self, inner: AsyncIterator[bytes], response: MockResponse, exchange: Exchange,
        started: float, limit: int | None,
    ) -> AsyncIterator[bytes]:
        """Copy a stream's chunks into the journal as they pass; honour a truncate fault."""
        sent = 0
        try:
            async for chunk in inner:
                if limit is not None and sent >= limit:
                    break
                sent += 1
                if len(exchange.events) < EVENT_LIMIT:
                    exchange.events.append(chunk.decode("utf-8", errors="replace"))
                yield chunk
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()
            exchange.duration_ms = (time.perf_counter() - started) * 1000
            exchange.complete = True
            if response.on_close is not None:
                response.on_close()
            self._completed(exchange)

    # --- convenience for in-process use --------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        role: str | None = None,
    ) -> MockResponse:
        """Call the mock directly, without any transport (for tests and tools)."""
        hdrs = dict(headers or {})
        if json is not None:
            # The caller's own encoding, NaN and all: a test may send what no mock would write.
            body = _json.dumps(json, ensure_ascii=False).encode()
            hdrs.setdefault("Content-Type", "application/json")
        return await self.dispatch(
            MockRequest.build(
                method, path, query=query, headers=hdrs, body=body, role=role or self.roles[0]
            )
        )

    def base_url_for(self, role: str) -> str | None:
        """The provider's real URL for a role (respx mounts the mock there), the alias's own if it has one."""
        hosts = self.variant.get("hosts") or {}
        return hosts.get(role) or self.contract.behaviour.hosts.get(role)

