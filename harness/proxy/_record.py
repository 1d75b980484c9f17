"""Recording what the proxy sees, redacted, for ``serve --replay`` or other tools.

``jsonl`` (the default) writes one line per event as it happens: a ``{"recording": ...}``
header (provider, target, the proxy's URL), then ``{"exchange": ..., "replay": ...}`` per
exchange and ``{"deviation": ...}`` per deviation. ``replay`` holds what a replay needs beyond
the journal's record: an image's bytes (base64) or a stream's chunks with their offsets.
``har`` writes an HTTP Archive 1.2 document (rewritten after each exchange, so a killed proxy
still leaves a valid file). Secrets never reach the file: headers, query strings and signed
links in bodies are redacted before anything is written.
"""

from __future__ import annotations

import base64
import codecs
import json
import time
from pathlib import Path
from typing import IO, Any

from imagegen_conformance.mocks.engine import Exchange, redact_text

from ..rules._deviation import Deviation
from ..rules._exchanges import media_type

__all__ = ["FORMATS", "Recorder", "recorder_for"]

FORMATS = ("jsonl", "har")
_BINARY = ("image/", "audio/", "video/", "application/octet-stream")


def _binary(ctype: str) -> bool:
    return ctype.startswith(_BINARY)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def _events(chunks: list[tuple[float, bytes]], ctype: str) -> list[tuple[float, str]]:
    """A stream's chunks regrouped into whole events, each at the offset its end arrived.

    Redacting chunk by chunk could miss a signature split across two chunks.
    """
    sep = "\n\n" if ctype == "text/event-stream" else "\n"
    out: list[tuple[float, str]] = []
    pending = ""
    offset = 0.0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # characters split by chunks
    for offset, chunk in chunks:
        pending += decoder.decode(chunk)
        cut = pending.rfind(sep)
        if cut >= 0:
            out.append((offset, pending[: cut + len(sep)]))
            pending = pending[cut + len(sep):]
    pending += decoder.decode(b"", final=True)
    if pending:
        out.append((offset, pending))
    return out


