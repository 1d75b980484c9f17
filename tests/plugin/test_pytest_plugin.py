"""The pytest plugin, tested as users meet it: through pytester, in a subprocess."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"
INI = "[pytest]\naddopts = -p no:cacheprovider\n"


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makepyfile(test_user=source)
    return pytester.runpytest_subprocess("-q", *args, timeout=120)


def test_readme_first_example_runs_as_is(pytester: pytest.Pytester) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "def test_" in b)
    assert len(example.strip().splitlines()) <= 15
    result = run(pytester, example)
    result.assert_outcomes(passed=1)


def test_fixture_is_reset_per_test_and_offers_url_journal_clock_faults(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import httpx, pytest

@pytest.mark.imagegen(clock="manual")
def test_first(cloudsway_mock):
    r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                   headers=cloudsway_mock.headers, json={"prompts": "x"})
    assert r.status_code == 200
    cloudsway_mock.advance(60)
    s = httpx.get(cloudsway_mock.url + f"/v2/ai/e/images/tasks/{r.json()['taskId']}",
                  headers=cloudsway_mock.headers).json()
    assert s["completed"] is True
    assert [e.operation for e in cloudsway_mock.journal()] == ["createImageTask", "getImageTask"]

@pytest.mark.imagegen(clock="manual")
def test_second_starts_clean(cloudsway_mock):
    assert cloudsway_mock.journal() == [] and cloudsway_mock.tasks() == []
    cloudsway_mock.fault("http:503;times=1")
    r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                   headers=cloudsway_mock.headers, json={"prompts": "x"})
    assert r.status_code == 503
''')
    result.assert_outcomes(passed=2)


def test_marker_sets_faults_and_scenario(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import httpx, pytest

@pytest.mark.imagegen(faults=["rate_limit:3;op=createImageTask;times=1"], allow_deviations=True)
def test_rate_limited(cloudsway_mock):
    r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                   headers=cloudsway_mock.headers, json={"prompts": "x"})
    assert (r.status_code, r.headers["Retry-After"]) == (429, "3")

@pytest.mark.imagegen(scenario="task-fails", clock="manual")
def test_scenario(cloudsway_mock):
    r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                   headers=cloudsway_mock.headers, json={"prompts": "x"})
    cloudsway_mock.advance(60)
    s = httpx.get(cloudsway_mock.url + f"/v2/ai/e/images/tasks/{r.json()['taskId']}",
                  headers=cloudsway_mock.headers).json()
    assert s["status"] == "failed"
''')
    result.assert_outcomes(passed=2)


def test_a_deviation_fails_the_test_with_its_evidence(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import httpx

def test_sends_batchsize_nine(cloudsway_mock):
    r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                   headers=cloudsway_mock.headers, json={"prompts": "x", "batchsize": 9})
    assert r.status_code == 400  # the client "handles" it, but it broke the contract
''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*contract deviation(s)*", "*schema.request*", "*batchsize*"])


def test_deviations_below_the_threshold_pass(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import httpx

def test_sends_batchsize_nine(cloudsway_mock):
    httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
               headers=cloudsway_mock.headers, json={"prompts": "x", "batchsize": 9})
''', "--imagegen-fail-on", "critical")
    result.assert_outcomes(passed=1)


def test_live_option_skips_with_the_reason_without_credentials(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("CLOUDSWAY_API_KEY", "CLOUDSWAY_ENDPOINT_PATH", "DIFY_API_KEY", "DIFY_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    result = run(pytester, '''
def test_live(cloudsway_mock):
    raise AssertionError("must not run without credentials")
''', "--imagegen-live", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*cloudsway needs CLOUDSWAY_API_KEY, CLOUDSWAY_ENDPOINT_PATH*"])


def test_live_option_uses_the_environment_when_credentials_exist(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDSWAY_API_KEY", "live-key")
    monkeypatch.setenv("CLOUDSWAY_ENDPOINT_PATH", "abc")
    monkeypatch.setenv("CLOUDSWAY_BASE_URL", "https://example.invalid")
    result = run(pytester, '''
def test_live(cloudsway_mock):
    assert cloudsway_mock.url == "https://example.invalid"
    assert cloudsway_mock.headers == {"Authorization": "Bearer live-key"}
''', "--imagegen-live")
    result.assert_outcomes(passed=1)


def test_respx_fixture_serves_in_process(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import httpx

def test_in_process(imagegen_respx):
    server = imagegen_respx("cloudsway", clock="manual")
    r = httpx.post("https://genaiapi.cloudsway.net/v2/ai/e/images/generations",
                   headers={"Authorization": "Bearer k"}, json={"prompts": "x"})
    assert r.status_code == 200 and len(server.tasks) == 1
''')
    result.assert_outcomes(passed=1)


def test_options_are_grouped_and_prefixed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*image-generation provider mocks*", "*--imagegen-live*",
                                "*--imagegen-fail-on*"])
