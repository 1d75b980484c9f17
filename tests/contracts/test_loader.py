from __future__ import annotations

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
