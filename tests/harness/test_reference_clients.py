"""Each provider's reference client over all its scenarios: zero deviations."""

from __future__ import annotations

import pytest

import contracts
from harness import RunOptions, load_client, profile, run

PROVIDERS = [p for p in contracts.available() if profile(p).reference_client]


def test_every_provider_with_a_contract_has_a_reference_client() -> None:
    assert list(contracts.available()) == PROVIDERS


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_reference_client_passes_every_scenario(provider: str) -> None:
    spec = profile(provider).reference_client
    assert spec is not None
    report = await run(RunOptions(provider, load_client(spec), startup_slack=2.0))
    assert [r.scenario for r in report.results] == [s.id for s in contracts.load(provider).scenarios]
    problems = [f"{r.scenario}: {d}" for r in report.results for d in r.deviations]
    assert problems == []
    assert report.exit_code == 0
    # Every scenario really ran against the mock, and the successes delivered real images.
    for result in report.results:
        assert result.exchanges, result.scenario
        if result.expect.get("outcome") == "success":
            assert result.result is not None and result.result.images
            assert all(i.width and i.height for i in result.result.images)
