from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from imagegen_conformance.contracts import Lifecycle

from ._clock import Clock
from ._faults import FaultSpec

__all__ = ["MemoryTaskStore", "StoreFull", "Task", "TaskStore", "compact", "new_task", "uuid4_text"]


class StoreFull(RuntimeError):
    """The store holds its maximum of live tasks; the provider answers with its overload error."""


#: (states, polls_needed, final, terminal, mode): shared by every task of one lifecycle.
_Shape = tuple[tuple[str, ...], tuple[int | float, ...], str, tuple[str, ...], str]


class Task:
    """A task is a timeline, not a coroutine: its state at any moment is computed from the clock.

    ``durations[i]`` is how long (provider seconds) the task stays in ``states[i]``; after the
    last phase it is in ``final``. With ``mode == "polls"`` the task moves one step per poll
    instead (``polls_needed[i]`` polls in ``states[i]``). ``end()`` cuts the timeline short
    (cancel, stop). Nothing runs in the background: 100k tasks cost only their memory.
    """

    # Seven slots, not fourteen (a million tasks: 56 MB): what every task of one lifecycle
    # shares (states, polls per state, final and terminal states, mode) is one interned tuple,
    # and what few tasks ever have (an early end, a failure, carried faults, when a poll-driven
    # task finished) sits in one list made only for those. The names stay attributes.
    __slots__ = ("_rare", "_shape", "created_at", "data", "durations", "id", "polls")

    def __init__(
        self,
        task_id: str,
        created_at: float,
        states: tuple[str, ...],
        durations: tuple[float, ...],
        polls_needed: tuple[int | float, ...],
        final: str,
        terminal: tuple[str, ...],
        mode: str = "time",
        data: dict[str, Any] | None = None,
        *,
        faults: tuple[FaultSpec, ...] = (),
        failure: str | None = None,
    ) -> None:
        self.id = task_id
        self.created_at = created_at
        self._shape: _Shape = _shared((states, polls_needed, final, terminal, mode))
        self.durations = durations
        self.data: dict[str, Any] = data if data is not None else {}
        self.polls = 0
        # [ended, failure, faults, terminal_at], or None while all four are unset.
        self._rare: list[Any] | None = None
        if faults:
            self.faults = faults
        if failure is not None:
            self.failure = failure

    # --- the shared shape ---

    @property
    def states(self) -> tuple[str, ...]:
        return self._shape[0]

    @states.setter
    def states(self, value: tuple[str, ...]) -> None:
        self._reshape(0, tuple(value))

    @property
    def polls_needed(self) -> tuple[int | float, ...]:
        return self._shape[1]

    @polls_needed.setter
    def polls_needed(self, value: tuple[int | float, ...]) -> None:
        self._reshape(1, tuple(value))

    @property
    def final(self) -> str:
        return self._shape[2]

    @final.setter
    def final(self, value: str) -> None:
        self._reshape(2, value)

    @property
    def terminal(self) -> tuple[str, ...]:
        return self._shape[3]

    @terminal.setter
    def terminal(self, value: tuple[str, ...]) -> None:
        self._reshape(3, tuple(value))

    @property
    def mode(self) -> str:
        return self._shape[4]

    @mode.setter
    def mode(self, value: str) -> None:
        self._reshape(4, value)

    def _reshape(self, index: int, value: Any) -> None:
        shape = list(self._shape)
        shape[index] = value
        self._shape = _shared(tuple(shape))

    # --- what few tasks have ---

    @property
    def ended(self) -> tuple[str, float] | None:
        """(state, provider time) when ``end()`` cut the timeline short."""
        rare = self._rare
        return None if rare is None else rare[0]

    @ended.setter
    def ended(self, value: tuple[str, float] | None) -> None:
        self._set_rare(0, value)

    @property
    def failure(self) -> str | None:
        """Set when a task_fail fault made the task fail: the fault's argument ("" without one),
        which a provider may read for how it fails (Dify: ``node`` or ``error:CODE``)."""
        rare = self._rare
        return None if rare is None else rare[1]

    @failure.setter
    def failure(self, value: str | None) -> None:
        self._set_rare(1, value)

    @property
    def faults(self) -> tuple[FaultSpec, ...]:
        """The task, link and delivery faults that fired on the request that created it: the
        engine applies them to its links (expired_url) and deliveries (duplicate/late webhook)."""
        rare = self._rare
        return () if rare is None else rare[2]

    @faults.setter
    def faults(self, value: tuple[FaultSpec, ...]) -> None:
        self._set_rare(2, tuple(value))

    @property
    def _terminal_at(self) -> float | None:
        rare = self._rare
        return None if rare is None else rare[3]

    @_terminal_at.setter
    def _terminal_at(self, value: float | None) -> None:
        self._set_rare(3, value)

    def _set_rare(self, index: int, value: Any) -> None:
        rare = self._rare
        if rare is None:
            if value is None or value == ():
                return  # still unset
            rare = self._rare = [None, None, (), None]
        rare[index] = value

    def state(self, now: float) -> str:
        return self.phase(now)[0]

    def phase(self, now: float) -> tuple[str, float, float]:
        """(state, provider seconds spent in it so far, its full length; inf when open-ended)."""
        if self._rare is not None:
            ended = self._rare[0]
            if ended is not None and now >= ended[1]:
                return ended[0], now - ended[1], math.inf
        states, polls_needed, final, _, mode = self._shape
        if mode == "polls":
            left = float(self.polls)
            for state, need in zip(states, polls_needed, strict=True):
                if left < need:
                    return state, left, float(need)
                left -= need
            return final, left, math.inf
        elapsed = now - self.created_at
        for state, length in zip(states, self.durations, strict=True):
            if elapsed < length:
                return state, elapsed, length
            elapsed -= length
        return final, elapsed, math.inf

    def entered_at(self, state: str) -> float | None:
        """When (provider time) a time-driven task enters ``state``; None if it never does."""
        at = self.created_at
        for name, length in zip(self.states, self.durations, strict=True):
            if name == state:
                return at
            at += length
        return at if state == self.final and math.isfinite(at) else None

    def is_terminal(self, now: float) -> bool:
        return self.state(now) in self.terminal

    def finished_at(self, now: float) -> float | None:
        """When the task reached a terminal state, or None while it has not."""
        if self.ended is not None and now >= self.ended[1]:
            return self.ended[1]
        if self.mode == "polls":
            if self._terminal_at is None and self.is_terminal(now):
                self._terminal_at = now
            return self._terminal_at
        end = self.created_at + sum(self.durations)
        return end if end <= now else None

    def end(self, state: str, at: float) -> bool:
        """End the task early in ``state`` (cancelled, stopped); False if it had already ended."""
        if self.is_terminal(at):
            return False
        self.ended = (state, at)
        return True

    def poll(self, now: float) -> str:
        """Count one poll (it moves a poll-driven task) and return the state the client sees."""
        self.polls += 1
        state = self.state(now)
        if state in self.terminal and self._terminal_at is None:
            self._terminal_at = now
        return state


