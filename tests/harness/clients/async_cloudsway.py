"""A coroutine Cloudsway client with real-second sleeps (``async_cloudsway:run``), for the frame tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx


async def run(env: Mapping[str, str]) -> dict[str, Any]:
    base = env["IMAGEGEN_BASE_URL"] + "/v2/ai/async/images"
    headers = {"Authorization": f"Bearer {env['IMAGEGEN_API_KEY']}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        task = (await http.post(f"{base}/generations", json=json.loads(env["IMAGEGEN_REQUEST"]))).json()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)  # a provider second in the frame
            status = (await http.get(f"{base}/tasks/{task['taskId']}")).json()
            if status["status"] == "failed":
                raise RuntimeError("the task failed")
            if status["status"] == "completed":
                return {"images": status["imageUrls"], "clock": time.time()}
    raise RuntimeError("gave up")
