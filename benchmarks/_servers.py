"""Servers under test, each started in its own process: the mock, and a bare aiohttp baseline.

    python -m benchmarks._servers mock cloudsway
    python -m benchmarks._servers bare cloudsway

Each prints its base URL on stdout once it accepts connections.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from aiohttp import web


def bare_app() -> web.Application:
    """The least an aiohttp handler can do for the same two routes: fixed JSON, no state."""

    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "success", "taskId": str(uuid.uuid4())})

    async def query(request: web.Request) -> web.Response:
        return web.json_response({"status": "pending", "completed": False, "imageUrls": []})

    app = web.Application()
    app.router.add_post("/v2/ai/{endpoint}/images/generations", create)
    app.router.add_get("/v2/ai/{endpoint}/images/tasks/{task_id}", query)
    return app


async def main(kind: str, provider: str) -> None:
    if kind == "bare":
        runner = web.AppRunner(bare_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"http://127.0.0.1:{port}", flush=True)
    else:
        from mocks import MockServer, start

        served = await start([MockServer(provider, seed=1)], ports={provider: 0})
        print(served.url(provider), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "cloudsway"))
