"""Serve a recorded session back: ``imagegen-conformance serve --replay session.jsonl``.

A recording is what ``imagegen-conformance proxy --record FILE`` wrote (JSON lines, or HAR
with ``--record-format har``): redacted exchanges with their answers. :class:`Replay`
answers each request with the recorded answer of the same method and path, in order (the
n-th poll of a path gets the n-th recorded answer; once they run out, the last one again).
Query strings are not compared, so links whose signatures were redacted (``sign=REDACTED``)
still resolve. The recorded base URLs (the proxy's and the target's) are rewritten to the
replay's own, and each answer takes as long as it took when recorded, divided by
``time_scale`` (streamed chunks keep their recorded spacing the same way).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ._connections import server_options
from ._serve import bind

__all__ = ["RecordedAnswer", "Replay", "ReplayError"]

_SKIP_HEADERS = frozenset({
    "content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date",
    "server",
})


class ReplayError(ValueError):
    """The file is not a recording this module can replay."""


@dataclass
class RecordedAnswer:
    """One recorded exchange: the request's method and path, and the answer to give."""

    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunks: list[tuple[float, bytes]] | None = None  # a stream: (offset in seconds, bytes)
    duration: float = 0.0  # seconds the answer took when recorded


@dataclass
class Replay:
    """A recording served on a socket; ``await replay.start()`` returns its base URL."""

    provider: str
    answers: list[RecordedAnswer]
    bases: list[str] = field(default_factory=list)  # recorded base URLs to rewrite
    time_scale: float = 1.0
    url: str | None = None
    _cursor: dict[tuple[str, str], int] = field(default_factory=dict)
    _runner: web.ServerRunner | None = None

    # --- loading ----------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, time_scale: float = 1.0) -> Replay:
        """Read a JSON-lines or HAR recording."""
        text = Path(path).read_text(encoding="utf-8")
        if not text.strip():
            raise ReplayError(f"{path} is empty: nothing to replay")
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None
        if isinstance(whole, dict) and "log" in whole:
            try:
                return cls._from_har(whole, time_scale)
            except (ValueError, KeyError, TypeError) as exc:
                raise ReplayError(f"{path} is not a HAR file this can replay: {exc}") from None
        return cls._from_jsonl(text, str(path), time_scale)

    @classmethod
    def _from_jsonl(cls, text: str, name: str, time_scale: float) -> Replay:
        provider, bases, answers = "", [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise ReplayError(f"{name}:{number} is not JSON") from None
            if "recording" in item:
                meta = item["recording"]
                provider = provider or meta.get("provider", "")
                bases += [b for b in (meta.get("proxy_url"), meta.get("target")) if b]
            elif "exchange" in item:
                ex = item["exchange"]
                provider = provider or ex.get("provider", "")
                if ex.get("status") is None:
                    continue  # never answered (unreachable target): nothing to give back
                raw = item.get("replay") or {}
                body = (base64.b64decode(raw["body_b64"]) if raw.get("body_b64") is not None
                        else (ex.get("response_body") or "").encode())
                chunks = None
                if raw.get("chunks") is not None:
                    chunks = [(float(t), str(c).encode()) for t, c in raw["chunks"]]
                answers.append(RecordedAnswer(
                    ex["method"], ex["path"], int(ex["status"]),
                    [(str(k), str(v)) for k, v in (ex.get("response_headers") or {}).items()],
                    body, chunks, (ex.get("duration_ms") or 0.0) / 1000,
                ))
        if not answers:
            raise ReplayError(f"{name} holds no answered exchange")
        return cls(provider or "replay", answers, bases, time_scale)

    @classmethod
    def _from_har(cls, doc: dict[str, Any], time_scale: float) -> Replay:
        log = doc["log"]
        bases: list[str] = list(log.get("_imagegen", {}).get("bases", []))
        provider = log.get("_imagegen", {}).get("provider", "replay")
        answers = []
        for entry in log["entries"]:
            request, response = entry["request"], entry["response"]
            parts = urlsplit(request["url"])
            origin = f"{parts.scheme}://{parts.netloc}"
            if origin not in bases:
                bases.append(origin)
            content = response.get("content") or {}
            text = content.get("text") or ""
            body = base64.b64decode(text) if content.get("encoding") == "base64" else text.encode()
            answers.append(RecordedAnswer(
                request["method"], parts.path, int(response["status"]),
                [(h["name"], h["value"]) for h in response.get("headers", [])],
                body, None, float(entry.get("time") or 0.0) / 1000,
            ))
        if not answers:
            raise ReplayError("the HAR file has no entries")
        return cls(provider, answers, bases, time_scale)

    # --- serving ----------------------------------------------------------------------

    def answer_for(self, method: str, path: str) -> RecordedAnswer | None:
        """The next recorded answer for ``method path`` (the last one again when used up)."""
        matching = [a for a in self.answers if a.method == method and a.path == path]
        if not matching:
            return None
        key = (method, path)
        index = self._cursor.get(key, 0)
        self._cursor[key] = index + 1
        return matching[min(index, len(matching) - 1)]

    def rewind(self) -> None:
        self._cursor.clear()

    def _rewrite(self, data: bytes) -> bytes:
        if not self.url or not data:
            return data
        for base in self.bases:
            data = data.replace(base.rstrip("/").encode(), self.url.encode())
        return data

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds / self.time_scale)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        if request.path.startswith("/__mock/"):
            return self._admin(request)
        started = time.monotonic()
        answer = self.answer_for(request.method, request.path)
        if answer is None:
            return web.json_response(
                {"replay_error": f"the recording has no answer for {request.method} {request.path}"},
                status=404, headers={"X-Imagegen-Replay": "unmatched"},
            )
        headers = [(k, self._rewrite(v.encode()).decode()) for k, v in answer.headers
                   if k.lower() not in _SKIP_HEADERS]
        if answer.chunks is None:
            await self._sleep(answer.duration - (time.monotonic() - started) * self.time_scale)
            binary = any(k.lower() == "content-type" and not ("json" in v or v.startswith("text/"))
                         for k, v in headers)
            body = answer.body if binary else self._rewrite(answer.body)  # image bytes stay intact
            response = web.Response(status=answer.status, body=body)
            for name, value in headers:
                response.headers.add(name, value)
            return response
        stream = web.StreamResponse(status=answer.status)
        for name, value in headers:
            stream.headers.add(name, value)
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        last = 0.0
        try:
            for offset, chunk in answer.chunks:
                await self._sleep(offset - last)
                last = offset
                await stream.write(self._rewrite(chunk))
            await stream.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return stream

    def _admin(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path.rstrip("/")
        if path == "/__mock/health":
            return web.json_response({"ok": True, "provider": self.provider, "replay": True,
                                      "time_scale": self.time_scale, "answers": len(self.answers)})
        if path == "/__mock/reset" and request.method == "POST":
            self.rewind()
            return web.json_response({"ok": True})
        return web.json_response({"mock_error": "a replay answers only /__mock/health and "
                                                "POST /__mock/reset"}, status=400)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: a free port); returns the base URL."""
        self._runner = web.ServerRunner(web.Server(self.handle, **server_options("replay")),
                                        shutdown_timeout=1.0)
        try:
            self.url = await bind(self._runner, host, port, what="the replay")
        except OSError:
            self._runner = None
            raise
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
