"""One mock across workers and hosts: its state shared through Redis (``--store redis://...``).

:func:`share` moves a :class:`MockServer`'s state into Redis: tasks (``_store_redis``), the
journal, the run's faults (``times=N`` counted once across workers), rate-limit buckets,
webhook and callback deliveries (each delivered once), the clock (a manual clock's time, a
scaled clock's origin) and the image/link signing secret. Every worker pointed at the same
Redis and provider answers as one mock. Providers never know: the engine loads what a request
needs before its handler runs and writes back what changed before the answer leaves
(:meth:`Shared.dispatch`).

Keys (namespace ``igc:<provider>:``, so several mocks share one Redis database):

=====================  ============================================================
``task:<id>``, ``tasks``  tasks and their listing (see ``_store_redis``)
``journal``            hash seq -> exchange JSON; ``journal:seq`` the global sequence
``faults``             hash id -> fault spec; ``faults:left`` id -> remaining ``times``
``rl:<key>``           token bucket (tokens, last) per API key, provider time
``deliveries``         hash id -> delivery record; ``deliveries:seq``
``claim:<kind>:<ref>`` who delivers a task's webhook/callback (``SET NX``): only one worker
``clock``              hash: kind, scale, origin (provider, real) or a manual clock's ``now``
``secret``             the signing secret (``SET NX``: the first worker's wins)
``generation``         bumped by a reset, so every worker forgets its local state too
``live``               the store's bound: live tasks by expiry (see ``_store_redis``)
``shelf:<name>:<key>`` a provider's record beside its tasks (``MockServer.shelf``: Dify's
                       tool files, uploads, stop ids), expiring with the task retention
``ended``              pub/sub channel: a task ended early (a stop) or rescheduled (fal's line
                       after a cancel) through one worker, so the others wake or re-arm what
                       waits on it
``q:<name>:*``         a runner queue (fal's, see ``_runners``)
``count:<name>``       a provider's numbering (``MockServer.counter``: Dify's sequence_number)
=====================  ============================================================

When Redis is unreachable a request is answered with the provider's own 503 envelope
(``X-Mock-Error: store-unavailable``) and nothing is cached for later: the next request
that reaches Redis again gets a correct answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ._clock import Clock, ManualClock, ScaledClock
from ._deliver import Deliverer, Delivery, DeliveryPolicy
from ._faults import FaultPlan, FaultSpec
from ._http import MockRequest, MockResponse
from ._journal import Exchange, Journal
from ._ratelimit import RateLimiter
from ._redact import redact_url
from ._runners import SharedRunners
from ._store_redis import SESSION, RedisTaskStore, Session, current, decode_task, encode_task
from ._tasks import Task

if TYPE_CHECKING:
    from ._server import MockServer

__all__ = ["Shared", "StoreUnavailable", "check_store", "share"]

ADMIN_PREFIX = "/__mock/"
STORE_ERROR = "store-unavailable"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class StoreUnavailable(RuntimeError):
    """Redis cannot be reached; the message names the URL (password hidden)."""


def client_for(url: str) -> aioredis.Redis:
    """A client that fails fast (connect 1 s) rather than hanging a request while Redis is away."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"--store {url!r}: expected memory or redis://HOST:PORT/DB")
    # A bounded pool that waits for a free connection: a burst of requests queues for one
    # rather than failing (redis-py's default pool raises "Too many connections").
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=64, timeout=5, socket_timeout=5.0, socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 1), health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


async def check_store(url: str) -> None:
    """Raise :class:`StoreUnavailable` (one line naming the URL) unless Redis answers."""
    client = client_for(url)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(
            f"cannot reach the store at {redact_url(url)}: {exc} "
            "(start one with: redis-server --port 6379, or pass --store memory)"
        ) from None
    finally:
        await client.aclose()


