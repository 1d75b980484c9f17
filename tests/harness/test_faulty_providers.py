"""The faulty-client catalogue beyond Cloudsway: fal, yunyx, Dify and AceData."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from imagegen_conformance import contracts
from imagegen_conformance.harness import CallableClient, run_scenario

CATALOGUE = [
    pytest.param("fal", {}, "happy-path", None, set(), id="fal-unflawed"),
    pytest.param("fal", {"rebuild_dev": True}, "happy-path", None,
                 {"client.follows-urls", "scenario.outcome"}, id="fal-rebuilds-dev-urls"),
    pytest.param("fal", {"auth": "Bearer {key}"}, "happy-path", None,
                 {"client.auth-scheme", "scenario.outcome"}, id="fal-sends-bearer"),
    # fal asks for 0.1 s between polls: a slower clock keeps the round trip below that.
    pytest.param("fal", {"poll_every": 0.01}, "happy-path", 10.0, {"client.poll-interval"},
                 id="fal-polls-every-10ms"),
    pytest.param("fal", {"stream_events": 99}, "happy-path", None, set(), id="fal-stream-unflawed"),
    pytest.param("fal", {"stream_events": 1}, "happy-path", None,
                 {"client.reads-stream", "scenario.outcome"}, id="fal-drops-the-stream"),
    pytest.param("yunyx", {}, "happy-path", None, set(), id="yunyx-unflawed"),
    pytest.param("yunyx", {"download_after": 3700.0}, "happy-path", 20000.0,
                 {"client.downloads-before-expiry", "scenario.outcome"},
                 id="yunyx-downloads-after-the-hour"),
    pytest.param("dify", {}, "happy-path-streaming", None, set(), id="dify-unflawed"),
    pytest.param("dify", {"parse_every_line": True}, "happy-path-streaming", None,
                 {"client.reads-stream", "scenario.outcome"}, id="dify-chokes-on-pings"),
    pytest.param("dify", {"stop_after": "workflow_started"}, "happy-path-streaming", None,
                 {"client.reads-stream", "scenario.outcome"}, id="dify-hangs-up-early"),
    pytest.param("acedata", {}, "happy-path-async", None, set(), id="acedata-unflawed"),
    pytest.param("acedata", {"poll_every": 1.0}, "happy-path-async", None,
                 {"client.poll-interval"}, id="acedata-polls-every-second"),
    pytest.param("acedata", {"failed_is_success": True}, "task-fails", None,
                 {"client.surfaces-failure", "scenario.outcome"}, id="acedata-failed-as-success"),
]


@pytest.mark.parametrize(("provider", "flaws", "scenario", "scale", "expected"), CATALOGUE)
async def test_flaw_produces_its_deviation_and_no_other(
    imagegen_faulty_clients: dict[str, Callable[..., Any]], provider: str, flaws: dict[str, Any],
    scenario: str, scale: float | None, expected: set[str],
) -> None:
    contract = contracts.load(provider)
    client = CallableClient(imagegen_faulty_clients[provider](**flaws))
    result = await run_scenario(contract, contract.scenario(scenario), client, time_scale=scale,
                                startup_slack=1.0)
    assert {d.rule for d in result.deviations} == expected, [str(d) for d in result.deviations]
