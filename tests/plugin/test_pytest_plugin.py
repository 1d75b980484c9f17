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


def test_fixtures_accept_any_well_formed_key_as_serve_does(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import httpx, pytest

def test_my_own_key(cloudsway_mock):
    r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                   headers={"Authorization": "Bearer my-own-key"}, json={"prompts": "x"})
    assert r.status_code == 200

@pytest.mark.imagegen(api_keys=["pinned-key"], allow_deviations=True)
def test_a_marker_pins_keys(cloudsway_mock):
    assert cloudsway_mock.headers == {"Authorization": "Bearer pinned-key"}
    other = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                       headers={"Authorization": "Bearer my-own-key"}, json={"prompts": "x"})
    pinned = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                        headers=cloudsway_mock.headers, json={"prompts": "x"})
    assert (other.status_code, pinned.status_code) == (401, 200)
''')
    result.assert_outcomes(passed=2)


def test_a_deviation_failure_says_how_to_allow_an_intended_one(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import httpx, pytest

BODY = {"prompts": "x", "batchsize": 9}

def test_negative_without_marker(cloudsway_mock):
    r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                   headers=cloudsway_mock.headers, json=BODY)
    assert r.status_code == 400

@pytest.mark.imagegen(allow_deviations=["schema.request"])
def test_negative_with_the_rule_allowed(cloudsway_mock):
    r = httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
                   headers=cloudsway_mock.headers, json=BODY)
    assert r.status_code == 400

@pytest.mark.imagegen(allow_deviations=["client.poll-interval"])
def test_another_rule_allowed_still_fails(cloudsway_mock):
    httpx.post(cloudsway_mock.url + "/v2/ai/e/images/generations",
               headers=cloudsway_mock.headers, json=BODY)
''')
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*test_negative_without_marker*",
        "*schema.request*",
        "*If the test means it*allow it:*",
        "*@pytest.mark.imagegen(allow_deviations=?'schema.request'?)*allow_deviations=True for any*",
    ])


def test_an_unknown_scenario_is_a_usage_error_listing_the_valid_ones(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import pytest

@pytest.mark.imagegen(scenario="task-fail")
def test_scenario(cloudsway_mock):
    pass
''')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*test_scenario: @pytest.mark.imagegen: cloudsway has no scenario 'task-fail'. "
        "Did you mean 'task-fails'? Valid scenarios of cloudsway: happy-path*task-fails*",
    ])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(("marker", "says"), [
    pytest.param('scenario="task-fial"', "no provider has a scenario 'task-fial'", id="factory-scenario"),
    pytest.param('faults=["http503"]', "Did you mean 'http'?", id="unknown-fault"),
    pytest.param('alow_deviations=True', "Did you mean 'allow_deviations'?", id="misspelt-argument"),
])
def test_other_marker_mistakes_are_usage_errors(pytester: pytest.Pytester, marker: str, says: str) -> None:
    result = run(pytester, f'''
import pytest

@pytest.mark.imagegen({marker})
def test_it(imagegen_mock):
    imagegen_mock("cloudsway")
''')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert says in result.stderr.str()