class Keys:
    def __init__(self, provider: str) -> None:
        self.prefix = f"igc:{provider}:"

    def __getattr__(self, name: str) -> str:  # keys.journal -> "igc:fal:journal"
        return self.prefix + name.replace("_", ":")

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def index(self) -> str:
        return self.prefix + "tasks"


# --- Lua: each runs atomically inside Redis, so two workers never both take the last one -----

_JOURNAL_PUSH = """
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], seq, ARGV[1])
local drop = seq - tonumber(ARGV[2])
if drop > 0 then redis.call('HDEL', KEYS[1], drop) end
return seq
"""

# Take one of each counted fault's remaining `times`; 1 per id when taken, 0 when none was left.
_FAULT_TAKE = """
local out = {}
for i, id in ipairs(ARGV) do
  local left = tonumber(redis.call('HGET', KEYS[2], id))
  if left and left > 0 then
    left = redis.call('HINCRBY', KEYS[2], id, -1)
    if left <= 0 then redis.call('HDEL', KEYS[1], id); redis.call('HDEL', KEYS[2], id) end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# Token bucket in provider time: ARGV now, requests, per_seconds. Returns the wait (string).
_BUCKET = """
local cap = tonumber(ARGV[2])
local rate = cap / tonumber(ARGV[3])
local now = tonumber(ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(b[1]) or cap
local last = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(now - last, 0) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'last', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 2 + 60))
return tostring(wait)
"""

# A manual clock moves forward for every worker: never backwards, advances add up.
_CLOCK_ADVANCE = """
local now = tonumber(redis.call('HGET', KEYS[1], 'now') or ARGV[2])
now = now + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'now', tostring(now))
return tostring(now)
"""


class SharedManualClock(ManualClock):
    """A manual clock whose time is Redis's: each request and a 20 ms poll bring it up to date."""

    def advance(self, seconds: float) -> float:
        raise RuntimeError(
            "with a shared store the clock moves through POST /__mock/clock/advance, on any worker"
        )

    def catch_up(self, when: float) -> None:
        if when > self._now:
            ManualClock.advance(self, when - self._now)


class SharedFaultPlan(FaultPlan):
    """Run faults live in Redis; the session takes this request's share before the handler."""

    def __init__(self, shared: Shared) -> None:
        super().__init__([])
        self._shared = shared

    def __bool__(self) -> bool:
        session = current()
        return bool(session is not None and session.extra.get("faults"))

    def select(self, operation: str | None, rng: random.Random) -> list[FaultSpec]:
        session = current()
        if session is None:
            return []
        fired: list[FaultSpec] = session.extra.get("faults", [])
        return list(fired)

    def add(self, spec: FaultSpec) -> None:
        raise RuntimeError("with a shared store, faults are added through POST /__mock/faults")


class SharedRateLimiter(RateLimiter):
    """Buckets in Redis; the verdict for this request was taken when its session began."""

    def check(self, key: str) -> float:
        session = current()
        if session is None:
            return 0.0
        wait: float = session.extra.get("rate_wait", 0.0)
        return wait


class SharedJournal(Journal):
    """Keeps this worker's exchanges (in-process readers) and sends each to Redis with its session."""

    def append(self, exchange: Exchange) -> None:
        super().append(exchange)
        session = current()
        if session is not None:
            session.extra.setdefault("exchanges", []).append(exchange)


