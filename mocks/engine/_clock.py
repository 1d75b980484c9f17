from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "ScaledClock", "make_clock"]


class Clock(Protocol):
    """Provider time, in epoch seconds. Bodies report it; lifecycles and expiry read it."""

    @property
    def scale(self) -> float: ...

    @property
    def kind(self) -> str: ...

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of provider time."""

    def advance(self, seconds: float) -> float:
        """Move a manual clock forward; other clocks refuse."""


class ScaledClock:
    """Real time sped up by ``scale``: ``ScaledClock(50)`` runs a 10 s job in 0.2 s.

    ``ScaledClock(1)`` is the real clock. Provider time starts at the real epoch time.
    """

    def __init__(self, scale: float = 1.0, *, start: float | None = None) -> None:
        if scale <= 0:
            raise ValueError(f"time scale must be positive, got {scale}")
        self._scale = float(scale)
        self._epoch = time.time() if start is None else start
        self._t0 = time.perf_counter()

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def kind(self) -> str:
        return "real" if self._scale == 1.0 else "scaled"

    def now(self) -> float:
        return self._epoch + (time.perf_counter() - self._t0) * self._scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._scale)

    def advance(self, seconds: float) -> float:
        raise RuntimeError(
            f"the {self.kind} clock cannot be advanced; start the mock with --clock manual"
        )


class ManualClock:
    """Time that moves only when told to (tests, the admin API's clock/advance)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._dead = 0  # cancelled sleepers still in the heap

    @property
    def scale(self) -> float:
        return 1.0

    @property
    def kind(self) -> str:
        return "manual"

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), loop, fut))
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()
            if fut.cancelled():
                self._forget_cancelled()

    def _forget_cancelled(self) -> None:
        # A sleeper cancelled before its time (a client that went away) must not stay in the
        # heap until the clock reaches it: drop the dead ones once they are half of it.
        with self._lock:
            self._dead += 1
            if self._dead > 64 and self._dead * 2 > len(self._sleepers):
                self._sleepers = [s for s in self._sleepers if not s[3].done()]
                heapq.heapify(self._sleepers)
                self._dead = 0

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        with self._lock:
            self._now += seconds
            due = []
            while self._sleepers and self._sleepers[0][0] <= self._now:
                due.append(heapq.heappop(self._sleepers))
        for _, _, loop, fut in due:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)
        return self._now

    def set(self, when: float) -> float:
        return self.advance(max(0.0, when - self._now))


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def make_clock(kind: str = "real", scale: float = 1.0, start: float | None = None) -> Clock:
    """``real`` (scale 1), ``scaled`` (``scale``) or ``manual``."""
    if kind == "manual":
        return ManualClock(start)
    if kind in ("real", "scaled"):
        return ScaledClock(scale if kind == "scaled" else 1.0, start=start)
    raise ValueError(f"unknown clock {kind!r}; valid: real, scaled, manual")
