from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from ._loader import load
from .model import ContractError

_ROOT = "urn:imagegen-conformance:openapi"


@dataclass(frozen=True)
class SchemaIssue:
    """One place where a JSON document breaks its OpenAPI schema."""

    path: str  # JSON path of the offending value, e.g. "$.batchsize"
    message: str
    validator: str  # the JSON Schema keyword that failed, e.g. "maximum"
    schema_path: str
    instance: Any
    schema: Any = None  # the (sub)schema whose keyword failed: what was expected, in full


def _missing(error: Any) -> list[str]:
    """A "required" failure points at the first missing property, not at its parent."""
    if error.validator == "required" and isinstance(error.instance, dict):
        return [p for p in error.validator_value if p not in error.instance][:1]
    return []


def _json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class SchemaValidator:
    """Validates one JSON body against one schema of a contract's OpenAPI document."""

    def __init__(self, openapi: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
        registry: Registry[Any] = Registry().with_resource(
            _ROOT, DRAFT202012.create_resource(dict(openapi))
        )
        self._fast: Any = None
        try:
            # Inlined refs validate several times faster than refs resolved per call.
            root: Any = _inline(openapi, schema, ())
            # Valid documents (the hot path of every mock) are confirmed by jsonschema-rs; only
            # an invalid one is walked again by jsonschema for its detailed issues.
            self._fast = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
        except _Recursive:
            # A recursive schema keeps its refs, resolved against the whole document.
            root = _rebase({"$id": _ROOT + "/op", **schema})
        self._validator = Draft202012Validator(
            root, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def issues(self, document: Any) -> list[SchemaIssue]:
        if self._fast is not None and self._fast.is_valid(document):
            return []
        errors = sorted(self._validator.iter_errors(document), key=lambda e: list(e.path))
        return [
            SchemaIssue(
                path=_json_path([*e.absolute_path, *_missing(e)]),
                message=e.message,
                validator=str(e.validator),
                schema_path="/".join(str(p) for p in e.absolute_schema_path),
                instance=e.instance,
                schema=e.schema,
            )
            for e in errors
        ]


class _Recursive(Exception):
    pass


def _inline(openapi: Mapping[str, Any], node: Any, seen: tuple[str, ...]) -> Any:
    """The schema with every local ``$ref`` replaced by its target."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            if ref in seen:
                raise _Recursive(ref)
            target: Any = openapi
            for part in ref[2:].split("/"):
                target = target[part]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            resolved = _inline(openapi, target, (*seen, ref))
            return {**resolved, **_inline(openapi, rest, seen)} if rest else resolved
        return {k: _inline(openapi, v, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(openapi, v, seen) for v in node]
    return node


def _rebase(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (_ROOT + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rebase(v) for v in node]
    return node


def _content_schema(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    content = spec.get("content") or {}
    for media in ("application/json", "application/x-ndjson", "text/event-stream", "*/*"):
        if media in content and "schema" in content[media]:
            schema: Mapping[str, Any] = content[media]["schema"]
            return schema
    return None


@cache
def request_validator(provider: str, operation_id: str) -> SchemaValidator | None:
    """The validator of an operation's JSON request body, or None if it takes none."""
    contract = load(provider)
    op = contract.operation(operation_id)
    body = op.spec.get("requestBody")
    if not body:
        return None
    schema = _content_schema(_deref(contract.openapi, body))
    return None if schema is None else SchemaValidator(contract.openapi, schema)


@cache
def response_validator(provider: str, operation_id: str, status: int) -> SchemaValidator | None:
    """The validator of an operation's response body for ``status`` (or its range, or default)."""
    contract = load(provider)
    op = contract.operation(operation_id)
    responses = op.spec.get("responses") or {}
    spec = (
        responses.get(str(status))
        or responses.get(f"{str(status)[0]}XX")
        or responses.get("default")
    )
    if spec is None:
        return None
    schema = _content_schema(_deref(contract.openapi, spec))
    return None if schema is None else SchemaValidator(contract.openapi, schema)


def documented_statuses(provider: str, operation_id: str) -> tuple[str, ...]:
    return tuple(str(s) for s in (load(provider).operation(operation_id).spec.get("responses") or {}))


def _deref(openapi: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    if not ref.startswith("#/"):
        raise ContractError(f"only local $ref is supported, got {ref!r}")
    target: Any = openapi
    for part in ref[2:].split("/"):
        target = target[part]
    return _deref(openapi, target)
