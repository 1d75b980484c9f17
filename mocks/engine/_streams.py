"""Framing for streamed bodies: Server-Sent Events and newline-delimited JSON."""

from __future__ import annotations

from typing import Any

from ._http import dumps

__all__ = ["ndjson_line", "sse_comment", "sse_event"]


def sse_event(data: Any, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One SSE event; ``data`` that is not bytes/str is JSON-encoded on a single line."""
    payload = data if isinstance(data, bytes) else (data.encode() if isinstance(data, str) else dumps(data))
    out = b""
    if event_id is not None:
        out += b"id: " + event_id.encode() + b"\n"
    if event is not None:
        out += b"event: " + event.encode() + b"\n"
    if data is not None:
        out += b"data: " + payload + b"\n"
    return out + b"\n"


def sse_comment(text: str = "") -> bytes:
    return b": " + text.encode() + b"\n\n"


def ndjson_line(obj: Any) -> bytes:
    return dumps(obj) + b"\n"
