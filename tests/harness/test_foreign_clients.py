"""Clients written like production code, judged by ``imagegen-conformance run`` with its defaults.

The clients in ``foreign/`` (Python ``requests``, Node 20 ``fetch``, bash + curl + jq) know
nothing of the harness but the base URL, key, request and output directory it hands them: they
sleep real seconds between polls, honour ``Retry-After`` in seconds and give up after minutes.
Run with no wrapper and no flag, the well-behaved ones pass every scenario of Cloudsway, fal and
yunyx, and each deliberate fault (``--fault NAME``) gets its rule and no other.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from imagegen_conformance import contracts
from imagegen_conformance.harness.cli import main

FOREIGN = Path(__file__).with_name("foreign")
LANGUAGES = {
    "python": [sys.executable, str(FOREIGN / "client.py")],
    "node": ["node", str(FOREIGN / "client.mjs")],
    "bash": ["bash", str(FOREIGN / "client.sh")],
}
PROVIDERS = ("cloudsway", "fal", "yunyx")


def command(language: str, provider: str, fault: str | None = None) -> str:
    argv = [*LANGUAGES[language], provider, *(["--fault", fault] if fault else [])]
    return shlex.join(argv)


def run(client: str, provider: str, scenarios: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """``imagegen-conformance run -p PROVIDER -c CLIENT``: each scenario's JSON report, by id.

    Only the report's format and place are chosen; every option that shapes a run keeps its
    default (no --time-scale, --startup-slack, --tls or --seed).
    """
    with tempfile.TemporaryDirectory(prefix="foreign-report-") as tmp:
        report = Path(tmp) / "report.json"
        result = CliRunner().invoke(main, [
            "run", "-p", provider, "-c", client, "--report", "json", "--out", str(report),
            *(f"--scenario={s}" for s in scenarios),
        ])
        assert result.exit_code in (0, 1), (result.exit_code, result.stderr, result.exception)
        data = json.loads(report.read_text())
    by_id = {s["scenario"]: s for s in data["scenarios"]}
    assert result.exit_code == (0 if data["ok"] else 1)
    return by_id


def rules(result: dict[str, Any]) -> set[str]:
    return {d["rule"] for d in result["deviations"]}


def explain(result: dict[str, Any]) -> str:
    """What went wrong, for the assertion message: each deviation and the client's own words."""
    lines = [f"{d['rule']}: {d['message']}" for d in result["deviations"]]
    client = result["result"]
    lines.append(f"client ok={client['ok']} error={client.get('error')!r}")
    lines.append(f"stderr: {(client.get('stderr') or '')[-600:]}")
    return "\n".join(lines)


@functools.cache
def catalogue(language: str, provider: str) -> dict[str, dict[str, Any]]:
    """One ``run`` over every scenario of the provider (cached: the tests below read it)."""
    return run(command(language, provider), provider)


WELL_BEHAVED = [
    pytest.param(language, provider, scenario.id, id=f"{language}-{provider}-{scenario.id}")
    for language in LANGUAGES
    for provider in PROVIDERS
    for scenario in contracts.load(provider).scenarios
]


@pytest.mark.parametrize(("language", "provider", "scenario"), WELL_BEHAVED)
def test_a_well_behaved_client_passes_every_scenario(language: str, provider: str, scenario: str) -> None:
    result = catalogue(language, provider)[scenario]
    assert rules(result) == set(), explain(result)


OUTCOME = "scenario.outcome"  # the client ends wrongly too: a consequence of the fault, not another
# Each fault on the scenarios that expose it, with what a run must report: its rule, and the
# wrong ending it causes where the fault makes the client end wrongly.
FAULTS: list[tuple[str, str, str, set[str]]] = [
    ("no-pause", "cloudsway", "happy-path", {"client.poll-interval"}),
    ("no-pause", "fal", "happy-path", {"client.poll-interval"}),
    ("poll-10ms", "cloudsway", "happy-path", {"client.poll-interval"}),
    ("poll-10ms", "fal", "happy-path", {"client.poll-interval"}),
    ("ignore-retry-after", "cloudsway", "rate-limited-create", {"client.retry-after"}),
    ("ignore-retry-after", "fal", "rate-limited-submit", {"client.retry-after"}),
    ("ignore-retry-after", "yunyx", "rate-limited", {"client.retry-after"}),
    ("poll-after-done", "cloudsway", "happy-path", {"client.stops-at-terminal"}),
    ("poll-after-done", "fal", "happy-path", {"client.stops-at-terminal"}),
    ("no-auth", "cloudsway", "happy-path", {"client.auth-scheme", OUTCOME}),
    ("no-auth", "fal", "happy-path", {"client.auth-scheme", OUTCOME}),
    ("no-auth", "yunyx", "happy-path", {"client.auth-scheme", OUTCOME}),
    ("rebuild-urls", "fal", "happy-path", {"client.follows-urls", OUTCOME}),
    ("failed-as-success", "cloudsway", "task-fails", {"client.surfaces-failure", OUTCOME}),
    ("failed-as-success", "fal", "model-error", {"client.surfaces-failure", OUTCOME}),
    ("give-up-on-503", "cloudsway", "transient-poll-503", {"client.retries-transient", OUTCOME}),
    ("give-up-on-503", "fal", "transient-status-503", {"client.retries-transient", OUTCOME}),
    ("give-up-on-503", "yunyx", "overloaded-once", {"client.retries-transient", OUTCOME}),
    ("retry-4xx", "cloudsway", "bad-request", {"client.no-blind-retry"}),
    ("retry-4xx", "yunyx", "bad-size", {"client.no-blind-retry"}),
]

FAULTY = [
    pytest.param(language, fault, provider, scenario, expected,
                 id=f"{language}-{provider}-{fault}")
    for language in LANGUAGES
    for fault, provider, scenario, expected in FAULTS
]


@pytest.mark.parametrize(("language", "fault", "provider", "scenario", "expected"), FAULTY)
def test_a_faulty_client_gets_its_rule_and_no_other(
    language: str, fault: str, provider: str, scenario: str, expected: set[str]
) -> None:
    result = run(command(language, provider, fault), provider, (scenario,))[scenario]
    assert rules(result) == expected, explain(result)
