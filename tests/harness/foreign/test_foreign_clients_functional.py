"""Clients written like production code, judged by ``imagegen-conformance run`` with its defaults.

The clients beside this file (Python ``requests``, Node 20 ``fetch``, bash + curl + jq) know
nothing of the harness but the base URL, key, request and output directory it hands them: they
sleep real seconds between polls, honour ``Retry-After`` in seconds and give up after minutes.
Run with no wrapper and no flag, the well-behaved ones pass every scenario of Cloudsway, fal and
yunyx, and each deliberate fault (``--fault NAME``) gets its rule and no other.
"""

from __future__ import annotations

import itertools
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from imagegen_conformance import contracts

HERE = Path(__file__).parent
LANGUAGES = {
    "python": [sys.executable, str(HERE / "client.py")],
    "node": ["node", str(HERE / "client.mjs")],
    "bash": ["bash", str(HERE / "client.sh")],
}
PROVIDERS = ("cloudsway", "fal", "yunyx")


def command(language: str, provider: str, fault: str | None = None) -> str:
    return shlex.join([*LANGUAGES[language], provider, *(["--fault", fault] if fault else [])])


WELL_BEHAVED = [
    pytest.param(language, provider, scenario.id, id=f"{language}-{provider}-{scenario.id}")
    for language in LANGUAGES
    for provider in PROVIDERS
    for scenario in contracts.load(provider).scenarios
]


@pytest.mark.parametrize(("language", "provider", "scenario"), WELL_BEHAVED)
def test_a_well_behaved_client_passes_every_scenario(
    imagegen_run_cli: Any, language: str, provider: str, scenario: str
) -> None:
    # One run per scenario (each has its own mock and client process anyway): a slow scenario
    # on a loaded machine stays within its own test's timeout.
    result = imagegen_run_cli(provider, command(language, provider), f"--scenario={scenario}")[scenario]
    assert imagegen_run_cli.rules(result) == set(), imagegen_run_cli.explain(result)


OUTCOME = "scenario.outcome"
# Each fault on the scenarios that expose it, and what a run must report: the fault's rule, and
# scenario.outcome where the fault makes the client end wrongly (it fails where it should
# succeed, or succeeds where it should fail) as a direct consequence.
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
    # (not fal: its public models accept requests without a key, as its contract says)
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

# A fault whose verdict rests on timing runs in every language: each language has its own cost
# per request, which the pacing scale must see through. The others are the same logic in each
# language, so each runs in one of them, in turn, to keep the suite short.
TIMED = {"no-pause", "poll-10ms", "ignore-retry-after", "poll-after-done", "retry-4xx"}
_untimed = itertools.count()
FAULTY = [
    pytest.param(language, fault, provider, scenario, expected, id=f"{language}-{provider}-{fault}")
    for fault, provider, scenario, expected in FAULTS
    for language in (LANGUAGES if fault in TIMED else [list(LANGUAGES)[next(_untimed) % len(LANGUAGES)]])
]


@pytest.mark.parametrize(("language", "fault", "provider", "scenario", "expected"), FAULTY)
def test_a_faulty_client_gets_its_rule_and_no_other(
    imagegen_run_cli: Any, language: str, fault: str, provider: str, scenario: str, expected: set[str]
) -> None:
    result = imagegen_run_cli(provider, command(language, provider, fault), f"--scenario={scenario}")
    assert imagegen_run_cli.rules(result[scenario]) == expected, imagegen_run_cli.explain(result[scenario])
