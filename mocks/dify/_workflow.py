"""The Dify workflow a mock runs, as data: its input form, its nodes with their timings and
outputs (``contracts/dify/workflow.yaml``, or your own file named by ``IMAGEGEN_DIFY_WORKFLOW``).

``Workflow.validate_inputs`` checks a run's inputs against the form in Dify's own words.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..engine import ImageSpec

__all__ = ["WORKFLOW_ENV", "Node", "Workflow", "WorkflowError"]

#: Environment variable naming a workflow file to run instead of the default one.
WORKFLOW_ENV = "IMAGEGEN_DIFY_WORKFLOW"
_FORM_KINDS = ("text-input", "paragraph", "select", "number", "checkbox", "file", "file-list")


class WorkflowError(ValueError):
    """A workflow file that cannot be used; the message names the field and what is expected."""


@dataclass(frozen=True)
class Node:
    """One node of a workflow, in run order."""

    id: str
    type: str
    title: str
    seconds: tuple[float, float]  # provider seconds, drawn uniformly per run
    tokens: int = 0
    images: Mapping[str, Any] | None = None  # {count, width, height, format}: a drawing tool
    error: str = "Node execution failed."  # the node's error when a task_fail fault hits it
    outputs: Mapping[str, Any] | None = None  # literal outputs, merged into the node's own
    # a tool node's tool {provider_type: builtin|api, provider_id, tool_name, icon?}: GET /v1/meta
    tool: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Workflow:
    """A Dify workflow as data: ``Workflow.load()`` is the seed's image-generation app."""

    id: str
    tenant_id: str
    name: str
    total_steps: int | None
    description: str  # GET /v1/info
    tags: tuple[str, ...]  # GET /v1/info (release=current)
    author_name: str  # GET /v1/info (release=current)
    user_input_form: tuple[Mapping[str, Any], ...]
    file_upload: Mapping[str, Any]
    nodes: tuple[Node, ...]
    outputs: tuple[Mapping[str, Any], ...]

    @classmethod
    def load(cls, source: str | os.PathLike[str] | None = None) -> Workflow:
        """Read a workflow file; None reads ``$IMAGEGEN_DIFY_WORKFLOW`` or the default."""
        source = source or os.environ.get(WORKFLOW_ENV) or None
        if source is None:
            # The installed name: a bare "contracts" is the user's package (or nothing).
            default = resources.files("imagegen_conformance.contracts").joinpath("dify", "workflow.yaml")
            text = default.read_text("utf-8")
            where = "contracts/dify/workflow.yaml"
        else:
            path = Path(source)
            if not path.is_file():
                raise WorkflowError(f"workflow file {path} does not exist ({WORKFLOW_ENV})")
            text, where = path.read_text("utf-8"), str(path)
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise WorkflowError(f"workflow file {where} is not valid YAML: {exc}") from exc
        return cls.from_dict(raw, where=where)

    @classmethod
    def from_dict(cls, raw: Any, *, where: str = "workflow") -> Workflow:
        """Build and check a workflow from its mapping (the YAML file's content)."""
        if not isinstance(raw, Mapping):
            raise WorkflowError(f"{where}: expected a mapping with id, nodes, user_input_form")
        nodes_raw = raw.get("nodes")
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise WorkflowError(f"{where}: 'nodes' must be a non-empty list (start ... end)")
        nodes = []
        for i, item in enumerate(nodes_raw):
            if not isinstance(item, Mapping) or "id" not in item or "type" not in item:
                raise WorkflowError(f"{where}: nodes[{i}] needs at least 'id' and 'type'")
            try:
                secs = item.get("seconds", [0.01, 0.05])
                low, high = (secs, secs) if isinstance(secs, int | float) else tuple(secs)
                low, high = float(low), float(high)
                if not 0 <= low <= high:
                    raise ValueError("low > high")
                images = item.get("images")
                if images is not None:
                    ImageSpec.of(int(images.get("width", 512)), int(images.get("height", 512)),
                                 fmt=str(images.get("format", "png")))
                    int(images.get("count", 1))
                nodes.append(Node(
                    id=str(item["id"]), type=str(item["type"]),
                    title=str(item.get("title", item["type"])), seconds=(low, high),
                    tokens=int(item.get("tokens", 0)), images=images,
                    error=str(item.get("error", Node.error)), outputs=item.get("outputs"),
                    tool=_tool(item.get("tool")),
                ))
            except (TypeError, ValueError, AttributeError) as exc:
                raise WorkflowError(
                    f"{where}: nodes[{i}] is malformed ({exc}); seconds must be [low, high] with "
                    "0 <= low <= high, images {count, width, height, format: png|jpeg|webp}, "
                    "tokens an integer, tool {provider_type: builtin|api, provider_id, tool_name}"
                ) from exc
        ids = [n.id for n in nodes]
        form = tuple(raw.get("user_input_form") or ())
        for i, entry in enumerate(form):
            spec = next(iter(entry.values())) if isinstance(entry, Mapping) and entry else None
            if (
                not isinstance(entry, Mapping) or len(entry) != 1 or next(iter(entry)) not in _FORM_KINDS
                or not isinstance(spec, Mapping) or "variable" not in spec
            ):
                raise WorkflowError(
                    f"{where}: user_input_form[{i}] must be {{KIND: {{variable: ..., ...}}}}, "
                    f"KIND one of {', '.join(_FORM_KINDS)}"
                )
        outputs = tuple(raw.get("outputs") or ())
        for i, out in enumerate(outputs):
            sel = out.get("value_selector") if isinstance(out, Mapping) else None
            if not isinstance(out, Mapping) or "variable" not in out or (
                sel is None and "value" not in out
            ):
                raise WorkflowError(f"{where}: outputs[{i}] needs 'variable' and 'value_selector' or 'value'")
            if sel is not None and (len(sel) != 2 or str(sel[0]) not in ids):
                raise WorkflowError(f"{where}: outputs[{i}].value_selector must be [node id, variable]")
        steps = raw.get("total_steps")
        return cls(
            id=str(raw.get("id") or uuid.uuid4()),
            tenant_id=str(raw.get("tenant_id") or uuid.uuid4()),
            name=str(raw.get("name", "workflow")),
            total_steps=None if steps is None else int(steps),
            description=str(raw.get("description") or ""),
            tags=tuple(str(t) for t in raw.get("tags") or ()),
            author_name=str(raw.get("author_name") or ""),
            user_input_form=form,
            file_upload=dict(raw.get("file_upload") or {}),
            nodes=tuple(nodes),
            outputs=outputs,
        )

    def validate_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The run's inputs with defaults filled in; ValueError in Dify's words when one is bad."""
        out = dict(inputs)
        for entry in self.user_input_form:
            kind, spec = next(iter(entry.items()))
            name = str(spec["variable"])
            value = inputs.get(name)
            if value is None or value == "":
                # [V] Dify's BaseAppGenerator._validate_inputs wording
                if spec.get("required"):
                    raise ValueError(f"{name} is required in input form")
                if spec.get("default") not in (None, ""):
                    out[name] = spec["default"]
                continue
            if kind in ("text-input", "paragraph"):
                if not isinstance(value, str):
                    raise ValueError(f"{name} in input form must be a string")
                limit = spec.get("max_length")
                if limit and len(value) > int(limit):
                    raise ValueError(f"{name} in input form must be less than {limit} characters")
            elif kind == "select":
                options = list(spec.get("options") or [])
                if value not in options:
                    raise ValueError(f"{name} in input form must be one of the following: {options}")
            elif kind == "number":
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise ValueError(f"{name} in input form must be a valid number")
                try:
                    float(value)
                except ValueError:
                    raise ValueError(f"{name} in input form must be a valid number") from None
        return out


def _tool(raw: Any) -> Mapping[str, Any] | None:
    """A tool node's ``tool`` mapping, checked (ValueError says what is wrong)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or raw.get("provider_type") not in ("builtin", "api") or not all(
        isinstance(raw.get(k), str) and raw.get(k) for k in ("provider_id", "tool_name")
    ):
        raise ValueError("tool must be {provider_type: builtin|api, provider_id, tool_name}")
    return dict(raw)
