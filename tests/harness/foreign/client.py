#!/usr/bin/env python3
"""An image client written the way a product team writes one, with `requests`.

It knows nothing of the conformance harness but where to go: ``IMAGEGEN_BASE_URL``,
``IMAGEGEN_API_KEY``, ``IMAGEGEN_REQUEST`` (the body to send) and ``IMAGEGEN_OUTPUT_DIR``.
Its waits are real seconds (1.5 s between polls, ``Retry-After`` in seconds), its deadline is
minutes, and nothing in it divides by a time scale.

    python client.py cloudsway|fal|yunyx [--fault FAULT]

``--fault`` switches on one deliberate mistake (see FAULTS) for the harness to find.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

POLL_SECONDS = 1.5
DEADLINE_SECONDS = 300.0  # five minutes for a task, then give up
TIMEOUT = (10, 120)  # connect, read
ATTEMPTS = 5
TRANSIENT = {500, 502, 503, 504}

FAULTS = {
    "no-pause": "polls again as soon as an answer arrives",
    "poll-10ms": "polls every 10 ms",
    "ignore-retry-after": "resends a 429 at once",
    "poll-after-done": "polls three more times after the task finished",
    "no-auth": "sends no Authorization header",
    "rebuild-urls": "fal: builds the status and result URLs itself (with the model's /dev)",
    "failed-as-success": "reports a failed task as a success without images",
    "give-up-on-503": "treats the first 5xx as fatal",
    "retry-4xx": "resends a rejected request unchanged, twice",
}


class Failure(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Api:
    """One session with the provider and the retry policy of a careful client."""

    def __init__(self, authorization: str, fault: str | None) -> None:
        self.fault = fault
        self.session = requests.Session()
        if fault != "no-auth":
            self.session.headers["Authorization"] = authorization

    def call(self, method: str, url: str, *, idempotent: bool, retry_5xx: bool | None = None,
             **kwargs: Any) -> requests.Response:
        retry = idempotent if retry_5xx is None else retry_5xx
        backoff = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                answer = self.session.request(method, url, timeout=TIMEOUT, **kwargs)
            except requests.ConnectionError as exc:
                if not retry or last:
                    raise Failure(f"{method} {url}: {exc}") from exc
                time.sleep(backoff)
                backoff *= 2
                continue
            status = answer.status_code
            if (status == 429 or ("Retry-After" in answer.headers and status in TRANSIENT)) and not last:
                if self.fault != "ignore-retry-after":
                    time.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            if status in TRANSIENT and retry and not last and self.fault != "give-up-on-503":
                time.sleep(backoff)
                backoff *= 2
                continue
            if 400 <= status < 500 and self.fault == "retry-4xx" and attempt < 3:
                time.sleep(1)
                continue
            if status >= 400:
                raise Failure(f"{method} {url} answered HTTP {status}: {answer.text[:200]}", status)
            return answer
        raise Failure(f"{method} {url}: still failing after {ATTEMPTS} attempts")

    def poll_pause(self) -> None:
        if self.fault == "poll-10ms":
            time.sleep(0.01)
        elif self.fault != "no-pause":
            time.sleep(POLL_SECONDS)


def save_images(api: Api, urls: list[str]) -> list[dict[str, str]]:
    out = Path(os.environ["IMAGEGEN_OUTPUT_DIR"])
    saved = []
    for index, url in enumerate(urls):
        if url.startswith("data:"):  # fal sync_mode answers the image inline
            content = base64.b64decode(url.partition(",")[2])
        else:
            content = api.call("GET", url, idempotent=True).content
        path = out / f"image-{index}"
        path.write_bytes(content)
        saved.append({"url": url[:60], "path": str(path)})
    return saved


def cloudsway(api: Api, base: str, body: dict[str, Any]) -> list[dict[str, str]]:
    images = f"{base}/v2/ai/my-endpoint/images"
    task_id = api.call("POST", f"{images}/generations", json=body, idempotent=False).json()["taskId"]
    started = time.monotonic()
    while True:
        api.poll_pause()
        task = api.call("GET", f"{images}/tasks/{task_id}", idempotent=True).json()
        if task["status"] == "completed":
            if api.fault == "poll-after-done":
                for _ in range(3):
                    api.poll_pause()
                    api.call("GET", f"{images}/tasks/{task_id}", idempotent=True)
            return save_images(api, task["imageUrls"])
        if task["status"] == "failed":
            if api.fault == "failed-as-success":
                return []
            raise Failure(f"task {task_id} failed: {task.get('message')}")
        if time.monotonic() - started > DEADLINE_SECONDS:
            raise Failure(f"task {task_id} not done after {DEADLINE_SECONDS:g} s; giving up")


def fal(api: Api, base: str, body: dict[str, Any]) -> list[dict[str, str]]:
    queued = api.call("POST", f"{base}/fal-ai/flux-1/dev", json=body, idempotent=False).json()
    status_url, response_url = queued["status_url"], queued["response_url"]
    if api.fault == "rebuild-urls":
        response_url = f"{base}/fal-ai/flux-1/dev/requests/{queued['request_id']}"
        status_url = f"{response_url}/status"
    started = time.monotonic()
    while api.call("GET", status_url, idempotent=True).json()["status"] != "COMPLETED":
        if time.monotonic() - started > DEADLINE_SECONDS:
            with contextlib.suppress(Failure):  # free the runner; the request is given up anyway
                api.call("PUT", queued.get("cancel_url") or f"{response_url}/cancel", idempotent=True)
            raise Failure(f"request {queued['request_id']} not done after {DEADLINE_SECONDS:g} s; "
                          "cancelled")
        api.poll_pause()
    if api.fault == "poll-after-done":
        for _ in range(3):
            api.poll_pause()
            api.call("GET", status_url, idempotent=True)
    try:
        result = api.call("GET", response_url, idempotent=True).json()
    except Failure:
        if api.fault == "failed-as-success":
            return []
        raise
    return save_images(api, [image["url"] for image in result["images"]])


def yunyx(api: Api, base: str, body: dict[str, Any]) -> list[dict[str, str]]:
    # 503 "overloaded" means the request was not processed: safe to send again.
    answer = api.call("POST", f"{base}/v1/images/generations", json=body, idempotent=False,
                      retry_5xx=True).json()
    return save_images(api, [image["url"] for image in answer["images"]])  # links expire in 1 h


PROVIDERS = {"cloudsway": (cloudsway, "Bearer"), "fal": (fal, "Key"), "yunyx": (yunyx, "Bearer")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("provider", choices=sorted(PROVIDERS))
    parser.add_argument("--fault", choices=sorted(FAULTS))
    args = parser.parse_args()
    generate, scheme = PROVIDERS[args.provider]
    api = Api(f"{scheme} {os.environ['IMAGEGEN_API_KEY']}", args.fault)
    try:
        images = generate(api, os.environ["IMAGEGEN_BASE_URL"].rstrip("/"),
                          json.loads(os.environ["IMAGEGEN_REQUEST"]))
    except (Failure, requests.RequestException, KeyError, ValueError) as exc:
        status = getattr(exc, "status", None)
        print(json.dumps({"error": {"message": f"{type(exc).__name__}: {exc}", "status": status}}))
        return 1
    print(json.dumps({"images": images}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
