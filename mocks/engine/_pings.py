"""Keep-alive pings for a stream that waits on the clock (Dify's ``event: ping``, fal's
``: ping`` comments): one falls due every ``interval`` provider seconds, on a grid from the
stream's start or its last :meth:`Pings.restart`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

from ._clock import Clock

__all__ = ["Pings"]


class Pings:
    """Wait on the clock, with a turn for each ping that falls due on the way::

        pings = Pings(clock, 10)
        async for _ in pings.until(next_event_at):
            yield PING

    ``until`` returns once the clock reaches ``when`` (a time, or a callable read again after
    each wait, for a timeline that may move) or as soon as ``stop()`` is true; ``sleep(until)``
    replaces the clock's own sleep (one a stop can wake early).
    """

    def __init__(
        self, clock: Clock, interval: float, *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._clock = clock
        self.interval = interval
        self._sleep = sleep
        self.next = clock.now() + interval

    def restart(self) -> None:
        """The next ping is one interval from now (a stream that pings only when quiet)."""
        self.next = self._clock.now() + self.interval

    async def until(
        self, when: float | Callable[[], float], stop: Callable[[], bool] | None = None
    ) -> AsyncGenerator[None, None]:
        while stop is None or not stop():
            target = when() if callable(when) else when
            now = self._clock.now()
            if self.next < target and self.next <= now:
                while self.next <= now:  # a clock that jumped owes one ping, not many
                    self.next += self.interval
                yield None
                continue
            if now >= target:
                return
            wake = min(target, self.next)
            if self._sleep is not None:
                await self._sleep(wake)
            else:
                await self._clock.sleep(wake - now)
