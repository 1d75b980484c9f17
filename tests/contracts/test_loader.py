from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from imagegen_conformance import contracts
from imagegen_conformance.contracts import ContractError


def test_load_returns_typed_contract() -> None:
    contract = contracts.load("cloudsway")
    assert contract.provider == "cloudsway"
    assert contract.behaviour.auth.scheme == "Bearer"
    assert contract.behaviour.lifecycle is not None
    assert contract.behaviour.lifecycle.terminal == ("completed", "failed")
    assert set(contract.operations) == {"createImageTask", "getImageTask"}
    assert contract.operation("getImageTask").method == "GET"


@pytest.mark.parametrize("provider", contracts.available())
def test_openapi_documents_are_valid_openapi_31(provider: str) -> None:
    document = contracts.load(provider).openapi
    assert document["openapi"].startswith("3.1")
    validate(yaml.safe_load(yaml.safe_dump(dict(document))))


def test_unknown_provider_names_the_closest_and_the_known_ones() -> None:
    with pytest.raises(ContractError, match=r"Did you mean 'cloudsway'\?.*Known providers: cloudsway"):
        contracts.load("cloudsay")


def test_alias_resolves_to_its_provider() -> None:
    assert contracts.canonical("SiliconFlow") == "yunyx"


def test_unknown_operation_lists_known_ones() -> None:
    with pytest.raises(ContractError, match="known: createImageTask, getImageTask"):
        contracts.load("cloudsway").operation("deleteTask")


def test_cloudsway_records_the_seed_quirks() -> None:
    quirks = {q.id for q in contracts.load("cloudsway").behaviour.quirks}
    assert {
        "basepath-doubles-v2-ai",
        "batchsize-string-in-example",
        "step-capitalised-required-on-english-page",
        "ratio-9-16-size",
    } <= quirks
    options = contracts.load("cloudsway").behaviour.options
    assert options["ratio_9_16"].default == "720x1280"
    assert "720x1080" in options["ratio_9_16"].choices


def test_request_validator_reports_path_and_keyword() -> None:
    validator = contracts.request_validator("cloudsway", "createImageTask")
    assert validator is not None
    issues = validator.issues({"prompts": "x", "step": 11})
    assert [(i.path, i.validator) for i in issues] == [("$.step", "maximum")]


def test_seed_example_request_is_valid_against_the_contract() -> None:
    validator = contracts.request_validator("cloudsway", "createImageTask")
    assert validator is not None
    example = contracts.load("cloudsway").operation("createImageTask").spec["requestBody"]["content"][
        "application/json"
    ]["example"]
    assert example["batchsize"] == "2"
    assert validator.issues(example) == []


def test_response_validator_checks_completed_consistency() -> None:
    validator = contracts.response_validator("cloudsway", "getImageTask", 200)
    assert validator is not None
    assert validator.issues({"status": "completed", "completed": True, "imageUrls": ["http://x/a.png"]}) == []
    bad = validator.issues({"status": "processing", "completed": True, "imageUrls": []})
    assert [i.path for i in bad] == ["$.completed"]


def test_lifecycle_legal_transitions() -> None:
    lifecycle = contracts.load("cloudsway").behaviour.lifecycle
    assert lifecycle is not None
    assert lifecycle.is_legal("pending", "completed")
    assert not lifecycle.is_legal("completed", "pending")
    assert not lifecycle.is_legal("failed", "completed")


def _broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Callable[[dict[str, Any]], None],
            file: str = "behaviour.yaml") -> Path:
    """A copy of Cloudsway's contract as provider ``broken``, with one edit to one file."""
    folder = tmp_path / "broken"
    shutil.copytree(contracts.contract_dir("cloudsway"), folder)
    behaviour = yaml.safe_load((folder / "behaviour.yaml").read_text())
    behaviour["provider"] = "broken"
    behaviour.pop("aliases", None)
    (folder / "behaviour.yaml").write_text(yaml.safe_dump(behaviour))
    document = yaml.safe_load((folder / file).read_text())
    edit(document)
    (folder / file).write_text(yaml.safe_dump(document))
    monkeypatch.setenv("IMAGEGEN_CONTRACTS", str(tmp_path))
    contracts.load.cache_clear()
    return folder / file


def _drop_initial(b: dict[str, Any]) -> None:
    del b["lifecycle"]["initial"]


def _port_as_text(b: dict[str, Any]) -> None:
    b["port"] = "eighty"


def _polling_as_list(b: dict[str, Any]) -> None:
    b["polling"]["min_interval"] = [1, 2]


def _unknown_fault(b: dict[str, Any]) -> None:
    b["faults"]["not_applicable"]["http_503"] = "typo"


def _unknown_fault_in_scenario(s: dict[str, Any]) -> None:
    s["scenarios"][1]["faults"] = ["tasks_fail;op=createImageTask"]


@pytest.mark.parametrize(("edit", "file", "where", "what"), [
    pytest.param(_drop_initial, "behaviour.yaml", "lifecycle.initial", "required key is missing",
                 id="missing-lifecycle-key"),
    pytest.param(_port_as_text, "behaviour.yaml", "port", "'eighty' is not of type 'integer'",
                 id="wrong-type"),
    pytest.param(_polling_as_list, "behaviour.yaml", "polling.min_interval", "is not of type 'number'",
                 id="wrong-type-nested"),
    pytest.param(_unknown_fault, "behaviour.yaml", "faults.not_applicable", "unknown fault 'http_503'",
                 id="unknown-fault"),
    pytest.param(_unknown_fault_in_scenario, "scenarios.yaml", "scenarios[1].faults[0]",
                 "unknown fault 'tasks_fail'. Did you mean 'task_fail'?", id="unknown-fault-in-scenario"),
])
def test_a_broken_contract_is_one_line_naming_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Callable[[dict[str, Any]], None], file: str,
    where: str, what: str,
) -> None:
    path = _broken(tmp_path, monkeypatch, edit, file)
    try:
        with pytest.raises(ContractError) as caught:
            contracts.load("broken")
    finally:
        contracts.load.cache_clear()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {where}")
    assert what in message


def test_every_built_in_contract_passes_its_schema() -> None:
    for provider in contracts.available():
        assert contracts.load(provider).behaviour.mock.endswith("Provider")
