"""Webhook and callback delivery: the provider's payload, bounded retries, no SSRF by default."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from ._faults import FaultSpec
from ._http import dumps
from ._redact import redact_url

if TYPE_CHECKING:
    from ._server import MockServer

__all__ = ["Deliverer", "Delivery", "DeliveryPolicy", "is_loopback", "refusal"]


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard the provider tries: attempts, per-attempt timeout, waits between (provider s)."""

    attempts: int = 3
    timeout: float = 15.0
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0)

    @classmethod
    def from_contract(cls, raw: Mapping[str, Any] | None) -> DeliveryPolicy:
        if not raw:
            return cls()
        return cls(
            attempts=int(raw.get("attempts", 3)),
            timeout=float(raw.get("timeout", 15.0)),
            backoff=tuple(float(b) for b in raw.get("backoff", (1.0, 5.0, 30.0))),
        )

    def wait_before(self, attempt: int) -> float:
        """Provider seconds to wait before attempt number ``attempt`` (2, 3, ...)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(attempt - 2, len(self.backoff) - 1)]


@dataclass
class Delivery:
    """One webhook or callback, as the admin API and the harness see it."""

    id: int
    kind: str  # "webhook", "callback"
    url: str  # redacted
    reference: str  # the task or request it reports on
    status: str = "pending"  # pending | delivered | failed | refused
    attempts: int = 0
    responses: list[int | str] = field(default_factory=list)
    reason: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1), with or without []."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(url: str, allow_hosts: frozenset[str]) -> str | None:
    """Why ``url`` may not receive a delivery, or None when it may (loopback or allow-listed)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http or https"
    host = (parts.hostname or "").lower()
    if not host:
        return "URL has no host"
    if host in allow_hosts or "*" in allow_hosts:
        return None
    if is_loopback(host):
        return None
    return f"host {host!r} is neither loopback nor allow-listed (serve --allow-host {host})"


#: How much of a receiver's answer is read: its status is all a delivery needs.
ANSWER_LIMIT = 65_536


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Read at most ``ANSWER_LIMIT`` bytes of an answer; a longer one costs its connection."""
    left = ANSWER_LIMIT
    while left > 0:
        chunk = await resp.content.read(left)
        if not chunk:
            return
        left -= len(chunk)
    if not resp.content.at_eof():
        resp.close()  # drop the connection: the rest is never read


class Deliverer:
    """Delivers payloads in the background; every attempt is recorded, none is silent."""

    def __init__(self, server: MockServer, keep: int = 1_000) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._records: deque[Delivery] = deque(maxlen=keep)
        self._next = 0
        self._session: aiohttp.ClientSession | None = None

    def records(self) -> list[Delivery]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def send(
        self,
        kind: str,
        url: str,
        payload: Any,
        *,
        reference: str,
        policy: DeliveryPolicy,
        headers: Mapping[str, str] | None = None,
        faults: Iterable[FaultSpec] = (),
        sign: Callable[[bytes], Mapping[str, str]] | None = None,
    ) -> Delivery:
        """Schedule a delivery, with the delivery faults of the request behind it (``task.faults``):
        ``duplicate_webhook`` sends it twice, ``late_webhook:S`` waits S provider seconds first.

        ``sign(body)`` gives headers computed for each attempt (a signature over a fresh
        timestamp, as fal's webhooks carry); they are added to ``headers``.
        """
        names = {f.name: f for f in faults}
        copies = 2 if "duplicate_webhook" in names else 1
        late = names.get("late_webhook")
        delay = 0.0 if late is None else late.number(30.0)
        with self._lock:
            self._next += 1
            record = Delivery(self._next, kind, redact_url(url), reference)
            self._records.append(record)
        reason = refusal(url, self._server.allow_hosts)
        if reason is not None:
            record.status, record.reason, record.finished_at = "refused", reason, time.time()
            return record
        body = payload if isinstance(payload, bytes) else dumps(payload)
        hdrs = {"Content-Type": "application/json", "User-Agent": "imagegen-conformance-mock"}
        hdrs.update(headers or {})
        for _ in range(copies):
            self._server.spawn(self._run(record, url, body, hdrs, policy, delay, sign))
        return record

    async def _run(
        self, record: Delivery, url: str, body: bytes, headers: dict[str, str],
        policy: DeliveryPolicy, delay: float,
        sign: Callable[[bytes], Mapping[str, str]] | None = None,
    ) -> None:
        clock = self._server.clock
        if delay > 0:
            await clock.sleep(delay)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1:
                await clock.sleep(policy.wait_before(attempt))
            record.attempts += 1
            try:
                timeout = aiohttp.ClientTimeout(total=policy.timeout / clock.scale)
                # allow_redirects=False: a redirect is the receiver's answer, not a new target.
                # Following it would reach an address the refusal rules never saw (and aiohttp
                # turns a 302'd POST into a body-less GET).
                sent = headers if sign is None else {**headers, **sign(body)}
                async with self._session.post(url, data=body, headers=sent, timeout=timeout,
                                              allow_redirects=False) as resp:
                    await _drain(resp)
                    record.responses.append(resp.status)
                    if 200 <= resp.status < 300:
                        record.status, record.finished_at = "delivered", time.time()
                        return
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                record.responses.append(type(exc).__name__)
        record.status, record.finished_at = "failed", time.time()
        record.reason = f"no 2xx after {policy.attempts} attempts"
        if any(isinstance(r, int) and 300 <= r < 400 for r in record.responses):
            record.reason += " (redirects are not followed)"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
