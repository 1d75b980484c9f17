"""The faulty-client catalogue: each flaw produces its expected deviation and no unrelated one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from imagegen_conformance import contracts
from imagegen_conformance.harness import CallableClient, run_scenario

CATALOGUE = [
    # Timing flaws run on a slower clock (10x), so a loaded machine's round trips stay far
    # below the provider seconds being judged.
    pytest.param({"poll_every": 0.01, "time_scale": 10.0}, "happy-path", {"client.poll-interval"},
                 id="polls-every-10ms"),
    pytest.param({"retry_after": "ignore", "time_scale": 10.0}, "rate-limited-create",
                 {"client.retry-after"}, id="ignores-retry-after"),
    pytest.param({"polls_after_terminal": 3}, "happy-path", {"client.stops-at-terminal"},
                 id="keeps-polling-after-completed"),
    pytest.param({"deadline": None}, "never-finishes", {"scenario.outcome"},
                 id="never-stops-polling"),
    # 150 provider s past the scenario's 400 s and 350 s short of the harness's stop: at x100
    # a stalled round trip must last 1.5 real s before either bound is crossed.
    pytest.param({"deadline": 550.0, "time_scale": 100.0}, "never-finishes", {"scenario.deadline"},
                 id="gives-up-too-late"),
    pytest.param({"body_patch": {"batchsize": 9}}, "happy-path",
                 {"schema.request", "scenario.outcome"}, id="sends-batchsize-9"),
    pytest.param({"body_patch": {"aspect_ratio": "5:4"}}, "happy-path",
                 {"schema.request", "scenario.outcome"}, id="sends-unknown-aspect-ratio"),
    pytest.param({"failed_is_success": True}, "task-fails",
                 {"client.surfaces-failure", "scenario.outcome"}, id="failed-task-as-success"),
    pytest.param({"on_poll_5xx": "fatal"}, "transient-poll-503",
                 {"client.retries-transient", "scenario.outcome"}, id="gives-up-on-first-503"),
    pytest.param({"on_poll_5xx": "hot", "time_scale": 10.0}, "transient-poll-503",
                 {"client.retries-transient"}, id="retries-503-without-backoff"),
    pytest.param({"resend_after_4xx": 2}, "bad-request", {"client.no-blind-retry"},
                 id="resends-the-400"),
    pytest.param({"auth": "Token {key}"}, "happy-path", {"client.auth-scheme", "scenario.outcome"},
                 id="token-instead-of-bearer"),
    pytest.param({"auth": "{key}"}, "happy-path", {"client.auth-scheme", "scenario.outcome"},
                 id="key-without-scheme"),
    pytest.param({"poll_path": "task"}, "happy-path", {"schema.endpoint", "scenario.outcome"},
                 id="polls-a-rebuilt-path"),
    pytest.param({"claim_images": False}, "happy-path", {"scenario.outcome"},
                 id="empty-success"),
    pytest.param({"download": False, "poll_every": 1.0}, "batch-portrait", set(),
                 id="returns-urls-only-is-fine"),
]


async def _run(factory: Callable[..., Any], flaws: dict[str, Any], scenario: str) -> set[str]:
    contract = contracts.load("cloudsway")
    flaws = dict(flaws)
    scale = flaws.pop("time_scale", None)
    client = CallableClient(factory(**flaws))
    result = await run_scenario(contract, contract.scenario(scenario), client, startup_slack=1.0,
                                time_scale=scale)
    return {d.rule for d in result.deviations}


@pytest.mark.parametrize(("flaws", "scenario", "expected"), CATALOGUE)
async def test_flaw_produces_its_deviation_and_no_other(
    cloudsway_faulty_client: Callable[..., Any], flaws: dict[str, Any], scenario: str, expected: set[str]
) -> None:
    assert await _run(cloudsway_faulty_client, flaws, scenario) == expected


@pytest.mark.parametrize("scenario", [s.id for s in contracts.load("cloudsway").scenarios])
async def test_the_unflawed_faulty_client_is_clean(
    cloudsway_faulty_client: Callable[..., Any], scenario: str
) -> None:
    # The catalogue's base client without a flaw passes everything: each flaw is the only cause.
    assert await _run(cloudsway_faulty_client, {}, scenario) == set()
