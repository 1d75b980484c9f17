"""Hypothesis strategies generated from a provider's contract.

>>> from harness.strategies import requests, invalid_requests
>>> body = requests("cloudsway", "createImageTask").example()
>>> bad = invalid_requests("cloudsway", "createImageTask").example()
>>> bad.expected_status
400

Generation is Schemathesis's (positive and negative data from the OpenAPI schema); the labels
(which status the provider must answer, and where) come from ``behaviour.yaml``'s ``validation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from imagegen_conformance import missing_extra

try:
    import schemathesis
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
except ImportError as exc:  # they come with the [check] extra, not with the core install
    raise missing_extra(__name__, "hypothesis and schemathesis", exc) from exc

from imagegen_conformance import contracts

__all__ = ["InvalidRequest", "invalid_requests", "requests", "validation_answer"]


@dataclass(frozen=True)
class InvalidRequest:
    """A request body that breaks the contract, and the answer it must get."""

    body: Any
    expected_status: int
    #: "response": the call itself is refused; "result": accepted, then fails when fetched (fal).
    at: str
    operation: str


def validation_answer(provider: str, operation: str | None = None) -> tuple[int, str]:
    """(status, where) the provider answers an invalid body with; behaviour.yaml ``validation``.

    ``validation.operations.<operationId>`` overrides the provider-wide answer for one operation.
    """
    raw = contracts.load(provider).behaviour.raw.get("validation") or {}
    own = (raw.get("operations") or {}).get(operation or "", {})
    return int(own.get("status", raw.get("status", 400))), str(own.get("at", raw.get("at", "response")))


@cache
def _operation(provider: str, operation_id: str) -> Any:
    contract = contracts.load(provider)
    op = contract.operation(operation_id)
    schema = schemathesis.openapi.from_dict(dict(contract.openapi))
    return schema[op.path][op.method]


def requests(provider: str, operation_id: str) -> st.SearchStrategy[Any]:
    """Valid JSON request bodies of an operation."""
    op = _operation(contracts.canonical(provider), operation_id)
    cases: st.SearchStrategy[Any] = op.as_strategy(generation_mode=GenerationMode.POSITIVE)
    return cases.map(lambda case: case.body)


def invalid_requests(provider: str, operation_id: str) -> st.SearchStrategy[InvalidRequest]:
    """Request bodies that break the contract, each labelled with the answer it must get."""
    name = contracts.canonical(provider)
    op = _operation(name, operation_id)
    status, at = validation_answer(name, operation_id)
    cases: st.SearchStrategy[Any] = op.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    cases = cases.filter(_body_is_the_negative_part)
    return cases.map(lambda case: InvalidRequest(case.body, status, at, operation_id))


def _body_is_the_negative_part(case: Any) -> bool:
    components = getattr(getattr(case, "meta", None), "components", None) or {}
    for location, info in components.items():
        if getattr(location, "name", "") == "BODY":
            return bool(info.mode == GenerationMode.NEGATIVE)
    return False
