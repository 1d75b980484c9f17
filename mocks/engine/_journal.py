from __future__ import annotations

import hashlib
import hmac
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Exchange", "Journal", "body_text", "key_fingerprint"]

BODY_LIMIT = 65_536
EVENT_LIMIT = 1_000


def key_fingerprint(secret: bytes, key: str | None) -> str | None:
    """A short, one-way name for a credential: tells clients apart without storing the key.

    Keyed by the server's secret, so a fingerprint cannot be checked against guessed keys.
    """
    if not key:
        return None
    return "key-" + hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:10]


def body_text(body: bytes, content_type: str | None) -> str | None:
    if not body:
        return None
    ctype = (content_type or "").lower()
    if ctype.startswith(("image/", "application/octet-stream", "audio/", "video/")):
        return f"<{len(body)} bytes {ctype}>"
    text = body[:BODY_LIMIT].decode("utf-8", errors="replace")
    return text + (f"...<{len(body) - BODY_LIMIT} more bytes>" if len(body) > BODY_LIMIT else "")


@dataclass
class Exchange:
    """One request the mock saw and what it answered, with secrets already redacted."""

    seq: int
    provider: str
    role: str
    operation: str | None
    method: str
    path: str
    query: list[tuple[str, str]]
    request_headers: dict[str, str]
    request_body: str | None
    started_at: float  # wall-clock epoch seconds
    provider_time: float  # the mock's clock when the request arrived
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None
    events: list[str] = field(default_factory=list)  # stream chunks, in order
    duration_ms: float | None = None
    faults: list[str] = field(default_factory=list)
    error: str | None = None  # a handler crash, with its traceback
    complete: bool = False  # False while a stream is still being written
    key_id: str | None = None  # key_fingerprint() of the credential sent, never the key itself

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["query"] = [list(p) for p in self.query]
        return data


class Journal:
    """A bounded, thread-safe record of exchanges, oldest dropped first."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[Exchange] = deque(maxlen=maxlen)
        self._seq = 0

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def append(self, exchange: Exchange) -> None:
        with self._lock:
            self._entries.append(exchange)

    def entries(self, since: int = 0) -> list[Exchange]:
        with self._lock:
            return [e for e in self._entries if e.seq > since]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def last_seq(self) -> int:
        return self._seq