class SharedDeliverer(Deliverer):
    """Delivers a task's webhook or callback once across workers, and records it in Redis."""

    def __init__(self, server: MockServer, shared: Shared) -> None:
        super().__init__(server)
        self._shared = shared
        self._claims: dict[int, asyncio.Future[bool]] = {}

    def send(self, kind: str, url: str, payload: Any, *, reference: str, policy: DeliveryPolicy,
             headers: Mapping[str, str] | None = None, faults: Iterable[FaultSpec] = (),
             sign: Callable[[bytes], Mapping[str, str]] | None = None) -> Delivery:
        record = super().send(kind, url, payload, reference=reference, policy=policy,
                              headers=headers, faults=faults, sign=sign)
        if record.status == "refused":
            self._server.spawn(self._refused(record))
        return record

    async def _refused(self, record: Delivery) -> None:
        if await self._claim(record):
            await self._shared.save_delivery(record)

    async def _claim(self, record: Delivery) -> bool:
        """True in the one worker that delivers this record (its copies share the answer)."""
        claim = self._claims.get(record.id)
        if claim is None:
            claim = asyncio.get_running_loop().create_future()
            self._claims[record.id] = claim
            try:
                claim.set_result(await self._shared.claim_delivery(record))
            except BaseException:
                claim.set_result(False)
                raise
        return await claim

    async def _run(self, record: Delivery, url: str, body: bytes, headers: dict[str, str],
                   policy: DeliveryPolicy, delay: float,
                   sign: Callable[[bytes], Mapping[str, str]] | None = None) -> None:
        if not await self._claim(record):
            with self._lock:
                if record in self._records:
                    self._records.remove(record)
            return
        try:
            await super()._run(record, url, body, headers, policy, delay, sign)
        finally:
            await self._shared.save_delivery(record, retry=True)


