"""Memory of retained tasks, measured in a fresh process.

    python -m benchmarks._tasks_mem cloudsway 100000

Creates the tasks through the mock's own dispatch (as requests would), then prints one JSON line
with the growth of resident memory in MB; the journal (bounded) is part of what is measured.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from typing import Any

from imagegen_conformance.mocks import MockServer

from ._proc import rss_bytes

CREATE: dict[str, tuple[str, dict[str, Any], str]] = {
    "cloudsway": ("/v2/ai/b/images/generations", {"prompts": "p", "aspect_ratio": "1:1", "step": 4},
                  "api"),
    "fal": ("/fal-ai/flux-1/dev", {"prompt": "p"}, "queue"),
    "acedata": ("/flux/images", {"action": "generate", "prompt": "p", "model": "flux-dev",
                                 "size": "1024x1024", "async": True}, "api"),
}


async def main(provider: str, count: int) -> None:
    server = MockServer(provider, clock="manual", seed=1, max_tasks=max(count, 100_000))
    path, body, role = CREATE[provider]
    auth = {"Authorization": "Key k" if provider == "fal" else "Bearer k"}
    for _ in range(2_000):  # warm-up (imports, caches, first allocations); then forget them
        await server.request("POST", path, json=body, headers=auth, role=role)
    server.reset()
    gc.collect()
    before = rss_bytes(os.getpid())
    for _ in range(count):
        answer = await server.request("POST", path, json=body, headers=auth, role=role)
        assert answer.status == 200, answer.body
    gc.collect()
    after = rss_bytes(os.getpid())
    print(json.dumps({"tasks": len(server.tasks), "journal": len(server.journal),
                      "mb": (after - before) / 2**20}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
