"""`serve --workers 2 --store redis://...` over real sockets and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

AUTH = {"Authorization": "Bearer k"}
FAL = {"Authorization": "Key k"}


@dataclass
class Workers:
    """A `serve --workers N --worker-ports` process group: the shared URL and each worker's."""

    proc: asyncio.subprocess.Process
    shared: dict[str, str] = field(default_factory=dict)  # "fal", "fal:run" -> url
    own: dict[int, dict[str, str]] = field(default_factory=dict)  # worker -> name -> url

    def kill_all(self) -> None:
        """SIGKILL the parent and every worker at once (they share a process group)."""
        os.killpg(self.proc.pid, signal.SIGKILL)


StartWorkers = Callable[..., Awaitable[Workers]]


@pytest.fixture
async def workers() -> AsyncIterator[StartWorkers]:
    started: list[Workers] = []

    async def start(store: str, *args: str, count: int = 2) -> Workers:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "imagegen_conformance", "serve", "--port", "0", "--workers",
            str(count), "--worker-ports", "--store", store, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        running = Workers(proc)
        started.append(running)
        assert proc.stdout is not None and proc.stderr is not None
        while len(running.own) < count or any(len(v) < len(running.shared) for v in running.own.values()):
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
            if not line:
                raise AssertionError("serve ended: " + (await proc.stderr.read()).decode())
            if line[0] == "worker":
                running.own.setdefault(int(line[1]), {})[line[2]] = line[3]
            else:
                running.shared[line[0]] = line[1]
        return running

    yield start
    for running in started:
        if running.proc.returncode is None:
            running.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(running.proc.wait(), 15)
            except TimeoutError:
                running.kill_all()
                await running.proc.wait()


async def get_json(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kw) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


async def test_a_task_created_through_worker_1_completes_through_worker_2(
    workers: StartWorkers, redis_url: str
) -> None:
    w = await workers(redis_url, "-p", "cloudsway", "--clock", "manual")
    one, two = w.own[1]["cloudsway"], w.own[2]["cloudsway"]
    async with aiohttp.ClientSession() as s:
        _, created = await get_json(s, "POST", f"{one}/v2/ai/ep/images/generations", headers=AUTH,
                                    json={"prompts": "a fox"})
        task = f"/v2/ai/ep/images/tasks/{created['taskId']}"
        status, body = await get_json(s, "GET", two + task, headers=AUTH)
        assert (status, body["status"]) == (200, "pending")
        await get_json(s, "POST", f"{two}/__mock/clock/advance", json={"seconds": 60})
        status, body = await get_json(s, "GET", one + task, headers=AUTH)
        assert body["completed"] is True
        link = body["imageUrls"][0].replace(one, two)  # signed by worker 1, served by worker 2
        async with s.get(link) as r:
            assert r.status == 200 and (await r.read())[:4] == b"\x89PNG"
        for url in (one, two, w.shared["cloudsway"]):
            _, health = await get_json(s, "GET", f"{url}/__mock/health")
            assert health["tasks"] == 1 and health["store"] == redis_url


async def test_two_workers_deliver_a_fal_webhook_once_fire_a_counted_fault_twice_and_list_everything(
    workers: StartWorkers, redis_url: str, receiver: Any
) -> None:
    w = await workers(redis_url, "-p", "fal", "--clock", "manual")
    q1, q2 = w.own[1]["fal"], w.own[2]["fal"]
    async with aiohttp.ClientSession() as s:
        _, submitted = await get_json(s, "POST", f"{q1}/fal-ai/flux-1/dev", headers=FAL,
                                      params={"fal_webhook": receiver.url}, json={"prompt": "a fox"})
        status_path = f"/fal-ai/flux-1/requests/{submitted['request_id']}/status"
        code, _ = await get_json(s, "POST", f"{q2}/__mock/faults",
                                 json={"spec": "http:503;op=getRequestStatus;times=2"})
        assert code == 201
        codes = [(await get_json(s, "GET", url + status_path, headers=FAL))[0] for url in (q1, q2) * 4]
        assert codes.count(503) == 2 and codes.count(202) == 6, codes
        await get_json(s, "POST", f"{q2}/__mock/clock/advance", json={"seconds": 600})
        await asyncio.wait_for(receiver.queue.get(), 10)
        for url in (q1, q2):  # both see it finished; neither sends it again
            assert (await get_json(s, "GET", url + status_path, headers=FAL))[0] == 200
        await asyncio.sleep(0.5)
        assert len(receiver.received) == 1
        assert receiver.received[0]["body"]["status"] == "OK"
        journals = [(await get_json(s, "GET", f"{u}/__mock/journal"))[1] for u in (q1, q2)]
        deliveries = [(await get_json(s, "GET", f"{u}/__mock/deliveries"))[1] for u in (q1, q2)]
    assert journals[0] == journals[1]
    ops = [e["operation"] for e in journals[0]["exchanges"]]
    assert ops == ["submitRequest"] + ["getRequestStatus"] * 10
    assert [e["seq"] for e in journals[0]["exchanges"]] == list(range(1, 12))
    assert deliveries[0] == deliveries[1]
    assert [d["status"] for d in deliveries[0]["deliveries"]] == ["delivered"]


