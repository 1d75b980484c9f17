from __future__ import annotations

import threading

from ._clock import Clock

__all__ = ["RateLimiter"]


class RateLimiter:
    """A token bucket per API key, in provider time: ``requests`` per ``per_seconds``."""

    def __init__(self, clock: Clock, requests: int, per_seconds: float) -> None:
        if requests < 1 or per_seconds <= 0:
            raise ValueError("a rate limit needs at least 1 request per a positive period")
        self._clock = clock
        self.requests = requests
        self.per_seconds = per_seconds
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> float:
        """0 when the request may go ahead, else the provider seconds until it may."""
        rate = self.requests / self.per_seconds
        now = self._clock.now()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.requests), now))
            tokens = min(float(self.requests), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    @classmethod
    def parse(cls, clock: Clock, text: str) -> RateLimiter:
        """``N/SECONDS``, e.g. ``60/60``."""
        count, sep, period = text.partition("/")
        try:
            return cls(clock, int(count), float(period or 1) if sep else 1.0)
        except ValueError:
            raise ValueError(f"rate limit {text!r}: expected N/SECONDS, e.g. 60/60") from None
