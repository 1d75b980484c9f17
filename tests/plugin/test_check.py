"""`imagegen-conformance check`: Schemathesis over the contract, against a mock or a target URL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imagegen_conformance import contracts
from imagegen_conformance.mocks import MockServer, ServeThread

pytestmark = pytest.mark.soak  # `python -m pytest -q -m soak`; CI runs it after the default suite

CLI = [sys.executable, "-m", "imagegen_conformance", "check"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("provider", contracts.available())
def test_check_finds_nothing_on_the_mock(provider: str) -> None:
    # A small budget here; `check --max-examples 100` is the full run (docs/schemathesis.md).
    examples = "10" if provider == "cloudsway" else "3"
    result = subprocess.run([*CLI, "-p", provider, "--max-examples", examples, "--seed", "1"],
                            capture_output=True, text=True, timeout=230)
    assert result.returncode == 0, result.stdout[-3000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("====") and " in " in line]
    assert summaries and not any("fail" in line or "error" in line for line in summaries), summaries


@pytest.mark.timeout(240)
def test_check_reports_a_target_that_breaks_its_contract() -> None:
    # A target that answers every poll with 200 and a broken body must be caught.
    with ServeThread(lambda: [MockServer("cloudsway", api_keys=["k"], faults=["malformed"])]) as st:
        result = subprocess.run(
            [*CLI, "-p", "cloudsway", "--target", st.url("cloudsway"), "--api-key", "k",
             "--max-examples", "5", "--seed", "1"],
            capture_output=True, text=True, timeout=230,
        )
    assert result.returncode == 1
    assert "Failures" in result.stdout or "failures" in result.stdout


def test_check_rejects_an_unknown_provider() -> None:
    result = subprocess.run([*CLI, "-p", "falai"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Did you mean 'fal'?" in result.stderr
