"""Fixtures of the harness tests: the catalogue of deliberately faulty clients.

A faulty client is a plain function ``client(env) -> {"images": [...]}`` built by
:func:`cloudsway_client` with one flaw switched on; without flaws it behaves like a careful
client (the tests check that too, so a flaw is the only difference). The fixtures
``cloudsway_faulty_client`` and ``imagegen_faulty_clients`` hand the factories to tests
(pytest runs with --import-mode=importlib, so helper modules are not importable by name).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

Client = Callable[[Mapping[str, str]], dict[str, Any]]


class Failed(Exception):
    pass


def cloudsway_client(
    *,
    poll_every: float = 1.0,
    retry_after: str = "honour",  # honour | ignore
    polls_after_terminal: int = 0,
    deadline: float | None = 300.0,  # None: never gives up
    body_patch: Mapping[str, Any] | None = None,
    failed_is_success: bool = False,
    on_poll_5xx: str = "backoff",  # backoff | fatal | hot
    resend_after_4xx: int = 0,
    auth: str = "Bearer {key}",
    poll_path: str = "tasks",
    download: bool = True,
    claim_images: bool = True,
) -> Client:
    """A Cloudsway client with the chosen flaw(s)."""

    def run(env: Mapping[str, str]) -> dict[str, Any]:
        scale = float(env["IMAGEGEN_TIME_SCALE"])

        def sleep(seconds: float) -> None:
            time.sleep(seconds / scale)

        base = env["IMAGEGEN_BASE_URL"] + "/v2/ai/faulty/images"
        body = {**json.loads(env["IMAGEGEN_REQUEST"]), **(body_patch or {})}
        headers = {"Authorization": auth.format(key=env["IMAGEGEN_API_KEY"])}
        with httpx.Client(headers=headers, timeout=10) as http:
            while True:
                created = http.post(f"{base}/generations", json=body)
                if created.status_code == 429:
                    if retry_after == "honour":
                        sleep(float(created.headers.get("Retry-After", "1")))
                    continue
                break
            if created.status_code >= 400:
                for _ in range(resend_after_4xx):
                    http.post(f"{base}/generations", json=body)
                raise Failed(f"create answered {created.status_code}")
            task_id = created.json()["taskId"]
            started = time.monotonic()
            backoff = 1.0
            hot = False
            while True:
                if deadline is not None and (time.monotonic() - started) * scale > deadline:
                    raise Failed("gave up")
                if not hot:
                    sleep(poll_every)
                answer = http.get(f"{base}/{poll_path}/{task_id}")
                hot = False
                if answer.status_code >= 500:
                    if on_poll_5xx == "fatal":
                        raise Failed(f"poll answered {answer.status_code}")
                    if on_poll_5xx == "backoff":
                        sleep(backoff)
                        backoff *= 2
                    hot = on_poll_5xx == "hot"
                    continue
                if answer.status_code >= 400:
                    raise Failed(f"poll answered {answer.status_code}")
                task = answer.json()
                if task["status"] == "completed":
                    for _ in range(polls_after_terminal):
                        sleep(poll_every)
                        http.get(f"{base}/{poll_path}/{task_id}")
                    break
                if task["status"] == "failed":
                    if failed_is_success:
                        return {"images": []}
                    raise Failed("task failed")
            urls = task["imageUrls"]
            images: list[Any] = []
            out = Path(env["IMAGEGEN_OUTPUT_DIR"])
            for i, url in enumerate(urls if claim_images else []):
                if download:
                    path = out / f"{i}.png"
                    path.write_bytes(http.get(url).content)
                    images.append({"url": url, "path": str(path)})
                else:
                    images.append(url)
            return {"images": images}

    return run


@pytest.fixture(scope="session")
def cloudsway_faulty_client() -> Callable[..., Client]:
    """``cloudsway_faulty_client(poll_every=0.01)``: a Cloudsway client with that flaw."""
    return cloudsway_client


def fal_client(
    *,
    rebuild_dev: bool = False,
    auth: str = "Key {key}",
    poll_every: float = 0.5,
    stream_events: int | None = None,  # use the status stream; stop after this many events
) -> Client:
    """A fal queue client with the chosen flaw(s)."""

    def run(env: Mapping[str, str]) -> dict[str, Any]:
        scale = float(env["IMAGEGEN_TIME_SCALE"])
        base = env["IMAGEGEN_BASE_URL"]
        headers = {"Authorization": auth.format(key=env["IMAGEGEN_API_KEY"])}
        with httpx.Client(headers=headers, timeout=10) as http:
            submitted = http.post(f"{base}/fal-ai/flux-1/dev", json=json.loads(env["IMAGEGEN_REQUEST"]))
            if submitted.status_code >= 400:
                raise Failed(f"submit answered {submitted.status_code}")
            body = submitted.json()
            status_url, response_url = body["status_url"], body["response_url"]
            if rebuild_dev:  # the classic mistake: the model's subpath kept in the queue URLs
                response_url = f"{base}/fal-ai/flux-1/dev/requests/{body['request_id']}"
                status_url = response_url + "/status"
            if stream_events is not None:
                last = ""
                with http.stream("GET", status_url + "/stream") as stream:
                    seen = 0
                    for line in stream.iter_lines():
                        if line.startswith("data: "):
                            seen, last = seen + 1, line
                            if seen >= stream_events:
                                break
                if not last or json.loads(last[6:])["status"] != "COMPLETED":
                    raise Failed("the stream ended before COMPLETED")
            else:
                while True:
                    answer = http.get(status_url)
                    if answer.status_code >= 400:
                        raise Failed(f"status answered {answer.status_code}")
                    if answer.json()["status"] == "COMPLETED":
                        break
                    time.sleep(poll_every / scale)
            result = http.get(response_url)
            if result.status_code >= 400:
                raise Failed(f"result answered {result.status_code}")
            return {"images": [img["url"] for img in result.json()["images"]]}

    return run


def yunyx_client(*, download_after: float = 0.0) -> Client:
    """A yunyx client that waits ``download_after`` provider seconds before downloading."""

    def run(env: Mapping[str, str]) -> dict[str, Any]:
        scale = float(env["IMAGEGEN_TIME_SCALE"])
        headers = {"Authorization": f"Bearer {env['IMAGEGEN_API_KEY']}"}
        with httpx.Client(headers=headers, timeout=10) as http:
            answer = http.post(env["IMAGEGEN_BASE_URL"] + "/v1/images/generations",
                               json=json.loads(env["IMAGEGEN_REQUEST"]))
            if answer.status_code >= 400:
                raise Failed(f"generate answered {answer.status_code}")
            time.sleep(download_after / scale)
            images = []
            for i, item in enumerate(answer.json()["images"]):
                image = http.get(item["url"])
                if image.status_code != 200:
                    raise Failed(f"download answered {image.status_code}")
                path = Path(env["IMAGEGEN_OUTPUT_DIR"]) / f"{i}.png"
                path.write_bytes(image.content)
                images.append(str(path))
            return {"images": images}

    return run




def dify_client(*, parse_every_line: bool = False, stop_after: str | None = None) -> Client:
    """A streaming Dify client that chokes on pings, or hangs up after one event."""

    def run(env: Mapping[str, str]) -> dict[str, Any]:
        base = env["IMAGEGEN_BASE_URL"]
        headers = {"Authorization": f"Bearer {env['IMAGEGEN_API_KEY']}"}
        with httpx.Client(headers=headers, timeout=10) as http, http.stream(
            "POST", base + "/v1/workflows/run", json=json.loads(env["IMAGEGEN_REQUEST"])
        ) as stream:
            for line in stream.iter_lines():
                if not line:
                    continue
                if parse_every_line:  # the flaw: "event: ping" is no JSON
                    event = json.loads(line.removeprefix("data: "))
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                else:
                    continue
                if event.get("event") == stop_after:
                    raise Failed(f"hung up after {stop_after}")
                if event.get("event") == "workflow_finished":
                    files = event["data"]["outputs"]["files"]
                    return {"images": [base + f["url"] for f in files]}
        raise Failed("the stream ended without workflow_finished")

    return run


def acedata_client(*, poll_every: float = 3.0, failed_is_success: bool = False) -> Client:
    """An async AceData client with the chosen flaw."""

    def run(env: Mapping[str, str]) -> dict[str, Any]:
        scale = float(env["IMAGEGEN_TIME_SCALE"])
        base = env["IMAGEGEN_BASE_URL"]
        headers = {"Authorization": f"Bearer {env['IMAGEGEN_API_KEY']}"}
        with httpx.Client(headers=headers, timeout=10) as http:
            task = http.post(base + "/flux/images", json=json.loads(env["IMAGEGEN_REQUEST"])).json()
            while True:
                time.sleep(poll_every / scale)
                record = http.post(base + "/flux/tasks", json={"action": "retrieve", "id": task["task_id"]})
                response = record.json().get("response")
                if not response:
                    continue
                if response.get("success") is False:
                    if failed_is_success:
                        return {"images": []}
                    raise Failed("task failed")
                if response.get("data"):
                    return {"images": [d["image_url"] for d in response["data"]]}

    return run


@pytest.fixture(scope="session")
def imagegen_faulty_clients() -> dict[str, Callable[..., Client]]:
    """Faulty-client factories by provider."""
    return {"cloudsway": cloudsway_client, "fal": fal_client, "yunyx": yunyx_client,
            "dify": dify_client, "acedata": acedata_client}
