from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["Exchange", "Journal", "redact_headers", "redact_query", "redact_text", "redact_url"]

REDACTED = "<redacted>"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie",
     "x-admin-token", "x-webhook-secret"}
)
SECRET_PARAMS = frozenset(
    {"key", "api_key", "apikey", "token", "access_token", "sign", "signature", "sig",
     "x-amz-signature", "x-amz-credential", "x-amz-security-token", "nonce"}
)
BODY_LIMIT = 65_536
EVENT_LIMIT = 1_000


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header values that carry secrets keep only their scheme: ``Bearer <redacted>``."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        if name.lower() in SECRET_HEADERS:
            scheme, sep, _ = value.partition(" ")
            value = f"{scheme} {REDACTED}" if sep and scheme.isalpha() else REDACTED
        out[name] = value
    return out


# A secret query parameter inside text: a webhook URL passed as a query value or in a body.
_SECRET_IN_TEXT = re.compile(
    r"(?i)([?&](?:" + "|".join(re.escape(p) for p in sorted(SECRET_PARAMS)) + r")=)[^&#\s\"'\\<]+"
)


def redact_text(text: str | None) -> str | None:
    """Text with the values of secret query parameters in any URL it holds replaced."""
    if not text or "=" not in text:
        return text
    return _SECRET_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, text)


def redact_query(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, REDACTED if k.lower() in SECRET_PARAMS else redact_text(v) or v) for k, v in pairs]


def redact_url(url: str) -> str:
    """A URL with its signed or secret query parameters replaced."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    return base + "?" + urlencode(redact_query(parse_qsl(query, keep_blank_values=True)), safe="<>:/")


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
