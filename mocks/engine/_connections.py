"""What a connection may cost the mock: read timeouts, and a log that never repeats a request.

aiohttp answers a request it cannot parse (a control character in a header, a line over 8,190
bytes) with a 400 before any handler runs, and reports it through the ``logger`` its protocol
is given, with the exception, whose message quotes the offending bytes: a key, when the
offending header is ``Authorization``. :class:`ProtocolLog` takes that place: one short line
naming the kind of error and the peer, never a byte of the request, at most one line per
``every`` seconds (the others are counted and reported on the next line).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import http_exceptions

__all__ = ["ConnectionLimits", "ProtocolLog", "server_options"]

log = logging.getLogger("imagegen_conformance.mocks")


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may hold a connection without doing its part (real seconds).

    ``idle``: a connection with no complete request head, whether new (a half-open or
    slowloris connection) or kept alive after an answer, is closed after this long. An answer
    being written (an SSE stream, however long) is never idle.
    ``body_grace`` + one second per ``body_rate`` bytes received: the time a request body
    may take; a body slower than that (one byte per 0.5 s) is answered with the provider's
    408 and the connection closed.
    ``lingering``: after an answer that left a body unread, how long the rest is discarded.
    """

    idle: float = 30.0
    body_grace: float = 10.0
    body_rate: int = 16_384
    lingering: float = 5.0

    def body_deadline(self, started: float, received: int) -> float:
        """The loop time by which a body that started at ``started`` must have ended."""
        return started + self.body_grace + received / self.body_rate


# Each kind of error aiohttp's parser raises, as one phrase that quotes nothing.
_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header over the size limit"),
    (http_exceptions.InvalidHeader, "an invalid header"),
    (http_exceptions.BadHttpMethod, "an invalid method"),
    (http_exceptions.BadStatusLine, "an invalid request line"),
    (http_exceptions.InvalidURLError, "an invalid URL"),
    (http_exceptions.TransferEncodingError, "an invalid chunked body"),
    (http_exceptions.ContentLengthError, "a body shorter than its Content-Length"),
    (http_exceptions.BadHttpMessage, "a request HTTP/1.1 cannot parse"),
)


def describe(exc: BaseException | None) -> str:
    """One phrase for an error, without its message (which may quote the request)."""
    for kind, phrase in _KINDS:
        if isinstance(exc, kind):
            code = getattr(exc, "code", 400)
            return f"refused {phrase} (HTTP {code})"
    name = type(exc).__name__ if exc is not None else "an error"
    return f"failed on a request ({name}; the mock's own error, please report it)"


class ProtocolLog(logging.Logger):
    """The ``logger`` of aiohttp's protocol layer for one listener (``what``: its name).

    Every record aiohttp makes (``exception``, ``debug``, ...) arrives at :meth:`handle` and is
    reduced to :func:`describe` of its exception plus the peer address, logged as a warning on
    ``imagegen_conformance.mocks`` (Python's last-resort handler prints it to stderr when
    nothing is configured). Debug records (aiohttp's "not HTTP at all" noise) are counted only.
    """

    def __init__(self, what: str, *, every: float = 10.0, errors: list[str] | None = None) -> None:
        super().__init__("imagegen_conformance.mocks.protocol")
        self.what = what
        self.every = every
        # The mock's own failures (not a client's unparseable request) also go here, where
        # tests and reports look for handler crashes: a mock never swallows a failure.
        self.errors = errors
        self.count = 0  # every event reported to this log
        self._unsaid = 0  # events since the last line
        self._next = 0.0  # monotonic time before which events are only counted

    def handle(self, record: logging.LogRecord) -> None:
        self.count += 1
        if record.levelno < logging.WARNING:
            return
        exc = record.exc_info[1] if record.exc_info else None
        if self.errors is not None and not isinstance(exc, http_exceptions.BadHttpMessage):
            self.errors.append(f"{self.what}: {describe(exc)}")
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
        now = time.monotonic()
        if now < self._next:
            self._unsaid += 1
            return
        self._next = now + self.every
        more = f" ({self._unsaid} more since the last line)" if self._unsaid else ""
        self._unsaid = 0
        source = f" from {peer}" if isinstance(peer, str) else ""
        log.warning("%s: %s%s%s", self.what, describe(exc), source, more)


def server_options(
    what: str, limits: ConnectionLimits | None = None, errors: list[str] | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``aiohttp.web.Server``/``AppRunner``: the limits and the log."""
    limits = limits or ConnectionLimits()
    return {
        "logger": ProtocolLog(what, errors=errors),
        "access_log": None,
        "keepalive_timeout": limits.idle,
        "lingering_time": limits.lingering,
    }