class Recorder:
    """Write a proxy's exchanges to ``path``; hook it up with :meth:`hooks`.

    ``secrets`` are literal strings (keys) scrubbed from everything written, as a last guard
    behind the redaction of headers, queries and signed links.
    """

    def __init__(self, path: Path, fmt: str = "jsonl", *, provider: str, target: str,
                 secrets: tuple[str, ...] = ()) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown record format {fmt!r}; valid: {', '.join(FORMATS)}")
        self.path = path
        self.format = fmt
        self.provider = provider
        self.target = target
        self.proxy_url: str | None = None
        self.secrets = tuple(s for s in secrets if len(s) >= 6)
        self._raw: dict[int, tuple[bytes, list[tuple[float, bytes]] | None]] = {}
        self._entries: list[dict[str, Any]] = []
        self._sink: IO[str] | None = None

    # --- hooks --------------------------------------------------------------------------

    def started(self, proxy_url: str) -> None:
        """Call once the proxy listens: the header names both base URLs (a replay rewrites them)."""
        self.proxy_url = proxy_url
        if self.format == "jsonl":
            self._sink = self.path.open("a", encoding="utf-8")
            self._write({"recording": {"version": 1, "provider": self.provider,
                                       "target": self.target, "proxy_url": proxy_url,
                                       "started_at": time.time()}})

    def on_raw(self, exchange: Exchange, body: bytes, chunks: list[tuple[float, bytes]] | None) -> None:
        self._raw[exchange.seq] = (body, chunks)

    def on_exchange(self, exchange: Exchange) -> None:
        body, chunks = self._raw.pop(exchange.seq, (b"", None))
        ctype = media_type(exchange.response_headers)
        if self.format == "jsonl":
            replay: dict[str, Any] = {}
            if chunks is not None:
                replay["chunks"] = [[round(t, 4), self._clean(text)]
                                    for t, text in _events(chunks, ctype)]
            elif _binary(ctype) and body:
                replay["body_b64"] = base64.b64encode(body).decode()
            elif body:
                replay["body_b64"] = base64.b64encode(
                    self._clean(body.decode("utf-8", "replace")).encode()).decode()
            self._write({"exchange": self._clean_json(exchange.to_dict()), "replay": replay})
        else:
            self._entries.append(self._har_entry(
                Exchange(**self._clean_json(exchange.to_dict()) | {"query": [
                    (k, self._clean(v)) for k, v in exchange.query]}), body, chunks, ctype))
            self._write_har()

    def on_deviation(self, deviation: Deviation) -> None:
        if self.format == "jsonl":
            self._write({"deviation": self._clean_json(deviation.to_dict())})

    def close(self) -> None:
        if self.format == "har":
            self._write_har()
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    # --- writing ------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        text = redact_text(text) or ""
        for secret in self.secrets:
            text = text.replace(secret, "REDACTED")
        return text

    def _clean_json(self, item: dict[str, Any]) -> Any:
        # Redaction keeps JSON valid (it never touches quotes or backslashes).
        return json.loads(self._clean(json.dumps(item, default=str)))

    def _write(self, item: dict[str, Any]) -> None:
        """One line; callers cleaned every text part (base64 image bytes are left as they are)."""
        assert self._sink is not None, "call started() first"
        self._sink.write(json.dumps(item, default=str) + "\n")
        self._sink.flush()

    def _har_entry(self, ex: Exchange, body: bytes, chunks: list[tuple[float, bytes]] | None,
                   ctype: str) -> dict[str, Any]:
        base = (self.proxy_url or self.target).rstrip("/")
        query = "&".join(f"{k}={v}" for k, v in ex.query)
        if chunks is not None:
            body = b"".join(c for _, c in chunks)
        content: dict[str, Any] = {"size": len(body), "mimeType": ctype or "application/octet-stream"}
        if _binary(ctype):
            content.update(text=base64.b64encode(body).decode(), encoding="base64")
        else:
            content["text"] = self._clean(body.decode("utf-8", "replace"))
        request: dict[str, Any] = {
            "method": ex.method, "url": base + ex.path + (f"?{query}" if query else ""),
            "httpVersion": "HTTP/1.1",
            "headers": [{"name": k, "value": v} for k, v in ex.request_headers.items()],
            "queryString": [{"name": k, "value": v} for k, v in ex.query],
            "cookies": [], "headersSize": -1, "bodySize": len(ex.request_body or ""),
        }
        if ex.request_body:
            request["postData"] = {"mimeType": ex.request_headers.get("Content-Type", ""),
                                   "text": ex.request_body}
        duration = ex.duration_ms or 0.0
        return {
            "startedDateTime": _iso(ex.started_at), "time": duration, "request": request,
            "response": {
                "status": ex.status or 0, "statusText": "", "httpVersion": "HTTP/1.1",
                "headers": [{"name": k, "value": v} for k, v in ex.response_headers.items()],
                "cookies": [], "content": content, "redirectURL": "", "headersSize": -1,
                "bodySize": len(body), **({"_error": ex.error} if ex.error else {}),
            },
            "cache": {}, "timings": {"send": 0, "wait": duration, "receive": 0},
            "_operation": ex.operation,
        }

    def _write_har(self) -> None:
        doc = {"log": {
            "version": "1.2", "creator": {"name": "imagegen-conformance", "version": "1"},
            "pages": [], "entries": self._entries,
            "_imagegen": {"provider": self.provider,
                          "bases": [b for b in (self.proxy_url, self.target) if b]},
        }}
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
        tmp.replace(self.path)


def recorder_for(provider: str, target: str, record: Path, fmt: str = "jsonl") -> Recorder:
    """The recorder of ``proxy --record FILE``.

    The provider's live key (from its environment variable, if set) is scrubbed from the file
    as well, behind the usual redaction.
    """
    import os

    from ..rules._targets import live_target

    live = live_target(provider)
    secrets = (os.environ.get(live.key_var, ""),) if live else ()
    return Recorder(record, fmt, provider=provider, target=target, secrets=secrets)
