"""What every reference client shares: its environment, waits, retries, downloads, output."""

from __future__ import annotations

import base64
import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = [
    "ClientEnv", "ClientFailure", "Http", "cli_main", "download_images", "honours_time_scale", "json_of",
]

TRANSIENT = frozenset({500, 502, 503, 504})
#: Provider seconds an answer may take: Dify's gateway cuts a blocking run after 100 s and
#: AceData answers a synchronous request within its 600 s sync timeout.
READ_TIMEOUT = 660.0

F = TypeVar("F", bound=Callable[..., Any])


def honours_time_scale(func: F) -> F:
    """Mark a client callable that divides every wait by ``IMAGEGEN_TIME_SCALE``.

    The harness then runs it in-process, in real time, told the scale (``--frame told``),
    rather than in a child process in provider time: faster, with the same verdicts.
    """
    func.imagegen_honours_time_scale = True  # type: ignore[attr-defined]
    return func


class ClientFailure(Exception):
    """The client cannot deliver images: an error answer, a failed task, or giving up."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind  # "error" | "failed" | "gave_up"

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "status": self.status, "kind": self.kind}}


@dataclass(frozen=True)
class ClientEnv:
    """The harness's variables: where to go, with which key, what to ask, how fast time runs."""

    provider: str
    base_url: str
    api_key: str
    request: dict[str, Any]
    output_dir: Path
    time_scale: float
    timeout: float  # provider seconds before the client gives up on a task
    raw: Mapping[str, str]

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> ClientEnv:
        env = os.environ if env is None else env
        out = Path(env.get("IMAGEGEN_OUTPUT_DIR") or ".")
        return cls(
            provider=env.get("IMAGEGEN_PROVIDER", ""),
            base_url=env.get("IMAGEGEN_BASE_URL", "").rstrip("/"),
            api_key=env.get("IMAGEGEN_API_KEY", ""),
            request=json.loads(env.get("IMAGEGEN_REQUEST") or "{}"),
            output_dir=out,
            time_scale=float(env.get("IMAGEGEN_TIME_SCALE") or 1.0),
            timeout=float(env.get("IMAGEGEN_TIMEOUT") or 300.0),
            raw=env,
        )

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of provider time (shorter in real time under a scaled clock)."""
        time.sleep(max(0.0, seconds) / self.time_scale)

    def elapsed_since(self, start: float) -> float:
        """Provider seconds since the ``time.monotonic()`` reading ``start``."""
        return (time.monotonic() - start) * self.time_scale


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Http:
    """An httpx client with the retry policy of a careful client.

    * 429 (or any answer with ``Retry-After``): wait that long, then resend (any method: the
      request was not processed).
    * transient 5xx or a dropped connection: resend only idempotent requests, with
      exponential backoff starting at ``backoff`` provider seconds.
    * anything else 4xx/5xx: :class:`ClientFailure`, never a resend.
    """

    def __init__(
        self, env: ClientEnv, *, headers: Mapping[str, str] | None = None,
        attempts: int = 6, backoff: float = 1.0,
    ) -> None:
        self.env = env
        self.attempts = attempts
        self.backoff = backoff
        self.client = httpx.Client(headers=dict(headers or {}),
                                   timeout=httpx.Timeout(READ_TIMEOUT, connect=30.0))
        self._rng = random.Random()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, url: str, *, idempotent: bool, retry_5xx: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with the policy above; ``retry_5xx`` overrides ``idempotent`` for 5xx answers
        that mean "not processed" (an overloaded provider)."""
        retry = idempotent if retry_5xx is None else retry_5xx
        wait = self.backoff
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            try:
                response = self.client.request(method, url, **kwargs)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                if not retry or last:
                    raise ClientFailure(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
                self.env.sleep(wait * (1 + self._rng.random() * 0.25))
                wait *= 2
                continue
            retry_after = _retry_after(response)
            if response.status_code == 429 or (response.status_code in TRANSIENT and retry_after):
                if last:
                    break
                self.env.sleep(retry_after if retry_after is not None else wait)
                continue
            if response.status_code in TRANSIENT and retry and not last:
                self.env.sleep(wait * (1 + self._rng.random() * 0.25))
                wait *= 2
                continue
            if response.status_code >= 400:
                raise ClientFailure(
                    f"{method} {url} answered HTTP {response.status_code}: {response.text[:300]}",
                    status=response.status_code,
                )
            return response
        raise ClientFailure(f"{method} {url}: still failing after {self.attempts} attempts",
                            status=response.status_code)

    def json(self, method: str, url: str, *, idempotent: bool, **kwargs: Any) -> Any:
        response = self.request(method, url, idempotent=idempotent, **kwargs)
        return _json(response, method, url)


def json_of(response: httpx.Response, method: str = "", url: str = "") -> Any:
    """The answer's JSON, or :class:`ClientFailure` saying it is not JSON."""
    return _json(response, method, url)


def _json(response: httpx.Response, method: str, url: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ClientFailure(f"{method} {url}: the answer is not JSON") from exc


_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def download_images(http: Http, urls: list[str]) -> list[dict[str, Any]]:
    """Download every URL into the output directory now (links may expire)."""
    http.env.output_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for index, url in enumerate(urls):
        if url.startswith("data:"):  # inline images (fal sync_mode)
            head, _, payload = url.partition(",")
            ctype = head[5:].split(";")[0]
            content = base64.b64decode(payload)
        else:
            response = http.request("GET", url, idempotent=True)
            ctype = response.headers.get("Content-Type", "").split(";")[0].strip()
            content = response.content
        path = http.env.output_dir / f"image-{index}{_EXT.get(ctype, '.bin')}"
        path.write_bytes(content)
        images.append({"url": url if not url.startswith("data:") else url[:40] + "...",
                       "path": str(path), "content_type": ctype})
    return images


def cli_main(run: Callable[[Mapping[str, str]], dict[str, Any]]) -> None:
    """Run a client as a command: JSON on stdout, exit 0 on success, 1 on failure."""
    try:
        result = run(os.environ)
    except ClientFailure as exc:
        print(json.dumps(exc.to_dict()))
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))
    sys.exit(0)
