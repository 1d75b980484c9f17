"""Load-test helpers: one full lifecycle per provider, as a plain aiohttp client drives it.

Every test here is a soak run (``python -m pytest -q -m soak``): thousands of lifecycles,
disconnects, shutdowns with requests in flight. The default suite leaves them to that command.

Each flow returns the id of the task it created and the terminal outcome it saw; it raises
:class:`Unexpected` on any answer the flow did not ask for (a 5xx, an unknown shape).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import pytest

POLL = 0.005  # real seconds between polls; the mocks run on a fast scaled clock


class Unexpected(AssertionError):
    """An answer no fault asked for."""


async def _json(resp: aiohttp.ClientResponse, *ok: int) -> Any:
    text = await resp.text()
    if resp.status not in ok:
        raise Unexpected(f"{resp.method} {resp.url.path}: {resp.status} {text[:300]}")
    import json

    return json.loads(text)


async def cloudsway(session: aiohttp.ClientSession, urls: Mapping[str, str], n: int) -> tuple[str, str]:
    base = urls["api"]
    auth = {"Authorization": "Bearer load-key"}
    body = {"prompts": f"load {n}", "aspect_ratio": "1:1", "step": 4}
    async with session.post(f"{base}/v2/ai/load/images/generations", json=body, headers=auth) as r:
        task_id = (await _json(r, 200))["taskId"]
    while True:
        async with session.get(f"{base}/v2/ai/load/images/tasks/{task_id}", headers=auth) as r:
            data = await _json(r, 200)
        if data.get("completed"):
            return task_id, str(data.get("status"))
        await asyncio.sleep(POLL)


async def acedata(session: aiohttp.ClientSession, urls: Mapping[str, str], n: int) -> tuple[str, str]:
    base = urls["api"]
    auth = {"Authorization": "Bearer load-key"}
    body = {"action": "generate", "prompt": f"load {n}", "model": "flux-dev", "size": "1024x1024",
            "async": True}
    async with session.post(f"{base}/flux/images", json=body, headers=auth) as r:
        task_id = (await _json(r, 200))["task_id"]
    while True:
        async with session.post(f"{base}/flux/tasks", json={"action": "retrieve", "id": task_id},
                                headers=auth) as r:
            record = await _json(r, 200)
        response = record.get("response")
        if response and "data" in response:
            return task_id, "success" if response.get("success") else "failed"
        await asyncio.sleep(POLL)


async def fal(session: aiohttp.ClientSession, urls: Mapping[str, str], n: int) -> tuple[str, str]:
    base = urls["queue"]
    auth = {"Authorization": "Key load-key"}
    async with session.post(f"{base}/fal-ai/flux-1/dev", json={"prompt": f"load {n}"}, headers=auth) as r:
        submitted = await _json(r, 200)
    request_id = submitted["request_id"]
    while True:
        async with session.get(f"{base}/fal-ai/flux-1/requests/{request_id}/status", headers=auth) as r:
            status = await _json(r, 200, 202)
        if status["status"] == "COMPLETED":
            break
        await asyncio.sleep(POLL)
    async with session.get(f"{base}/fal-ai/flux-1/requests/{request_id}", headers=auth) as r:
        result = await _json(r, 200)
    return request_id, "success" if result.get("images") else "empty"


async def yunyx(session: aiohttp.ClientSession, urls: Mapping[str, str], n: int) -> tuple[str, str]:
    base = urls["api"]
    auth = {"Authorization": "Bearer load-key"}
    body = {"model": "FLUX.1-schnell", "prompt": f"load {n}", "image_size": "1024x1024"}
    async with session.post(f"{base}/v1/images/generations", json=body, headers=auth) as r:
        data = await _json(r, 200)
    # A synchronous API: the first image link identifies the answer.
    return str(data["images"][0]["url"]), "success"


async def dify(session: aiohttp.ClientSession, urls: Mapping[str, str], n: int) -> tuple[str, str]:
    base = urls["api"]
    auth = {"Authorization": "Bearer app-load-key"}
    body = {"inputs": {"prompt": f"load {n}"}, "response_mode": "blocking", "user": f"user-{n}"}
    async with session.post(f"{base}/v1/workflows/run", json=body, headers=auth) as r:
        data = await _json(r, 200)
    run_id = data["workflow_run_id"]
    async with session.get(f"{base}/v1/workflows/run/{run_id}", headers=auth) as r:
        detail = await _json(r, 200)
    return run_id, str(detail["status"])


Flow = Callable[[aiohttp.ClientSession, Mapping[str, str], int], Awaitable[tuple[str, str]]]

#: provider -> (flow, the outcome a fault-free lifecycle ends in)
FLOWS: dict[str, tuple[Flow, str]] = {
    "cloudsway": (cloudsway, "completed"),
    "acedata": (acedata, "success"),
    "fal": (fal, "success"),
    "yunyx": (yunyx, "success"),
    "dify": (dify, "succeeded"),
}


@pytest.fixture
def flows() -> dict[str, tuple[Flow, str]]:
    """provider -> (lifecycle coroutine, the outcome it must end in)."""
    return FLOWS

