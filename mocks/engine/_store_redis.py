"""The shared task store: tasks in Redis, so any worker (any host) answers any task.

Providers read and change tasks synchronously (``call.tasks.get(id)``, ``task.poll(now)``,
``task.end(...)``), as they do with the memory store. The engine brackets every request with
a *session*: before the handler runs it loads the tasks the request names (one pipeline), and
after it writes back what the handler created or changed (one pipeline, with the journal entry),
before the answer leaves. Nothing is read or written per task in the background, and no key
space is ever scanned on the hot path.

Keys, under the mock's namespace ``igc:<provider>:``:

``task:<id>``   hash: ``t`` the timeline and data as JSON, ``polls`` the poll count (``HINCRBY``
                so that two workers polling one task both count), ``tat`` when a poll-driven task
                reached its terminal state (``HSETNX``). Expires with the contract's retention.
``tasks``       sorted set id -> created_at: the listing (admin API, AceData's task list).
``live``        sorted set id -> when (provider time) the task's key expires: the store's bound.
                ``ZCOUNT`` of the entries not yet expired is the number of live tasks, read in
                the same round trip as the rest of a request that may create one; expired
                entries are trimmed as tasks are added (``ZREMRANGEBYSCORE``), never scanned.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ._clock import Clock
from ._faults import FaultSpec
from ._tasks import MemoryTaskStore, StoreFull, Task

__all__ = ["RedisTaskStore", "Session", "decode_task", "encode_task"]

# Live tasks at the provider time: a manual clock's shared `now`, else this worker's.
_LIVE_COUNT = """
local now = redis.call('HGET', KEYS[2], 'now') or ARGV[1]
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""

#: The request being answered, if any; background jobs see a closed one.
SESSION: ContextVar[Session | None] = ContextVar("imagegen_store_session", default=None)


@dataclass
class Session:
    """What one request loaded and changed; written back before its answer leaves."""

    loaded: dict[str, Task] = field(default_factory=dict)
    touched: dict[str, Task] = field(default_factory=dict)
    added: dict[str, Task] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    listing: list[Task] | None = None  # every task, when the request lists them
    closed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # faults fired, rate-limit verdicts
    shelf: dict[tuple[str, str], Any] = field(default_factory=dict)  # records loaded (None: absent)
    shelved: list[tuple[str, str, Any]] = field(default_factory=list)  # records written
    ended: list[Task] = field(default_factory=list)  # tasks this request ended early
    changed: list[Task] = field(default_factory=list)  # tasks whose timeline it moved (announce)


def current() -> Session | None:
    session = SESSION.get()
    return None if session is None or session.closed else session


def _same(data: dict[str, Any]) -> dict[str, Any]:
    return data


def encode_task(task: Task, encode: Callable[[dict[str, Any]], dict[str, Any]] = _same) -> str:
    """The task without its poll count (kept apart, as a counter); ``encode``: its data as JSON."""
    return json.dumps([
        task.id, task.created_at, task.states, task.durations, task.polls_needed, task.final,
        task.terminal, task.mode, encode(task.data), task.ended, [str(f) for f in task.faults],
        task.failure,
    ], separators=(",", ":"))


def decode_task(text: str | bytes, polls: int, terminal_at: float | None,
                decode: Callable[[dict[str, Any]], dict[str, Any]] = _same) -> Task:
    (task_id, created_at, states, durations, polls_needed, final, terminal, mode, data,
     ended, faults, failure) = json.loads(text)
    task = Task(task_id, created_at, tuple(states), tuple(durations), tuple(polls_needed), final,
                tuple(terminal), mode, decode(data), faults=tuple(FaultSpec.parse(f) for f in faults),
                failure=failure)
    task.ended = None if ended is None else (ended[0], ended[1])
    task.polls = polls
    task._terminal_at = terminal_at
    return task


def _refresh(into: Task, fresh: Task) -> None:
    """Make a worker's instance of a task what Redis holds (identity kept: providers hold it)."""
    for name in Task.__slots__:
        setattr(into, name, getattr(fresh, name))


