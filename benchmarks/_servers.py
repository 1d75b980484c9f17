"""Servers under test, each started in its own process: a mock, or a bare aiohttp baseline.

    python -m benchmarks._servers mock cloudsway [--time-scale S] [--fault SPEC]...
    python -m benchmarks._servers bare [--answer FILE]

``--answer FILE`` (JSON: status, headers, body_b64) makes the bare handler answer every request
with those captured bytes and headers, as they are: the fairest baseline for a mock's answer.
With ``chunks_b64`` instead of ``body_b64`` it writes those chunks as a chunked stream.

Each prints one JSON line, ``{"role": url, ...}``, once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from aiohttp import web

#: What the bare handler answers: about the size of a provider's status answer.
BARE_BODY = {
    "status": "pending", "completed": False, "imageUrls": [], "taskId": str(uuid.UUID(int=0)),
    "message": "", "progress": 0,
}


def captured_app(answer: dict[str, object]) -> web.Application:
    """A bare aiohttp handler answering one captured answer's status, headers and body bytes."""
    import base64

    body = base64.b64decode(str(answer["body_b64"]))
    status = int(str(answer["status"]))
    headers = [(str(k), str(v)) for k, v in answer["headers"]]  # type: ignore[attr-defined]

    async def anything(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def captured_stream_app(answer: dict[str, object]) -> web.Application:
    """A bare aiohttp handler writing one captured stream's chunks as they came (chunked)."""
    import base64

    chunks = [base64.b64decode(c) for c in answer["chunks_b64"]]  # type: ignore[attr-defined]
    status = int(str(answer["status"]))
    headers = [(str(k), str(v)) for k, v in answer["headers"]]  # type: ignore[attr-defined]

    async def anything(request: web.Request) -> web.StreamResponse:
        await request.read()
        stream = web.StreamResponse(status=status, headers=headers)
        stream.enable_chunked_encoding()
        try:
            await stream.prepare(request)
            for chunk in chunks:
                await stream.write(chunk)
            await stream.write_eof()
        except ConnectionResetError:
            pass  # the load generator closes its connections mid-stream when its time is up
        return stream

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def bare_app() -> web.Application:
    """The least an aiohttp handler can do: read the body, answer fixed JSON, keep no state."""

    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "success", "taskId": str(uuid.uuid4())})

    async def anything(request: web.Request) -> web.Response:
        await request.read()
        delay = request.headers.get("X-Bare-Latency-Ms")
        if delay:
            await asyncio.sleep(float(delay) / 1000)
        size = request.headers.get("X-Bare-Body-Bytes")
        if size:  # the same payload size as the mock's answer it is compared with
            return web.json_response({"pad": "x" * max(0, int(size) - 10)})
        return web.json_response(BARE_BODY)

    app = web.Application()
    app.router.add_post("/v2/ai/{endpoint}/images/generations", create)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["mock", "bare"])
    parser.add_argument("provider", nargs="?", default="cloudsway")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--fault", action="append", default=[])
    parser.add_argument("--answer", default=None, help="serve this captured answer (JSON file)")
    args = parser.parse_args()
    if args.kind == "bare":
        app = bare_app()
        if args.answer:
            with open(args.answer) as f:
                captured = json.load(f)
            app = captured_stream_app(captured) if "chunks_b64" in captured else captured_app(captured)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(json.dumps({"api": f"http://127.0.0.1:{port}"}), flush=True)
    else:
        from imagegen_conformance.mocks import MockServer, start

        server = MockServer(args.provider, seed=1, time_scale=args.time_scale, faults=args.fault)
        served = await start([server], ports={server.provider_id: 0})
        print(json.dumps({item.role: item.url for item in served.listeners}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
