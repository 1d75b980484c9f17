"""Python callables in the frame: ``module:function`` runs as a child process in provider time."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from imagegen_conformance import contracts
from imagegen_conformance.harness import CallableClient, run_scenario
from imagegen_conformance.harness.run._frame import libfaketime_path

CLIENTS = Path(__file__).with_name("clients")


@pytest.mark.skipif(libfaketime_path() is None, reason="no libfaketime on this machine")
async def test_a_coroutine_callable_runs_in_provider_time_in_a_child_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(CLIENTS))
    cloudsway = contracts.load("cloudsway")
    client = CallableClient("async_cloudsway:run")
    result = await run_scenario(cloudsway, cloudsway.scenario("happy-path"), client,
                                extra_env={"PYTHONPATH": str(CLIENTS)})
    assert result.frame is not None and result.frame.kind == "faketime"
    assert result.deviations == []
    polls = [e for e in result.exchanges if e.operation == "getImageTask"]
    assert all(b.provider_time - a.provider_time >= 0.98 for a, b in itertools.pairwise(polls))
    # Its asyncio clock and time.time() were provider time: it ended "now" in the mock's frame,
    # after the mock stamped its last poll (a real-time clock would be seconds behind it) and
    # within a second of real time of it (a stalled machine only makes that longer).
    assert result.result is not None
    after = result.result.output["clock"] - polls[-1].provider_time
    assert -0.01 * result.frame.scale < after < 1.0 * result.frame.scale, (after, result.frame.scale)


async def test_a_function_object_runs_in_process_told_the_scale(
    cloudsway_faulty_client: object,
) -> None:
    cloudsway = contracts.load("cloudsway")
    client = CallableClient(cloudsway_faulty_client())  # type: ignore[operator]
    result = await run_scenario(cloudsway, cloudsway.scenario("happy-path"), client)
    assert result.frame is not None and result.frame.kind == "told"
    assert result.deviations == []
