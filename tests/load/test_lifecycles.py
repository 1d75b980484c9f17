"""1,000 concurrent full lifecycles across the five providers, over loopback sockets."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiohttp
import pytest

from imagegen_conformance.mocks import MockServer, start

pytestmark = pytest.mark.soak  # `python -m pytest -q -m soak`; CI runs it after the default suite

PROVIDERS = ("cloudsway", "acedata", "fal", "yunyx", "dify")
TOTAL = 1_000
SCALE = 1_000.0  # provider seconds per real second: a 2-minute AceData task takes 0.12 s


@pytest.mark.timeout(60)
async def test_a_thousand_concurrent_lifecycles_none_lost_none_twice(flows: dict[str, Any]) -> None:
    servers = [MockServer(p, time_scale=SCALE, seed=9) for p in PROVIDERS]
    served = await start(servers, ports={p: 0 for p in PROVIDERS})
    try:
        urls = {
            s.provider_id: {i.role: i.url for i in served.listeners if i.provider == s.provider_id}
            for s in servers
        }
        connector = aiohttp.TCPConnector(limit=200)
        timeout = aiohttp.ClientTimeout(total=45)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            jobs = []
            for n in range(TOTAL):
                provider = PROVIDERS[n % len(PROVIDERS)]
                flow, _ = flows[provider]
                jobs.append(flow(session, urls[provider], n))
            outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        await served.close()

    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert not failures, f"{len(failures)} lifecycles failed, first: {failures[0]!r}"
    per_provider: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for n, outcome in enumerate(outcomes):
        assert isinstance(outcome, tuple)
        per_provider[PROVIDERS[n % len(PROVIDERS)]].append(outcome)

    for server in servers:
        pid = server.provider_id
        seen = per_provider[pid]
        assert len(seen) == TOTAL // len(PROVIDERS), pid  # none lost
        ids = [task_id for task_id, _ in seen]
        assert len(set(ids)) == len(ids), f"{pid}: a task id was handed out twice"
        expected = flows[pid][1]
        wrong = [o for o in seen if o[1] != expected]
        assert not wrong, f"{pid}: {len(wrong)} lifecycles ended otherwise, e.g. {wrong[0]}"
        assert server.errors == [], f"{pid} handler crashed: {server.errors[:3]}"
        exchanges = server.journal.entries()
        server_errors = [e for e in exchanges if e.status is None or e.status >= 500]
        assert not server_errors, f"{pid}: {len(server_errors)} answers were 5xx or dropped"
        assert all(e.complete for e in exchanges), f"{pid}: an exchange was left incomplete"
        if pid != "yunyx":  # yunyx is synchronous: it stores no task
            created = [t for t in server.tasks]
            now = server.clock.now()
            stored = {t.id for t in created}
            assert stored <= set(ids), f"{pid}: the store holds tasks nobody created"
            # A task may be missing only because its retention passed: at 1000x a slow machine
            # stretches the run past fal's hour (3.6 s). Then it was created over one retention ago.
            retention = server.contract.behaviour.retention.task
            for missing in set(ids) - stored:
                born = min(e.provider_time for e in exchanges
                           if missing in e.path or missing in (e.response_body or ""))
                assert retention is not None and now - born > retention, f"{pid}: task {missing} lost"
            # Each task reached its terminal state once: it is terminal now and stays so.
            assert all(t.is_terminal(now) for t in created), pid