async def test_a_run_fault_given_to_every_worker_is_counted_once(
    workers: StartWorkers, redis_url: str
) -> None:
    w = await workers(redis_url, "-p", "cloudsway", "--clock", "manual",
                      "--fault", "http:500;op=getImageTask;times=3")
    one, two = w.own[1]["cloudsway"], w.own[2]["cloudsway"]
    async with aiohttp.ClientSession() as s:
        _, created = await get_json(s, "POST", f"{one}/v2/ai/ep/images/generations", headers=AUTH,
                                    json={"prompts": "a fox"})
        task = f"/v2/ai/ep/images/tasks/{created['taskId']}"
        codes = [(await get_json(s, "GET", url + task, headers=AUTH))[0] for url in (one, two) * 4]
    assert codes.count(500) == 3 and codes.count(200) == 5, codes


async def test_every_task_answers_as_the_contract_says_after_sigkill_of_every_worker(
    workers: StartWorkers, redis_url: str
) -> None:
    args = ("-p", "cloudsway", "--clock", "manual")
    w = await workers(redis_url, *args)
    urls = [w.own[1]["cloudsway"], w.own[2]["cloudsway"]]
    ids = []
    async with aiohttp.ClientSession() as s:
        for n in range(12):  # tasks at every phase: pending, processing, completed
            _, created = await get_json(s, "POST", f"{urls[n % 2]}/v2/ai/ep/images/generations",
                                        headers=AUTH, json={"prompts": f"task {n}"})
            ids.append(created["taskId"])
            await get_json(s, "POST", f"{urls[n % 2]}/__mock/clock/advance", json={"seconds": 0.5})
        _, before = await get_json(s, "GET", f"{urls[0]}/__mock/tasks")
        w.kill_all()
        await w.proc.wait()
        again = await workers(redis_url, *args)
        urls = [again.own[1]["cloudsway"], again.own[2]["cloudsway"]]
        _, after = await get_json(s, "GET", f"{urls[1]}/__mock/tasks")
        states = {t["id"]: t["state"] for t in before["tasks"]}
        assert {t["id"]: t["state"] for t in after["tasks"]} == states
        assert set(states.values()) == {"pending", "processing", "completed"}
        for n, task_id in enumerate(ids):
            _, body = await get_json(s, "GET", f"{urls[n % 2]}/v2/ai/ep/images/tasks/{task_id}",
                                     headers=AUTH)
            assert body["status"] == states[task_id], task_id
        await get_json(s, "POST", f"{urls[0]}/__mock/clock/advance", json={"seconds": 10})
        for task_id in ids:
            _, body = await get_json(s, "GET", f"{urls[1]}/v2/ai/ep/images/tasks/{task_id}", headers=AUTH)
            assert body["completed"] is True