def new_task(
    lifecycle: Lifecycle | None,
    *,
    now: float,
    rng: random.Random,
    mode: str = "time",
    fail: bool | str = False,
    never_finish: bool = False,
    phases: Sequence[tuple[str, float]] | None = None,
    polls: Sequence[int | float] | None = None,
    work: int | None = None,
    faults: tuple[FaultSpec, ...] = (),
    task_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> Task:
    """Draw a task's timeline from the contract's lifecycle phases, or take ``phases`` as given.

    ``work`` is the index of the phase the task faults act on (default: the last): with
    ``fail`` the task fails at the end of it (later phases are dropped), with ``never_finish``
    it never ends. ``fail`` may be the failure's detail (a task_fail fault's argument).
    Without a lifecycle (a synchronous call) the task ends ``succeeded`` or ``failed``.
    """
    if phases is None:
        if lifecycle is None:
            raise ValueError("a task without a lifecycle needs its phases")
        phases = [(p.state, rng.uniform(p.seconds.low, p.seconds.high)) for p in lifecycle.phases]
        polls = [p.polls for p in lifecycle.phases]
    states = [state for state, _ in phases]
    durations = [float(seconds) for _, seconds in phases]
    needed: list[int | float] = list(polls) if polls is not None else [1] * len(phases)
    at = (len(phases) - 1 if work is None else work) if phases else None
    if fail is not False and at is not None:
        del states[at + 1 :], durations[at + 1 :], needed[at + 1 :]
    if never_finish and at is not None:
        durations[at] = math.inf
        needed[at] = math.inf
    if lifecycle is not None:
        terminal = lifecycle.terminal
        success = lifecycle.success or terminal[0]
        failure = lifecycle.failure or terminal[-1]
    else:
        terminal, success, failure = ("succeeded", "failed"), "succeeded", "failed"
    return Task(
        task_id or uuid4_text(rng.getrandbits(128)),
        now,
        _shared(tuple(states)),
        tuple(durations),
        _shared(tuple(needed)),
        failure if fail is not False else success,
        terminal,
        mode,
        data,
        faults=faults,
        failure=None if fail is False else ("" if fail is True else fail),
    )


_SHARED: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _shared(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """One tuple object for every task with the same states (or poll counts): a million tasks
    of one lifecycle hold two tuples between them, not two million."""
    if len(_SHARED) > 1024:  # phases passed by hand (Dify's nodes) vary more: never grow unbounded
        _SHARED.clear()
    return _SHARED.setdefault(value, value)


def uuid4_text(bits: int) -> str:
    """``str(uuid.UUID(int=bits, version=4))``, made in half the time (ids are made per request)."""
    number = (bits & ~(0xC000 << 48) | (0x8000 << 48)) & ~(0xF000 << 64) | (4 << 76)
    h = f"{number:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_LAYOUTS: dict[tuple[str, ...], type] = {}


def compact(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` that shares its keys with every other record of the same keys.

    CPython keeps the keys of an object's attribute dict once per class (PEP 412): a dict made
    as the attribute dict of a class of its own layout holds only its values, about half of
    what a plain dict of seven entries costs. It is an ordinary dict in every other respect
    (a key added or removed later just makes it a plain one again). For a provider's task data
    when nothing else holds the dict it built (the task gets the copy).
    """
    keys = tuple(data)
    layout = _LAYOUTS.get(keys)
    if layout is None:
        if len(_LAYOUTS) >= 256 or not all(type(k) is str for k in keys):
            return dict(data)
        layout = _LAYOUTS[keys] = type("Record", (), {"__module__": __name__})
    record: dict[str, Any] = layout().__dict__
    for key, value in data.items():  # one by one: update() would build a plain table
        record[key] = value
    return record


class TaskStore(Protocol):
    """Where tasks live. The memory store is the default; a shared one (Redis) fits behind this."""

    def add(self, task: Task) -> None: ...
    def get(self, task_id: str) -> Task | None: ...
    def remove(self, task_id: str) -> None: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Task]: ...


class MemoryTaskStore:
    """A bounded in-memory store that forgets tasks ``retention`` provider seconds after they end.

    It never drops a live task to make room: when full of unfinished tasks it raises
    :class:`StoreFull` and the provider answers with its overload error. The tasks are filed by
    the provider second in which each could first expire (a heap of those seconds, one list of
    ids per second: a few bytes a task), so neither a create nor a refusal at the bound looks
    at more tasks than it forgets (a refused create costs one look at the earliest second).
    """

    def __init__(self, clock: Clock, *, retention: float | None, max_tasks: int = 100_000) -> None:
        self._clock = clock
        self._retention = retention
        self._max = max_tasks
        self._tasks: dict[str, Task] = {}
        # second -> ids of the tasks that may expire by then (at the earliest); stale ids (a
        # task removed) are skipped when they come up. _seconds is the heap of _due's keys.
        self._due: dict[int, list[str]] = {}
        self._seconds: list[int] = []
        self._filed = 0  # ids in _due, stale ones included

    def _expired(self, task: Task, now: float) -> bool:
        if self._retention is None:
            return False
        done = task.finished_at(now)
        if done is None:
            # A task that never ends is forgotten once it is as old as the retention window.
            never = bool(task.durations) and math.isinf(task.durations[-1])
            return never and now - task.created_at > self._retention
        return now - done > self._retention

    def _earliest_expiry(self, task: Task, now: float) -> float:
        """No earlier than this can ``task`` expire, whatever happens to it from ``now`` on.

        A finished task expires ``retention`` after it ended; an unfinished one can end (or be
        cancelled) no earlier than now, so it is looked at again one retention from now.
        """
        assert self._retention is not None
        done = task.finished_at(now)
        return (now if done is None else done) + self._retention

    def _file(self, task: Task, now: float) -> None:
        earliest = self._earliest_expiry(task, now)
        if not math.isfinite(earliest):
            return  # it can never expire (an endless retention)
        second = math.ceil(earliest)
        ids = self._due.get(second)
        if ids is None:
            ids = self._due[second] = []
            heapq.heappush(self._seconds, second)
        ids.append(task.id)
        self._filed += 1

    def sweep(self, budget: int | None = None) -> int:
        """Forget the tasks that have expired; ``budget`` bounds how many are forgotten."""
        if self._retention is None:
            return 0
        now = self._clock.now()
        forgotten = 0
        seconds, due = self._seconds, self._due
        while seconds and seconds[0] < now and (budget is None or forgotten < budget):
            ids = due[seconds[0]]
            task_id = ids.pop()
            self._filed -= 1
            if not ids:
                del due[heapq.heappop(seconds)]
            task = self._tasks.get(task_id)
            if task is None:
                continue  # removed already
            if self._expired(task, now):
                del self._tasks[task_id]
                forgotten += 1
            else:
                # Not finished yet: filed again one retention from now, in a later second than
                # this one (which is past), so the loop always moves on.
                self._file(task, now)
        if self._filed > 2 * len(self._tasks) + 1024:  # many removed ids: drop them once
            for second, ids in list(due.items()):
                ids[:] = [i for i in ids if i in self._tasks]
                if not ids:
                    del due[second]
            self._seconds = sorted(due)  # a sorted list is a heap
            self._filed = sum(len(ids) for ids in due.values())
        return forgotten

    def add(self, task: Task) -> None:
        self.sweep(budget=4)
        if len(self._tasks) >= self._max and not self.sweep(budget=1):
            raise StoreFull(f"the mock holds its maximum of {self._max} tasks")
        self._tasks[task.id] = task
        if self._retention is not None:
            self._file(task, self._clock.now())

    def get(self, task_id: str) -> Task | None:
        task = self._tasks.get(task_id)
        if task is not None and self._expired(task, self._clock.now()):
            del self._tasks[task_id]
            return None
        return task

    def remove(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    def clear(self) -> None:
        self._tasks.clear()
        self._due.clear()
        self._seconds.clear()
        self._filed = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))