class RedisTaskStore:
    """:class:`TaskStore` over Redis, with the worker's own instances as an identity map.

    The identity map is a :class:`MemoryTaskStore` (bounded, expiring with retention): a
    provider that keeps its own references to tasks (fal's queue) sees them refreshed in place
    whenever a request loads them.
    """

    def __init__(self, keys: Any, clock: Clock, *, retention: float | None, max_tasks: int,
                 encode: Callable[[dict[str, Any]], dict[str, Any]] = _same,
                 decode: Callable[[dict[str, Any]], dict[str, Any]] = _same) -> None:
        self._keys = keys
        self._encode = encode  # the provider's encode_data / decode_data
        self._decode = decode
        self._clock = clock
        self._retention = retention
        self._max = max_tasks
        # The worker's own instances: a cache that never refuses (the bound is Redis's count).
        self._mem = MemoryTaskStore(clock, retention=retention, max_tasks=max_tasks)
        # id -> (JSON, polls, ended, terminal_at) as Redis last had them
        self._synced: dict[str, tuple[str, int, tuple[str, float] | None, float | None]] = {}

    def set_clock(self, clock: Clock) -> None:
        self._clock = clock
        self._mem._clock = clock

    # --- TaskStore, as providers use it ----------------------------------------------------

    def add(self, task: Task) -> None:
        session = current()
        if session is not None:
            live = session.extra.get("live")
            if live is not None and live + len(session.added) >= self._max:
                raise StoreFull(f"the mock holds its maximum of {self._max} tasks")
            session.added[task.id] = task
            session.removed.discard(task.id)
        with contextlib.suppress(StoreFull):  # a full identity map only caches less
            self._mem.add(task)

    def get(self, task_id: str) -> Task | None:
        session = current()
        if session is not None:
            if task_id in session.removed:
                return None
            task = session.loaded.get(task_id) or session.added.get(task_id)
            if task is not None:
                session.touched[task_id] = task
                return task
        task = self._mem.get(task_id)
        if task is not None and session is not None:
            session.touched[task_id] = task
        return task

    def remove(self, task_id: str) -> None:
        self._mem.remove(task_id)
        session = current()
        if session is not None:
            session.removed.add(task_id)
            session.added.pop(task_id, None)
            session.touched.pop(task_id, None)

    def clear(self) -> None:
        self._mem.clear()
        self._synced.clear()

    def __len__(self) -> int:
        session = current()
        if session is not None and session.listing is not None:
            return len(session.listing)
        return len(self._mem)

    def __iter__(self) -> Iterator[Task]:
        session = current()
        if session is not None and session.listing is not None:
            for task in session.listing:
                session.touched[task.id] = task
            return iter(list(session.listing))
        return iter(self._mem)

    # --- the engine's side: load before the handler, write back after ----------------------

    def queue_load(self, pipe: Any, ids: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(ids))
        for task_id in wanted:
            pipe.hmget(self._keys.task(task_id), "t", "polls", "tat")
        return wanted

    def apply_load(self, session: Session, ids: list[str], rows: list[Any]) -> None:
        now = self._clock.now()
        for task_id, row in zip(ids, rows, strict=True):
            text, polls, tat = row
            if text is None:
                # Gone from Redis (expired, reset, or another worker removed it): never answer
                # from a stale copy.
                self._mem.remove(task_id)
                self._synced.pop(task_id, None)
                continue
            fresh = decode_task(text, int(polls or 0), None if tat is None else float(tat),
                                self._decode)
            if self._mem._expired(fresh, now):
                self._mem.remove(task_id)
                continue
            mine = self._mem._tasks.get(task_id)
            if mine is None:
                mine = fresh
                with contextlib.suppress(StoreFull):  # a full identity map only caches less
                    self._mem.add(fresh)
            else:
                _refresh(mine, fresh)
            self._synced[task_id] = (text if isinstance(text, str) else text.decode(), fresh.polls,
                                     fresh.ended, fresh._terminal_at)
            session.loaded[task_id] = mine

    def queue_listing(self, pipe: Any) -> None:
        pipe.zrange(self._keys.index(), 0, -1)

    def queue_count(self, pipe: Any) -> None:
        """The number of live tasks (the request may create one: ``add`` checks the bound).

        At the shared manual clock's time, read in the same step: this worker's copy of it may
        not have caught up yet."""
        pipe.eval(_LIVE_COUNT, 2, self._keys.live, self._keys.clock, repr(self._clock.now()))

    def _left(self, task: Task, now: float) -> float:
        if task.mode == "time" and task.ended is None:
            end = task.created_at + sum(task.durations)
            return 0.0 if math.isinf(end) else max(end - now, 0.0)
        return 0.0

    def ttl(self, task: Task) -> int | None:
        """Real seconds Redis keeps a task: its remaining timeline plus retention, with slack."""
        if self._retention is None:
            return None
        left = self._left(task, self._clock.now())
        scale = self._clock.scale if self._clock.kind != "manual" else 1.0
        return math.ceil((left + self._retention) / scale) + 60

    def _expiry(self, task: Task) -> float:
        """When (provider time) the task stops counting against the bound, as its key expires."""
        if self._retention is None:
            return math.inf
        now = self._clock.now()
        return now + self._left(task, now) + self._retention

    def queue_commit(self, pipe: Any, session: Session) -> None:
        for task_id in session.removed:
            pipe.delete(self._keys.task(task_id))
            pipe.zrem(self._keys.index(), task_id)
            pipe.zrem(self._keys.live, task_id)
            self._synced.pop(task_id, None)
        if session.added:
            pipe.zremrangebyscore(self._keys.live, "-inf", "(" + repr(self._clock.now()))
        for task_id, task in {**session.touched, **session.loaded, **session.added}.items():
            if task_id in session.removed:
                continue
            text = encode_task(task, self._encode)
            key = self._keys.task(task_id)
            before = self._synced.get(task_id)
            if task_id in session.added and before is None:
                pipe.hset(key, mapping={"t": text, "polls": task.polls})
                pipe.zadd(self._keys.index(), {task_id: task.created_at})
            elif before is None:
                continue  # a task this request never loaded (a stale local reference)
            else:
                if before[0] == text and before[1] == task.polls:
                    continue
                if before[0] != text:
                    pipe.hset(key, "t", text)
                if task.polls != before[1]:
                    pipe.hincrby(key, "polls", task.polls - before[1])
            if task._terminal_at is not None and (before is None or before[3] is None):
                pipe.hsetnx(key, "tat", task._terminal_at)  # the first to see it terminal wins
            if before is None or before[0] != text or task.mode == "polls":
                # When its key expires moved (created, ended early, a poll-driven step); a
                # time-driven task's polls leave it where it was (one command less a poll).
                ttl = self.ttl(task)
                if ttl is not None:
                    pipe.expire(key, ttl)
                expiry = self._expiry(task)
                pipe.zadd(self._keys.live, {task_id: "+inf" if math.isinf(expiry) else expiry})
            if before is not None and task.ended is not None and before[2] != task.ended:
                session.ended.append(task)  # ended here: the workers streaming it are told
            self._synced[task_id] = (text, task.polls, task.ended, task._terminal_at)

    def listing(self, ids: list[str], rows: list[Any], session: Session) -> None:
        self.apply_load(session, ids, rows)
        session.listing = [session.loaded[i] for i in ids if i in session.loaded]
