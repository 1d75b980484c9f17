"""Exit status precedence, the first-seen state file, and the Prometheus text format."""

from __future__ import annotations

import re
from pathlib import Path

from imagegen_conformance.harness.live._probe import (
    EXIT_CODES,
    Drift,
    ProbeResult,
    exit_code,
    load_state,
    render_prometheus,
    save_state,
)


def _r(provider: str, status: str) -> ProbeResult:
    return ProbeResult(provider, status)


def test_the_most_severe_result_decides_the_exit_status() -> None:
    assert exit_code([_r("fal", "healthy"), _r("dify", "drift")]) == 1
    assert exit_code([_r("fal", "timeout"), _r("dify", "drift")]) == 6
    assert exit_code([_r("fal", "unreachable"), _r("dify", "unauthorized")]) == 3
    assert exit_code([_r("fal", "failed"), _r("dify", "healthy")]) == 7
    # Named explicitly, a provider without credentials is a problem; under "all" it is skipped.
    assert exit_code([_r("fal", "healthy"), _r("dify", "not_configured")]) == 4
    assert exit_code([_r("fal", "healthy"), _r("dify", "not_configured")], every=True) == 0
    assert exit_code([_r("fal", "not_configured")], every=True) == 4
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)  # one code per result


def _drift(provider: str, field: str, first: str) -> Drift:
    return Drift(provider, "schema.response", field, "schema required", {}, "m", first, "later",
                 "error")


def test_state_keeps_first_sightings_and_forgets_drift_that_went_away(tmp_path: Path) -> None:
    path = tmp_path / "state" / "probe.json"
    assert load_state(path) == {"drift": {}}
    fal = _r("fal", "drift")
    fal.drift = [_drift("fal", "response.body$.a", "T1"), _drift("fal", "response.body$.b", "T1")]
    dify = _r("dify", "drift")
    dify.drift = [_drift("dify", "response.body$.c", "T1")]
    save_state(path, load_state(path), [fal, dify])
    state = load_state(path)
    assert len(state["drift"]) == 3
    # Next run: fal still shows a, no longer b; dify is unreachable (so nothing is known of it).
    fal.drift = [_drift("fal", "response.body$.a", "T1")]
    save_state(path, state, [fal, _r("dify", "unreachable")])
    kept = load_state(path)["drift"]
    assert sorted(k.split("|")[2] for k in kept) == ["response.body$.a", "response.body$.c"]
    path.write_text("not json")
    assert load_state(path) == {"drift": {}}


def test_prometheus_text_format_is_well_formed() -> None:
    ok = _r("fal", "healthy")
    ok.phases = {"submit": 0.1, "queue": 0.2, "run": 0.3, "download": 0.05}
    bad = _r("dify", "drift")
    bad.drift = [_drift("dify", 'response.body$["a\\"b"]', "T1")]
    text = render_prometheus([ok, bad])
    sample = re.compile(r'^[a-z_]+\{([a-z]+="([^"\\]|\\.)*",?)+\} -?[0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'imagegen_probe_status{provider="dify",status="drift"} 1' in text
    assert 'imagegen_probe_phase_seconds{provider="fal",phase="run"} 0.300000' in text
    assert 'imagegen_probe_up{provider="dify"} 1' in text