async def test_redis_stopped_mid_run_means_provider_503s_then_correct_answers(
    workers: StartWorkers, own_redis: Any
) -> None:
    w = await workers(own_redis.url, "-p", "cloudsway", "--clock", "manual")
    one, two = w.own[1]["cloudsway"], w.own[2]["cloudsway"]
    async with aiohttp.ClientSession() as s:
        _, created = await get_json(s, "POST", f"{one}/v2/ai/ep/images/generations", headers=AUTH,
                                    json={"prompts": "a fox"})
        task = f"/v2/ai/ep/images/tasks/{created['taskId']}"
        own_redis.stop(save=True)
        for url in (one, two):
            async with s.get(url + task, headers=AUTH) as r:
                assert r.status == 503 and r.headers["X-Mock-Error"] == "store-unavailable"
                body = await r.json()
            assert set(body) == {"error"}  # Cloudsway's own error envelope
            async with s.post(f"{url}/v2/ai/ep/images/generations", headers=AUTH,
                              json={"prompts": "lost"}) as r:
                assert r.status == 503
        own_redis.start()
        for url in (one, two):
            status, body = await get_json(s, "GET", url + task, headers=AUTH)
            assert (status, body["status"]) == (200, "pending")
        await get_json(s, "POST", f"{two}/__mock/clock/advance", json={"seconds": 60})
        _, body = await get_json(s, "GET", one + task, headers=AUTH)
        assert body["completed"] is True
    assert w.proc.returncode is None  # no crash


async def test_an_unreachable_store_at_start_is_one_line_naming_the_url() -> None:
    for extra in ((), ("--workers", "2")):
        proc = subprocess.run(
            [sys.executable, "-m", "imagegen_conformance", "serve", "-p", "cloudsway", "--port", "0",
             "--store", "redis://127.0.0.1:1/0", *extra],
            capture_output=True, text=True, timeout=30,
        )
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "redis://127.0.0.1:1/0" in lines[0], proc.stderr


async def test_workers_without_a_shared_store_is_a_usage_error_saying_what_to_pass() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imagegen_conformance", "serve", "-p", "cloudsway", "--workers", "2"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2 and "--store redis://" in proc.stderr


async def test_check_with_workers_is_a_usage_error_naming_verify(redis_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imagegen_conformance", "serve", "-p", "cloudsway", "--workers", "2",
         "--store", redis_url, "--check"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2 and "verify --target" in proc.stderr, proc.stderr


async def test_dify_on_two_workers_streams_stops_and_serves_files_through_either(
    workers: StartWorkers, redis_url: str
) -> None:
    w = await workers(redis_url, "-p", "dify", "--clock", "manual")
    one, two = w.own[1]["dify"], w.own[2]["dify"]
    dify = {"Authorization": "Bearer app-test"}
    run = {"inputs": {"prompt": "a fox", "model_name": "v1-5-pruned-emaonly"}, "user": "u"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{one}/v1/workflows/run", headers=dify,
                          json={**run, "response_mode": "streaming"}) as stream:
            first = json.loads((await stream.content.readline())[len(b"data: "):])
            assert first["event"] == "workflow_started"
            _, stopped = await get_json(s, "POST", f"{two}/v1/workflows/tasks/{first['task_id']}/stop",
                                        headers=dify, json={"user": "u"})
            assert stopped == {"result": "success"}
            rest = await asyncio.wait_for(stream.read(), 10)  # worker 1's stream ends: stopped
        events = [json.loads(line[len(b"data: "):]) for line in rest.split(b"\n")
                  if line.startswith(b"data: ")]
        assert events[-1]["event"] == "workflow_finished" and events[-1]["data"]["status"] == "stopped"
        blocking = asyncio.ensure_future(get_json(s, "POST", f"{two}/v1/workflows/run", headers=dify,
                                                  json={**run, "response_mode": "blocking"}))
        for _ in range(200):  # until the run, started at some moment of these, has ended
            await get_json(s, "POST", f"{one}/__mock/clock/advance", json={"seconds": 30})
            await asyncio.wait([blocking], timeout=0.05)
            if blocking.done():
                break
        status, done = await blocking
        assert status == 200 and done["data"]["status"] == "succeeded"
        _, detail = await get_json(s, "GET", f"{one}/v1/workflows/run/{done['workflow_run_id']}",
                                   headers=dify)
        assert detail["status"] == "succeeded"
        (link,) = [f["url"] for v in done["data"]["outputs"].values() if isinstance(v, list) for f in v]
        async with s.get(one + link if link.startswith("/") else link.replace(two, one)) as r:
            assert r.status == 200 and (await r.read())[:4] == b"\x89PNG"  # signed by 2, read from 1
