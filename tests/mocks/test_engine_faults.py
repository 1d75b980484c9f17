"""The engine owns the fault model: faults refused where they mean nothing, tasks made in one
place, expired links computed from the provider's own link lifetime."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from click.testing import CliRunner

from imagegen_conformance import contracts
from imagegen_conformance.contracts import ContractError
from imagegen_conformance.harness.cli import main
from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import FaultNotApplicable

DIFY_AUTH = {"Authorization": "Bearer app-test"}
DIFY_RUN = {"inputs": {"prompt": "a fox", "model_name": "dosmix_"}, "response_mode": "blocking",
            "user": "u"}
REASON = "nothing is streamed"  # contracts/cloudsway/behaviour.yaml faults.not_applicable.truncate


# --- not applicable: refused wherever it is set ---------------------------------------


def test_a_run_fault_that_does_not_apply_is_refused_with_the_reason() -> None:
    with pytest.raises(FaultNotApplicable, match=f"'truncate'.*cloudsway: {REASON}"):
        MockServer("cloudsway", faults=["truncate:2"])
    MockServer("acedata", faults=["truncate:2"])  # it streams NDJSON: fine there


def test_serve_refuses_a_fault_that_does_not_apply() -> None:
    result = CliRunner().invoke(main, ["serve", "-p", "cloudsway", "--port", "0", "--fault", "truncate"])
    assert result.exit_code == 2  # a usage error, as every bad --fault
    assert "does not apply to cloudsway" in result.output and REASON in result.output


async def test_admin_api_refuses_it_in_the_providers_envelope() -> None:
    server = MockServer("cloudsway", clock="manual")
    response = await server.request("POST", "/__mock/faults", json={"spec": "late_webhook:5"})
    assert response.status == 400
    assert response.headers["X-Mock-Error"] == "fault-not-applicable"
    error = response.json_body()["error"]  # Cloudsway's {"error": {"code", "message"}}
    assert "Cloudsway sends no webhooks or callbacks" in error["message"]
    assert server.faults.specs() == []
    # A list is all or none: the applicable fault before it is not added either.
    both = await server.request("POST", "/__mock/faults", json=["http:503", "truncate"])
    assert both.status == 400 and server.faults.specs() == []
    ok = await server.request("POST", "/__mock/faults", json={"spec": "http:503;times=1"})
    assert ok.status == 201


async def test_header_fault_that_does_not_apply_gets_the_providers_400() -> None:
    server = MockServer("dify", clock="manual")
    response = await server.request("POST", "/v1/workflows/run", json=DIFY_RUN,
                                    headers={**DIFY_AUTH, "X-Mock-Fault": "duplicate_webhook"})
    assert response.status == 400 and response.headers["X-Mock-Error"] == "fault-not-applicable"
    body = response.json_body()
    assert set(body) == {"code", "message", "status"} and body["status"] == 400  # Dify's envelope
    assert "a workflow run sends no webhooks or callbacks" in body["message"]
    assert len(server.tasks) == 0  # nothing ran
    entry = server.journal.entries()[-1]
    assert entry.status == 400


def test_a_scenario_that_sets_one_is_a_contract_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "acme"
    shutil.copytree(Path(contracts.__file__).parent / "cloudsway", folder)
    behaviour = yaml.safe_load((folder / "behaviour.yaml").read_text())
    behaviour.update(provider="acme", port=8799, aliases=[])
    (folder / "behaviour.yaml").write_text(yaml.safe_dump(behaviour))
    scenarios = yaml.safe_load((folder / "scenarios.yaml").read_text())
    scenarios["scenarios"][0]["faults"] = ["truncate:1"]
    (folder / "scenarios.yaml").write_text(yaml.safe_dump(scenarios, allow_unicode=True))
    monkeypatch.setenv("IMAGEGEN_CONTRACTS", str(tmp_path))
    with pytest.raises(ContractError) as info:
        contracts.load("acme")
    message = str(info.value)
    assert "scenarios.yaml: scenarios[0].faults[0]: fault 'truncate' does not apply to acme" in message
    assert REASON in message and "\n" not in message


async def test_yunyx_answers_the_refusal_in_its_own_body() -> None:
    server = MockServer("yunyx", clock="manual")
    response = await server.request(
        "POST", "/v1/images/generations", json={"prompt": "x"},
        headers={"Authorization": "Bearer k", "X-Mock-Fault": "late_webhook"})
    assert response.status == 400
    body = response.json_body()  # yunyx's 400: {"code", "message", "data"}
    assert set(body) == {"code", "message", "data"}
    assert "yunyx sends no webhooks or callbacks" in body["message"]


# --- expired links follow the provider's own lifetime ---------------------------------


def _split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query))


async def _dify_file(server: MockServer, headers: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    pending = asyncio.ensure_future(
        server.request("POST", "/v1/workflows/run", json=DIFY_RUN, headers={**DIFY_AUTH, **(headers or {})}))
    for _ in range(5):
        await asyncio.sleep(0)
    server.clock.advance(60)
    answer = (await asyncio.wait_for(pending, 5)).json_body()
    return _split(answer["data"]["outputs"]["files"][0]["url"])


@pytest.mark.parametrize("lifetime", ["300", "600", "3600"])
async def test_dify_expired_url_is_expired_whatever_files_access_timeout(lifetime: str) -> None:
    server = MockServer("dify", clock="manual", seed=1, options={"files_access_timeout": lifetime})
    path, query = await _dify_file(server, {"X-Mock-Fault": "expired_url"})
    refused = await server.request("GET", path, query=query)
    assert refused.status == 403 and refused.json_body()["code"] == "forbidden"


async def test_dify_links_live_files_access_timeout() -> None:
    server = MockServer("dify", clock="manual", seed=1, options={"files_access_timeout": "600"})
    path, query = await _dify_file(server)
    server.clock.advance(599)
    assert (await server.request("GET", path, query=query)).status == 200
    server.clock.advance(2)
    assert (await server.request("GET", path, query=query)).status == 403


def test_link_times_follow_the_providers_lifetime() -> None:
    yunyx = MockServer("yunyx", clock="manual")
    now = yunyx.clock.now()
    assert yunyx.link_times() == (now, now + 3600)  # retention.image_url
    expired = yunyx.link_times(faults=[_spec("expired_url")])
    assert expired == (now - 3601, now - 1)
    cloudsway = MockServer("cloudsway", clock="manual")  # retention.image_url: null
    assert cloudsway.link_times() == (cloudsway.clock.now(), None)
    assert cloudsway.link_times(faults=[_spec("expired_url")])[1] == cloudsway.clock.now() - 1


def _spec(text: str) -> Any:
    from imagegen_conformance.mocks.engine import FaultSpec

    return FaultSpec.parse(text)


# --- tasks: one way to make them --------------------------------------------------------


async def test_new_task_applies_the_task_faults_to_given_phases() -> None:
    from imagegen_conformance.mocks.engine import Call, MockRequest

    server = MockServer("yunyx", clock="manual")  # no lifecycle: phases given
    request = MockRequest.build("POST", "/v1/images/generations")
    plain = Call(server, request, None, []).new_task({}, phases=[("a", 1.0), ("b", 2.0)], keep=False)
    assert plain.state(3.5 + plain.created_at) == "succeeded" and plain.failure is None
    failing = Call(server, request, None, [_spec("task_fail:error:quota")]).new_task(
        {}, phases=[("a", 1.0), ("b", 2.0), ("c", 3.0)], work=1, keep=False)
    assert failing.states == ("a", "b") and failing.final == "failed" and failing.failure == "error:quota"
    never = Call(server, request, None, [_spec("never_finish"), _spec("expired_url")]).new_task(
        {}, phases=[("a", 1.0), ("b", 2.0)], work=0, keep=False)
    assert never.durations[0] == float("inf") and never.finished_at(10**9) is None
    assert [f.name for f in never.faults] == ["never_finish", "expired_url"]
    assert len(server.tasks) == 0  # keep=False: a synchronous call's task is not stored


def test_providers_make_tasks_only_through_call_new_task() -> None:
    import ast

    mocks_dir = Path(__file__).parents[2] / "mocks"
    offenders = []
    for path in mocks_dir.rglob("*.py"):
        if "engine" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name in ("Task", "new_task") and not (
                    isinstance(node.func, ast.Attribute) and name == "new_task"
                    and getattr(node.func.value, "id", "") == "call"
                ):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
