"""The validating proxy in front of real mocks: identical bytes, live streams, no secret kept."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx

from imagegen_conformance import contracts
from imagegen_conformance.harness import ValidatingProxy, load_client, run_scenario

CANARY = "imagegen-canary-proxy-5f3c9a1e7d"


async def test_answers_are_byte_identical_to_the_mocks(serve_mock) -> None:
    running = await serve_mock("cloudsway", clock="manual", seed=3)
    proxy = ValidatingProxy("cloudsway", running.url)
    url = await proxy.start()
    try:
        headers = {"Authorization": f"Bearer {CANARY}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            created = await http.post("/v2/ai/ep/images/generations",
                                      json={"prompts": "fox", "batchsize": 2, "step": 4})
            task = created.json()["taskId"]
            running.server.clock.advance(60)
            done = await http.get(f"/v2/ai/ep/images/tasks/{task}")
            image_url = done.json()["imageUrls"][0]
            assert image_url.startswith(url)  # links lead back through the proxy
            image = await http.get(image_url)
            direct = await http.get(running.url + image_url[len(url):])
        mock_bodies = [e.response_body for e in running.server.journal.entries()]
        assert mock_bodies[:2] == [created.text, done.text]
        assert created.content == created.text.encode() and image.content == direct.content
        assert image.headers["content-type"] == "image/png"
        assert [e.operation for e in proxy.journal.entries()] == [
            "createImageTask", "getImageTask", "downloadImage"
        ]
        assert proxy.deviations == []
    finally:
        await proxy.close()


async def test_sse_passes_through_event_by_event(serve_mock) -> None:
    running = await serve_mock("fal", clock="manual", seed=1)
    proxy = ValidatingProxy("fal", running.url)
    url = await proxy.start()
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Key {CANARY}"}, timeout=10) as http:
            submitted = (await http.post(f"{url}/fal-ai/flux-1/dev", json={"prompt": "a fox"})).json()
            assert submitted["status_url"].startswith(url)
            async with http.stream("GET", submitted["status_url"] + "/stream") as stream:
                lines = stream.aiter_lines()
                first = await asyncio.wait_for(anext(lines), 5)
                # The first event is here while the request is still queued: nothing buffered.
                assert first.startswith("data: ") and json.loads(first[6:])["status"] == "IN_QUEUE"
                live = proxy.journal.entries()[-1]
                assert live.operation == "streamRequestStatus" and not live.complete
                running.server.clock.advance(600)
                rest = [line async for line in lines]
        statuses = [json.loads(line[6:])["status"] for line in [first, *rest] if line.startswith("data: ")]
        assert statuses[-1] == "COMPLETED" and statuses[0] == "IN_QUEUE"
        recorded = proxy.journal.entries()[-1]
        assert recorded.complete and "".join(recorded.events).count("data: ") == len(statuses)
    finally:
        await proxy.close()


async def test_runner_through_the_proxy_to_a_served_mock(serve_mock) -> None:
    running = await serve_mock("cloudsway", clock="scaled", time_scale=100, seed=2)
    contract = contracts.load("cloudsway")
    client = load_client("imagegen_conformance.clients.cloudsway:run")
    fired: set[str] = set()
    for scenario in ("happy-path", "transient-poll-503", "rate-limited-create"):
        result = await run_scenario(contract, contract.scenario(scenario), client,
                                    target=running.url, startup_slack=2.0)
        assert result.skipped is None and result.result is not None and result.result.ok, scenario
        assert result.deviations == [], scenario
        assert result.exchanges and result.exchanges[0].operation == "createImageTask"
        fired |= {f for e in running.server.journal.entries() for f in e.faults}
    # The scenarios' faults were set through the mock's admin API, and fired.
    assert fired == {"http:503;op=getImageTask;times=2", "rate_limit:1;op=createImageTask;times=1"}


async def test_live_targets_skip_scenarios_that_need_faults(serve_mock) -> None:
    running = await serve_mock("cloudsway", clock="scaled", time_scale=100, seed=2)
    proxy = ValidatingProxy("cloudsway", running.url)  # hides /__mock/: looks like a live endpoint
    contract = contracts.load("cloudsway")
    url = await proxy.start()
    try:
        scenario = contract.scenario("transient-poll-503")
        client = load_client("imagegen_conformance.clients.cloudsway:run")
        result = await run_scenario(contract, scenario, client, target=url + "/nomock")
        assert result.skipped is not None and "fault" in result.skipped
    finally:
        await proxy.close()


async def test_the_proxy_command_never_prints_or_records_the_key(serve_mock, tmp_path: Path) -> None:
    running = await serve_mock("cloudsway", clock="manual", seed=4)
    record = tmp_path / "record.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagegen_conformance", "proxy", "-p", "cloudsway", "--target", running.url,
        "--port", "0", "--record", str(record),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        proxy_url = banner.split()[2]
        async with httpx.AsyncClient(base_url=proxy_url) as http:
            created = await http.post(
                "/v2/ai/ep/images/generations", params={"key": CANARY},
                json={"prompts": "fox", "batchsize": 12}, headers={"Authorization": f"Bearer {CANARY}"},
            )
            assert created.status_code == 400
            journal = (await http.get("/__proxy/journal")).text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    printed = banner + out.decode() + err.decode()
    assert "schema.request" in printed and "/v2/ai/ep/images/generations" in printed
    mock_journal = json.dumps([e.to_dict() for e in running.server.journal.entries()])
    for text in (printed, record.read_text(), journal, mock_journal):
        assert CANARY not in text
    assert "Bearer <redacted>" in record.read_text()


async def test_ndjson_passes_through_line_by_line(serve_mock) -> None:
    running = await serve_mock("acedata", clock="manual", seed=1, options={"ndjson": "progress"})
    proxy = ValidatingProxy("acedata", running.url)
    url = await proxy.start()
    try:
        headers = {"Authorization": f"Bearer {CANARY}", "Accept": "application/x-ndjson"}
        body = {"action": "generate", "prompt": "a cat", "size": "1024x1024"}
        async with httpx.AsyncClient(timeout=10) as http, http.stream(
            "POST", f"{url}/flux/images", json=body, headers=headers
        ) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            lines = stream.aiter_lines()
            first = json.loads(await asyncio.wait_for(anext(lines), 5))
            assert "task_id" in first and not proxy.journal.entries()[-1].complete  # still generating
            running.server.clock.advance(300)
            last = json.loads([line async for line in lines][-1])
        assert last["success"] is True and last["data"]
        assert proxy.journal.entries()[-1].complete and proxy.deviations == []
    finally:
        await proxy.close()


async def test_each_streamed_event_is_validated_as_it_passes() -> None:
    from aiohttp import web

    from imagegen_conformance.harness import Deviation

    release = asyncio.Event()

    async def upstream_run(request: web.Request) -> web.StreamResponse:
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await stream.prepare(request)
        await stream.write(b"data: this is not json\n\n")
        await release.wait()  # the next event only once the test has seen the first judged
        await stream.write(b"event: ping\n\n")
        await stream.write(b'data: {"event": "workflow_finished", "task_id": 1}\n\n')
        await stream.write_eof()
        return stream

    app = web.Application()
    app.router.add_post("/v1/workflows/run", upstream_run)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found: list[Deviation] = []
    proxy = ValidatingProxy("dify", f"http://127.0.0.1:{runner.addresses[0][1]}", on_deviation=found.append)
    url = await proxy.start()
    try:
        body = {"inputs": {"prompt": "x"}, "response_mode": "streaming", "user": "u"}
        async with httpx.AsyncClient(timeout=10) as http, http.stream(
            "POST", f"{url}/v1/workflows/run", json=body, headers={"Authorization": "Bearer k"}
        ) as stream:
            lines = stream.aiter_lines()
            assert await asyncio.wait_for(anext(lines), 5) == "data: this is not json"
            for _ in range(100):
                if found:
                    break
                await asyncio.sleep(0.01)
            assert [(d.rule, d.path) for d in found] == [("schema.response", "response.events[0]")]
            release.set()
            rest = [line async for line in lines]
        assert "event: ping" in rest
        paths = [d.path or "" for d in found]
        # events count from 0 and the bare ping is event 1: task_id 1 is no string in event 2
        assert paths[0] == "response.events[0]" and "response.events[2]$.task_id" in paths
    finally:
        await proxy.close()
        await runner.cleanup()
