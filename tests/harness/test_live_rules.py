"""Live rules in-process: a manual clock, so every gap between requests is exactly what we say."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx

from imagegen_conformance.harness.proxy import ValidatingProxy
from imagegen_conformance.harness.rules import LiveDeviation, LiveRules, Severity
from imagegen_conformance.mocks import MockServer, start
from imagegen_conformance.mocks.engine import Exchange

BASE = "/v2/ai/e/images"


def bearer(key: str, agent: str = "test-client/1") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "User-Agent": agent}


async def create(server: MockServer, headers: dict[str, str], **body: Any) -> str:
    answer = await server.request("POST", f"{BASE}/generations", json={"prompts": "x", **body},
                                  headers=headers)
    return str(json.loads(answer.body).get("taskId"))


async def poll(server: MockServer, task: str, headers: dict[str, str], times: int = 1,
               every: float = 0.0) -> None:
    for _ in range(times):
        await server.request("GET", f"{BASE}/tasks/{task}", headers=headers)
        server.clock.advance(every)


async def admin(server: MockServer, query: dict[str, str] | None = None) -> dict[str, Any]:
    answer = await server.request("GET", "/__mock/deviations", query=query)
    assert answer.status == 200, answer.body
    return dict(json.loads(answer.body))


async def test_polls_too_close_are_one_deviation_per_task_updated_as_polls_arrive() -> None:
    server = MockServer("cloudsway", clock="manual")
    seen: list[LiveDeviation] = []
    LiveRules("cloudsway", on_deviation=seen.append).attach(server)
    task = await create(server, bearer("k"))
    await poll(server, task, bearer("k"), times=2, every=0.1)
    first = (await admin(server))["deviations"]
    await poll(server, task, bearer("k"), times=2, every=0.05)
    later = (await admin(server))["deviations"]
    assert [d["rule"] for d in later] == ["client.poll-interval"] and len(seen) == 1
    assert first[0]["seq"] == later[0]["seq"] == 1
    assert first[0]["actual"] == "0.100 s" and later[0]["actual"] == "0.050 s"  # evidence updated


async def test_clients_are_told_apart_by_key_and_user_agent() -> None:
    server = MockServer("cloudsway", clock="manual")
    LiveRules("cloudsway").attach(server)
    # Two clients, each pacing its own task correctly, interleaved 0.3 s apart.
    tasks = {key: await create(server, bearer(key)) for key in ("alice", "bob")}
    for _ in range(3):
        for key in ("alice", "bob"):
            await poll(server, tasks[key], bearer(key), every=0.3)
    await create(server, bearer("alice", agent="other-tool/2"))
    found = await admin(server)
    assert found["deviations"] == []
    labels = [c["client"] for c in found["clients"]]
    assert len(labels) == 3 and sum("other-tool/2" in label for label in labels) == 1
    assert "alice" not in json.dumps(found) and "bob" not in json.dumps(found)


async def test_one_clients_fault_is_not_blamed_on_another() -> None:
    server = MockServer("cloudsway", clock="manual", faults=["rate_limit:2;op=createImageTask;times=1"])
    LiveRules("cloudsway").attach(server)
    await create(server, bearer("slow"))  # 429, Retry-After: 2
    await create(server, bearer("other"))  # another client, at once: not a retry of the first
    assert (await admin(server))["deviations"] == []
    await create(server, bearer("slow"))  # the same client, at once: that is a retry
    rules = [d["rule"] for d in (await admin(server))["deviations"]]
    assert rules == ["client.retry-after"]


async def test_since_severity_and_rule_filter_the_deviations() -> None:
    server = MockServer("cloudsway", clock="manual")
    LiveRules("cloudsway").attach(server)
    await create(server, {"Authorization": "Token k"}, batchsize=9)  # schema.request + auth-scheme
    task = await create(server, bearer("k"))
    await poll(server, task, bearer("k"), times=2)
    everything = await admin(server)
    assert [d["seq"] for d in everything["deviations"]] == [1, 2, 3]
    assert everything["last_seq"] == 3
    assert [d["rule"] for d in (await admin(server, {"since": "2"}))["deviations"]] == [
        "client.poll-interval"]
    only = await admin(server, {"rule": "client.auth-scheme"})
    assert [d["rule"] for d in only["deviations"]] == ["client.auth-scheme"]
    assert (await admin(server, {"severity": "critical"}))["deviations"] == []
    bad = await server.request("GET", "/__mock/deviations", query={"severity": "fatal"})
    assert bad.status == 400 and b"valid: info, warning, error, critical" in bad.body


async def test_reset_forgets_clients_and_deviations() -> None:
    server = MockServer("cloudsway", clock="manual")
    live = LiveRules("cloudsway").attach(server)
    task = await create(server, bearer("k"))
    await poll(server, task, bearer("k"), times=2)
    assert live.deviations()
    await server.request("POST", "/__mock/reset")
    assert live.deviations() == [] and live.clients() == []


async def test_the_deviations_endpoint_is_listed_with_the_admin_api() -> None:
    server = MockServer("cloudsway")
    LiveRules("cloudsway").attach(server)
    listing = json.loads((await server.request("GET", "/__mock/")).body)
    assert "GET /__mock/deviations" in listing["endpoints"]


async def test_a_stream_is_judged_once_it_has_ended() -> None:
    server = MockServer("dify", clock="manual")
    seen: list[Exchange] = []
    server.observe(seen.append)
    answer = await server.request(
        "POST", "/v1/workflows/run", headers={"Authorization": "Bearer k"},
        json={"inputs": {"prompt": "x"}, "response_mode": "streaming", "user": "u"})
    assert answer.is_stream and seen == []
    body = answer.body
    assert not isinstance(body, bytes | bytearray)
    async for _ in body:
        server.clock.advance(5)
    assert len(seen) == 1 and seen[0].complete and seen[0].events


async def test_an_observer_that_fails_is_recorded_not_swallowed() -> None:
    server = MockServer("cloudsway")

    def broken(_: Any) -> None:
        raise RuntimeError("observer bug")

    server.observe(broken)
    answer = await server.request("POST", f"{BASE}/generations", json={"prompts": "x"},
                                  headers=bearer("k"))
    assert answer.status == 200
    assert any("observer bug" in e for e in server.errors)


async def test_the_proxy_runs_the_behaviour_rules_on_what_passes() -> None:
    server = MockServer("cloudsway", clock="manual")
    served = await start([server], ports={"cloudsway": 0})
    proxy = ValidatingProxy("cloudsway", served.url("cloudsway"), live_rules=True)
    url = await proxy.start()
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            await http.post(f"{BASE}/generations", json={"prompts": "x"},
                            headers={"Authorization": "Token k"})
            found = (await http.get("/__proxy/deviations")).json()
        assert [d.rule for d in proxy.deviations] == ["client.auth-scheme"]
        assert [d["rule"] for d in found["deviations"]] == ["client.auth-scheme"]
        assert found["provider"] == "cloudsway"
        gate = await _verify(url)
        assert gate.returncode == 1 and "client.auth-scheme" in gate.stdout
    finally:
        await proxy.close()
        await served.close()


async def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "imagegen_conformance", "verify", "--target", *args],
        capture_output=True, text=True, timeout=60,
    )


async def test_verify_judges_a_mock_started_without_check_from_its_journal() -> None:
    server = MockServer("cloudsway", clock="manual")
    served = await start([server], ports={"cloudsway": 0})
    try:
        task = await create(server, bearer("k"))
        await poll(server, task, bearer("k"), times=2)
        gate = await _verify(served.url("cloudsway"), "--report", "json")
        assert gate.returncode == 1, gate.stderr
        report = json.loads(gate.stdout)
        assert [d["rule"] for s in report["scenarios"] for d in s["deviations"]] == [
            "client.poll-interval"]
        assert "without --check" in gate.stderr
        lenient = await _verify(served.url("cloudsway"), "--fail-on", "critical")
        assert lenient.returncode == 0
    finally:
        await served.close()


async def test_verify_exit_codes_for_what_is_not_a_mock() -> None:
    from aiohttp import web

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello", status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        other = await _verify(f"http://127.0.0.1:{port}")
        assert other.returncode == 2 and "serve --check" in other.stderr
    finally:
        await runner.cleanup()
    gone = await _verify(f"http://127.0.0.1:{port}")  # nothing listens there any more
    assert gone.returncode == 3 and "cannot reach" in gone.stderr
    bad = await _verify("ftp://x")
    assert bad.returncode == 2


def test_severity_filter_is_at_or_above() -> None:
    live = LiveRules("cloudsway")
    assert live.deviations(severity=Severity.WARNING) == []

