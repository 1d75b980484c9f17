"""Official SDKs, unmodified, through ``imagegen-conformance run``: what judging in provider time finds.

Under a scaled clock an SDK's real-second waits look a hundred times longer than they are, so a
retry that comes too soon or a read timeout shorter than the provider's silences passes
unnoticed. In the client's own time frame (``run``'s default) each shows up as a deviation on the
scenario that exposes it. Each case reads the evidence, not only the rule id.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def sdk(script: str) -> str:
    return f"{sys.executable} {HERE / script}"


def test_fal_client_retries_a_429_without_reading_retry_after(imagegen_run_cli: Any) -> None:
    # fal-client retries 408/409/429 after 0.1 s x 2^n plus jitter and never reads the header
    # (fal_client/client.py, _maybe_retry_request); `--tls` because it hard-codes https.
    result = imagegen_run_cli("fal", sdk("sdk_fal.py"), "--tls", "--scenario=rate-limited-submit")
    scenario = result["rate-limited-submit"]
    assert imagegen_run_cli.rules(scenario) == {"client.retry-after"}, imagegen_run_cli.explain(scenario)
    (deviation,) = scenario["deviations"]
    assert deviation["expected"] == ">= 1 s"
    # Its backoff, 0.1-0.2 s, plus its round trip at x27.6 (22 real ms is 0.6 provider s).
    assert float(deviation["actual"].removesuffix(" s")) < 0.8


@pytest.mark.parametrize(("scenario", "expected"), [
    pytest.param("happy-path-blocking", {"scenario.outcome"}, id="blocking-run"),
    pytest.param("happy-path-streaming", {"client.reads-stream", "scenario.outcome"}, id="stream"),
])
def test_dify_client_python_times_out_before_dify_answers(
    imagegen_run_cli: Any, scenario: str, expected: set[str]
) -> None:
    # dify-client-python keeps one httpx.Client() with httpx's default 5 s read timeout
    # (dify_client/_clientx.py); a blocking run takes 12-25 s and a stream sends a ping only
    # every 10 s while the image node works.
    result = imagegen_run_cli("dify", sdk("sdk_dify.py"), f"--scenario={scenario}")[scenario]
    assert imagegen_run_cli.rules(result) == expected, imagegen_run_cli.explain(result)
    assert "ReadTimeout" in (result["result"]["error"] or ""), imagegen_run_cli.explain(result)


def test_acedatacloud_retries_a_500_sooner_than_the_contract_backoff(imagegen_run_cli: Any) -> None:
    # acedatacloud waits min(2^attempt, 8) + up to 0.5 s of jitter: 1-1.5 s, then 2-2.5 s
    # (acedatacloud/_runtime/transport.py, _backoff_delay); the contract asks 3 s.
    result = imagegen_run_cli("acedata", sdk("sdk_acedata.py"), "--scenario=transient-poll-500")
    scenario = result["transient-poll-500"]
    assert imagegen_run_cli.rules(scenario) == {"client.retries-transient"}, \
        imagegen_run_cli.explain(scenario)
    # The first wait (1-1.5 s) is flagged however loaded the machine: 1.5 provider s of margin
    # is 18 real ms of round trip at x83.6. The second (2-2.5 s) has 0.5 s (6 ms) at worst,
    # so a stalled round trip may lift it past 3 s: it is checked when it is reported.
    gaps = sorted(float(d["actual"].removesuffix(" s")) for d in scenario["deviations"])
    assert all(d["expected"] == ">= 3 s" for d in scenario["deviations"])
    assert 1 <= len(gaps) <= 2 and 1.0 <= gaps[0] < 2.0 and all(g < 3.0 for g in gaps), gaps