class Shared:
    """The Redis side of one mock: what :class:`MockServer` uses instead of its memory state."""

    #: What a lost Redis raises inside a handler: the engine lets it through to :meth:`dispatch`
    #: (the provider's 503, the outage logged once), never as a mock crash in ``server.errors``.
    outage: tuple[type[Exception], ...] = (RedisError,)

    def __init__(self, server: MockServer, url: str, client: aioredis.Redis) -> None:
        self.server = server
        self.url = url
        self.client = client
        self.keys = Keys(server.provider_id)
        self._fault_take = client.register_script(_FAULT_TAKE)
        self._bucket = client.register_script(_BUCKET)
        self._clock_advance = client.register_script(_CLOCK_ADVANCE)
        self._generation: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._queues: dict[str, SharedRunners] = {}
        self._down_since: float | None = None
        self._closing = False
        self.journal_size = server.journal._entries.maxlen or 10_000
        self.public_url = redact_url(url)
        self.worker: int | str = os.getpid()  # `serve --workers` numbers them from 1

    def runners(self, name: str = "runners") -> SharedRunners:
        """The runner queue ``name`` of this mock, in Redis (fal's, with ``--workers``)."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = SharedRunners(self.client, f"{self.keys.prefix}q:{name}:")
        return queue

    # --- set-up -------------------------------------------------------------------------

    async def attach(self, run_faults: list[FaultSpec], *, secret_given: bool = False) -> None:
        server, keys, client = self.server, self.keys, self.client
        # The first worker's signing key is the mock's; a key given (--signing-secret) replaces it.
        await client.set(keys.secret, server.secret.hex(), nx=not secret_given)
        secret = await client.get(keys.secret)
        server.use_secret(bytes.fromhex(_text(secret)))  # images, file links, fal's JWKS
        server.clock = await self._shared_clock(server.clock)
        behaviour = server.contract.behaviour
        old = server.tasks
        bound = getattr(server.tasks, "_max", None) or int(behaviour.limits.get("max_tasks", 100_000))
        store = RedisTaskStore(keys, server.clock, retention=behaviour.retention.task,
                               max_tasks=bound,  # counted across every worker
                               encode=server.provider.encode_data, decode=server.provider.decode_data)
        for shelf in server.shelves.values():
            shelf.session = current
        for counter in server.counters.values():
            counter.session, counter.take = current, self._count
        if len(old):
            raise RuntimeError("share() must be called before the mock holds tasks")
        server.tasks = store
        server.journal = SharedJournal(self.journal_size)
        server.faults = SharedFaultPlan(self)
        if server.rate_limiter is not None:
            limiter = server.rate_limiter
            server.rate_limiter = SharedRateLimiter(server.clock, limiter.requests, limiter.per_seconds)
        server.deliveries = SharedDeliverer(server, self)
        # `--fault` given to every worker is the mock's run fault once, not once per worker.
        if run_faults and await client.set(keys.faults_init, "1", nx=True):
            await self.add_faults(run_faults)
        if server.seed is not None:
            # Workers (and restarts) given one --seed must not draw the same task ids.
            boot = await client.incr(keys.boots)
            server.rng.seed(f"{server.seed}/{boot}")
        gen = await client.get(keys.generation)
        self._generation = int(gen or 0)
        self._poller = asyncio.ensure_future(self._poll())
        self._listener = asyncio.ensure_future(self._listen())

    async def _shared_clock(self, clock: Clock) -> Clock:
        key = self.keys.clock
        mine = {"kind": clock.kind, "scale": repr(clock.scale), "provider": repr(clock.now()),
                "real": repr(time.time())}
        if clock.kind == "manual":
            mine["now"] = mine["provider"]
        await self.client.hsetnx(key, "kind", clock.kind)  # the first worker's kind wins
        kind = _text(await self.client.hget(key, "kind"))
        if kind != clock.kind:
            raise ValueError(
                f"the store at {redact_url(self.url)} holds a {self.server.provider_id} mock "
                f"with a {kind} clock; start this one with the same --clock/--time-scale or "
                "use another database (redis://HOST:PORT/DB)"
            )
        for name, value in mine.items():
            await self.client.hsetnx(key, name, value)
        raw = await self.client.hgetall(key)
        got = {_text(k): _text(v) for k, v in raw.items()}
        if float(got["scale"]) != clock.scale:
            raise ValueError(
                f"the store at {redact_url(self.url)} holds a {self.server.provider_id} mock "
                f"at --time-scale {got['scale']}; start this one with the same scale or use another "
                "database"
            )
        if clock.kind == "manual":
            shared = SharedManualClock(float(got["now"]))
            return shared
        # Provider time continues from the first worker's origin, across workers and restarts.
        provider, real = float(got["provider"]), float(got["real"])
        return ScaledClock(clock.scale, start=provider + (time.time() - real) * clock.scale)

    async def _poll(self) -> None:
        """Bring a manual clock up to date and follow resets made through other workers."""
        while not self._closing:
            await asyncio.sleep(0.02)
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.hget(self.keys.clock, "now")
                    pipe.get(self.keys.generation)
                    value, gen = await pipe.execute()
                if isinstance(self.server.clock, SharedManualClock) and value is not None:
                    self.server.clock.catch_up(float(value))
                generation = int(gen or 0)
                if generation != self._generation:
                    self._generation = generation
                    self._local_reset()
                self._recovered()
            except (RedisError, OSError) as exc:
                self._lost(exc)

    async def _listen(self) -> None:
        """Hear of tasks ended early through other workers (pub/sub ``ended``): wake their waiters."""
        while not self._closing:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.ended)
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    try:
                        self._heard_ended(message["data"])
                    except Exception as exc:  # a provider's hook that fails must surface, not stop this
                        self.server.errors.append(f"{self.keys.ended} message: {exc!r}")
            except (RedisError, OSError) as exc:
                self._lost(exc)
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _heard_ended(self, raw: bytes) -> None:
        kind, task_id, *rest = json.loads(raw)
        store = self.server.tasks
        assert isinstance(store, RedisTaskStore)
        task = store._mem._tasks.get(task_id)  # only this worker's own instance, if it has one
        if task is None:
            return
        if kind == "task":  # its timeline moved: take the new one, keep what this worker counted
            fresh = decode_task(rest[0], task.polls, task._terminal_at, self.server.provider.decode_data)
            for name in ("states", "durations", "polls_needed", "data", "ended"):
                setattr(task, name, getattr(fresh, name))
            self.server.provider.on_rescheduled(task)
            return
        if task.ended is None:
            task.ended = (rest[0], float(rest[1]))
        self.server.provider.on_ended(task)

    async def load_tasks(self, ids: list[str]) -> dict[str, Task]:
        """Load more tasks into this request's session (a handler that finds it must change
        others: fal's line after a cancel); they are written back with the request."""
        session = current()
        if session is None:
            raise RuntimeError("load_tasks() is for a handler, inside its request")
        store = self.server.tasks
        assert isinstance(store, RedisTaskStore)
        async with self.client.pipeline(transaction=False) as pipe:
            wanted = store.queue_load(pipe, ids)
            rows = await pipe.execute()
        store.apply_load(session, wanted, rows)
        return {i: session.loaded[i] for i in wanted if i in session.loaded}

    def announce(self, task: Task) -> None:
        """Tell the other workers this request changed ``task``'s timeline (with its answer)."""
        session = current()
        if session is not None and task not in session.changed:
            session.changed.append(task)

    async def aclose(self) -> None:
        self._closing = True  # the poll loop also stops by itself, should a cancel be swallowed
        for job in (self._poller, self._listener):
            if job is not None:
                job.cancel()
                await asyncio.wait([job], timeout=2)
        self._poller = self._listener = None
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.client.aclose(), 2)

    # --- outages ------------------------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            print(f"store: {redact_url(self.url)} unreachable ({exc}); answering 503 until it is "
                  "back", file=sys.stderr, flush=True)

    def _recovered(self) -> None:
        if self._down_since is not None:
            print(f"store: {redact_url(self.url)} is back after "
                  f"{time.monotonic() - self._down_since:.1f} s", file=sys.stderr, flush=True)
            self._down_since = None

    def unavailable(self, request: MockRequest) -> MockResponse:
        response = self.server.provider.error(request, 503, message="service temporarily unavailable")
        response.headers["X-Mock-Error"] = STORE_ERROR
        return response

    # --- one request ----------------------------------------------------------------------

    async def dispatch(
        self, request: MockRequest, inner: Callable[[MockRequest], Awaitable[MockResponse]]
    ) -> MockResponse:
        session = Session()
        try:
            await self._begin(request, session)
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return self.unavailable(request)
        token = SESSION.set(session)
        try:
            response = await inner(request)
        except self.outage as exc:  # a handler's own call to Redis (a counter, a flush, the runners)
            self._lost(exc)
            return self.unavailable(request)
        finally:
            SESSION.reset(token)
            session.closed = True
        try:
            await self._commit(session, response)
        except (RedisError, OSError) as exc:
            # What the handler did is not stored: answering it would name a task no worker knows.
            self._lost(exc)
            return self.unavailable(request)
        self._recovered()
        return response

    def _operation(self, request: MockRequest) -> tuple[Any, str | None]:
        server = self.server
        route, _ = server.match(request)  # fills request.params, as dispatch will again
        prefix = server.provider.image_prefix
        if route is None and prefix and request.path.startswith(prefix):
            return None, "downloadImage"
        return route, None if route is None else route.operation

    async def _begin(self, request: MockRequest, session: Session) -> None:
        server, keys, store = self.server, self.keys, self.server.tasks
        assert isinstance(store, RedisTaskStore)
        admin = request.path.startswith(ADMIN_PREFIX)
        route, operation = (None, None) if admin else self._operation(request)
        ids: list[str] = []
        listing = False
        if admin:
            rest = request.path[len(ADMIN_PREFIX):].rstrip("/")
            if rest == "tasks" or rest == "health":
                listing = rest == "tasks"
            elif rest.startswith("tasks/"):
                ids = [rest[len("tasks/"):]]
        elif route is not None:
            shelved = list(server.provider.shelf_keys(request, route))
            if shelved:  # records first: they may name the task (one more round trip)
                await self._load_shelf(session, shelved)
            wanted = server.provider.task_ids(request, route)
            if wanted is None:
                listing = True
            else:
                ids = list(wanted)
        async with self.client.pipeline(transaction=False) as pipe:
            manual = isinstance(server.clock, SharedManualClock)
            if manual:
                pipe.hget(keys.clock, "now")
            pipe.hgetall(keys.faults)
            if listing:
                store.queue_listing(pipe)
            creates = not admin and request.method not in ("GET", "HEAD")
            if creates:  # a request that may create a task reads the bound's count too
                store.queue_count(pipe)
            wanted_ids = store.queue_load(pipe, ids)
            rows = await pipe.execute()
        if manual:
            now = rows.pop(0)
            assert isinstance(server.clock, SharedManualClock)
            if now is not None:
                server.clock.catch_up(float(now))
        faults = rows.pop(0)
        listed = rows.pop(0) if listing else None
        if creates:
            session.extra["live"] = int(rows.pop(0))
        if listed is not None:
            every = [i.decode() for i in listed]
            async with self.client.pipeline(transaction=False) as pipe:
                every = store.queue_load(pipe, every)
                loaded = await pipe.execute()
            store.listing(every, loaded, session)
            session.removed.update(i for i in every if i not in session.loaded)
        store.apply_load(session, wanted_ids, rows)
        if admin:
            return
        if faults:
            session.extra["faults"] = await self._take_faults(faults, operation)
        if server.rate_limiter is not None and route is not None and route.auth:
            auth = server.contract.behaviour.auth
            key = auth.key_of(request.headers.get(auth.header)) or request.peer or "anonymous"
            limiter = server.rate_limiter
            wait = await self._bucket(keys=[keys.prefix + "rl:" + key],
                                      args=[repr(server.clock.now()), limiter.requests,
                                            repr(limiter.per_seconds)])
            session.extra["rate_wait"] = float(wait)

    async def _load_shelf(self, session: Session, wanted: list[tuple[str, str]]) -> None:
        shelves = self.server.shelves
        wanted = [(name, key) for name, key in wanted if name in shelves]
        if not wanted:
            return
        rows = await self.client.mget([self._shelf_key(name, key) for name, key in wanted])
        for (name, key), raw in zip(wanted, rows, strict=True):
            raw = raw.encode() if isinstance(raw, str) else raw
            session.shelf[(name, key)] = shelves[name].load(key, raw)

    async def _count(self, name: str) -> int:
        return int(await self.client.incr(f"{self.keys.prefix}count:{name}"))

    def _shelf_key(self, name: str, key: str) -> str:
        return f"{self.keys.prefix}shelf:{name}:{key}"

    def _shelf_ttl(self) -> int:
        retention = self.server.contract.behaviour.retention.task or 86400.0
        clock = self.server.clock
        scale = clock.scale if clock.kind != "manual" else 1.0
        return math.ceil(retention / scale) + 60

    async def _take_faults(self, raw: dict[bytes, bytes], operation: str | None) -> list[FaultSpec]:
        rng = self.server.rng
        fired: list[tuple[int, FaultSpec]] = []
        counted: list[tuple[int, FaultSpec]] = []
        for fid, text in sorted(raw.items(), key=lambda kv: int(kv[0])):
            spec = FaultSpec.parse(_text(text))
            if spec.operation is not None and spec.operation != operation:
                continue
            if spec.probability < 1.0 and rng.random() >= spec.probability:
                continue
            (fired if spec.times is None else counted).append((int(fid), spec))
        if counted:
            taken = await self._fault_take(keys=[self.keys.faults, self.keys.faults_left],
                                           args=[str(fid) for fid, _ in counted])
            fired += [item for item, ok in zip(counted, taken, strict=True) if int(ok)]
        return [spec for _, spec in sorted(fired, key=lambda item: item[0])]

    async def _commit(self, session: Session, response: MockResponse) -> None:
        exchanges: list[Exchange] = session.extra.get("exchanges", [])
        async with self.client.pipeline(transaction=False) as pipe:
            self._queue_changes(pipe, session)
            for exchange in exchanges:
                # EVAL, not EVALSHA: a Redis restarted empty has no script cache to miss.
                pipe.eval(_JOURNAL_PUSH, 2, self.keys.journal, self.keys.journal_seq,
                          self._journal_text(exchange), self.journal_size)
            if len(pipe) == 0:
                return
            results = await pipe.execute()
        seqs = results[len(results) - len(exchanges):]
        if response.is_stream:
            for exchange, seq in zip(exchanges, seqs, strict=True):
                self._on_stream_end(response, exchange, int(seq))

    def _queue_changes(self, pipe: Any, session: Session) -> None:
        """Tasks, records and announcements the request made, onto ``pipe``."""
        store = self.server.tasks
        assert isinstance(store, RedisTaskStore)
        store.queue_commit(pipe, session)
        if session.shelved:
            ttl = self._shelf_ttl()
            for name, key, value in session.shelved:
                pipe.set(self._shelf_key(name, key), self.server.shelves[name].dump(value), ex=ttl)
        for task in session.ended:
            assert task.ended is not None
            pipe.publish(self.keys.ended, json.dumps(["ended", task.id, *task.ended]))
        for task in session.changed:
            pipe.publish(self.keys.ended, json.dumps(["task", task.id, encode_task(
                task, self.server.provider.encode_data)]))

    async def flush(self) -> None:
        """Write what this request changed so far, before its answer (``Call.flush``)."""
        session = current()
        if session is None:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            self._queue_changes(pipe, session)
            if len(pipe):
                await pipe.execute()
        session.shelved.clear()
        session.ended.clear()
        session.changed.clear()

    def _journal_text(self, exchange: Exchange) -> str:
        # Exchange.to_dict() (dataclasses.asdict) deep-copies every field; the fields are JSON
        # already (tuples encode as lists), so encode them as they are.
        return json.dumps(vars(exchange), separators=(",", ":"), default=str)

    def _on_stream_end(self, response: MockResponse, exchange: Exchange, seq: int) -> None:
        before = response.on_close

        def closed() -> None:
            if before is not None:
                before()
            self.server.spawn(self._update_exchange(exchange, seq))

        response.on_close = closed

    async def _update_exchange(self, exchange: Exchange, seq: int) -> None:
        try:
            await self.client.hset(self.keys.journal, str(seq), self._journal_text(exchange))
        except (RedisError, OSError) as exc:
            self._lost(exc)

    # --- the admin API's view of the whole mock -------------------------------------------

    async def journal(self, since: int) -> dict[str, Any]:
        last = int(await self.client.get(self.keys.journal_seq) or 0)
        first = max(since, last - self.journal_size) + 1
        seqs = list(range(first, last + 1))
        rows = await self.client.hmget(self.keys.journal, [str(s) for s in seqs]) if seqs else []
        out = []
        for seq, text in zip(seqs, rows, strict=True):
            if text is not None:
                entry = json.loads(text)
                entry["seq"] = seq
                out.append(entry)
        return {"last_seq": last, "exchanges": out}

    async def clear_journal(self) -> None:
        await self.client.delete(self.keys.journal)

    async def faults(self) -> list[dict[str, Any]]:
        raw, left = await asyncio.gather(self.client.hgetall(self.keys.faults),
                                         self.client.hgetall(self.keys.faults_left))
        out = []
        for fid, text in sorted(raw.items(), key=lambda kv: int(kv[0])):
            spec = FaultSpec.parse(_text(text))
            remaining = left.get(fid)
            out.append({**spec.to_dict(), "remaining": None if remaining is None else int(remaining)})
        return out

    async def add_faults(self, specs: list[FaultSpec]) -> None:
        for spec in specs:
            fid = await self.client.incr(self.keys.faults_seq)
            async with self.client.pipeline(transaction=True) as pipe:
                if spec.times is not None:
                    pipe.hset(self.keys.faults_left, str(fid), spec.times)
                pipe.hset(self.keys.faults, str(fid), str(spec))
                await pipe.execute()

    async def clear_faults(self) -> None:
        await self.client.delete(self.keys.faults, self.keys.faults_left)

    async def advance(self, seconds: float) -> float:
        clock = self.server.clock
        if not isinstance(clock, SharedManualClock):
            raise RuntimeError(
                f"the {clock.kind} clock cannot be advanced; start the mock with --clock manual"
            )
        now = float(await self._clock_advance(keys=[self.keys.clock],
                                              args=[repr(seconds), repr(clock.now())]))
        clock.catch_up(now)
        return now

    async def claim_delivery(self, record: Delivery) -> bool:
        key = f"{self.keys.prefix}claim:{record.kind}:{record.reference}"
        ttl = int(self.server.contract.behaviour.retention.task or 86400) + 3600
        for _ in range(50):
            try:
                if not await self.client.set(key, str(os.getpid()), nx=True, ex=ttl):
                    return False
                record.id = int(await self.client.incr(self.keys.deliveries_seq))
                await self.save_delivery(record)
                return True
            except (RedisError, OSError) as exc:
                self._lost(exc)
                await asyncio.sleep(0.2)
        return False

    async def save_delivery(self, record: Delivery, *, retry: bool = False) -> None:
        for _ in range(50 if retry else 1):
            try:
                await self.client.hset(self.keys.deliveries, str(record.id),
                                       json.dumps(record.to_dict()))
                return
            except (RedisError, OSError) as exc:
                self._lost(exc)
                if not retry:
                    raise
                await asyncio.sleep(0.2)

    async def deliveries(self) -> list[dict[str, Any]]:
        raw = await self.client.hgetall(self.keys.deliveries)
        return [json.loads(v) for _, v in sorted(raw.items(), key=lambda kv: int(kv[0]))]

    async def task_count(self) -> int:
        return int(await self.client.zcard(self.keys.index()))

    async def reset(self) -> None:
        """Forget tasks, journal, faults, rate limits and deliveries on every worker."""
        keep = {self.keys.clock, self.keys.secret, self.keys.journal_seq, self.keys.deliveries_seq,
                self.keys.faults_seq, self.keys.generation, self.keys.faults_init, self.keys.boots}
        doomed = [k async for k in self.client.scan_iter(match=self.keys.prefix + "*", count=1000)
                  if k.decode() not in keep]
        for start in range(0, len(doomed), 500):
            await self.client.delete(*doomed[start:start + 500])
        self._generation = int(await self.client.incr(self.keys.generation))
        self._local_reset()

    def _local_reset(self) -> None:
        self.server.reset()  # this worker's own part: identity map, answers, provider state


async def share(server: MockServer, url: str, *, secret_given: bool = False) -> Shared:
    """Put ``server``'s state in the Redis at ``url``; raises :class:`StoreUnavailable`.

    Call it before the mock answers anything, from the event loop that will serve it. The
    signing key already in Redis is used unless ``secret_given`` (the server's was given).

    >>> shared = await share(MockServer("fal"), "redis://127.0.0.1:6379/0")  # doctest: +SKIP
    """
    if not server.provider.shareable:
        raise ValueError(
            f"{server.provider_id} keeps state in its process that a shared store cannot carry; "
            "serve it with --store memory (one worker)"
        )
    await check_store(url)
    shared = Shared(server, url, client_for(url))
    run_faults = [entry.spec for entry in server.faults._entries]
    try:
        await shared.attach(run_faults, secret_given=secret_given)
    except (RedisError, OSError) as exc:
        await shared.aclose()
        raise StoreUnavailable(f"cannot use the store at {redact_url(url)}: {exc}") from None
    except BaseException:
        await shared.aclose()
        raise
    server.shared = shared
    return shared
