from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml

from .model import (
    Auth,
    Behaviour,
    Contract,
    ContractError,
    Duration,
    ErrorSpec,
    Expectation,
    Lifecycle,
    Operation,
    Option,
    Phase,
    Polling,
    Quirk,
    Retention,
    Scenario,
)

PROVIDERS = ("cloudsway", "acedata", "fal", "yunyx", "dify")
ALIASES = {"siliconflow": "yunyx"}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def canonical(provider: str) -> str:
    """Map an id or alias to its provider id, or fail naming the known ones and the closest."""
    name = provider.strip().lower()
    name = ALIASES.get(name, name)
    if name in PROVIDERS:
        return name
    known = [*PROVIDERS, *ALIASES]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ContractError(
        f"unknown provider {provider!r}.{hint} Known providers: {', '.join(PROVIDERS)}"
        f" (alias: {', '.join(f'{a} -> {t}' for a, t in ALIASES.items())})"
    )


def available() -> tuple[str, ...]:
    """The providers whose contract files are present in this installation."""
    root = resources.files(__package__)
    return tuple(p for p in PROVIDERS if root.joinpath(p, "behaviour.yaml").is_file())


def _read_yaml(provider: str, name: str) -> Any:
    path = resources.files(__package__).joinpath(provider, name)
    if not path.is_file():
        raise ContractError(f"contract file {provider}/{name} is missing")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ContractError(f"contract file {provider}/{name} is not valid YAML: {exc}") from exc


@cache
def load(provider: str) -> Contract:
    """Load and type a provider's contract. ``load("siliconflow")`` gives yunyx's."""
    name = canonical(provider)
    openapi = _read_yaml(name, "openapi.yaml")
    behaviour = _behaviour(name, _read_yaml(name, "behaviour.yaml"))
    scenarios = tuple(_scenario(s) for s in (_read_yaml(name, "scenarios.yaml") or {}).get(
        "scenarios", []
    ))
    return Contract(
        provider=name,
        title=str(openapi.get("info", {}).get("title", name)),
        openapi=openapi,
        behaviour=behaviour,
        scenarios=scenarios,
        operations=_operations(openapi),
    )


def _operations(openapi: Mapping[str, Any]) -> dict[str, Operation]:
    ops: dict[str, Operation] = {}
    for path, item in (openapi.get("paths") or {}).items():
        for method in _METHODS:
            spec = item.get(method)
            if spec is None:
                continue
            op_id = spec.get("operationId")
            if not op_id:
                raise ContractError(f"{method.upper()} {path} has no operationId")
            ops[op_id] = Operation(op_id, method.upper(), path, spec)
    return ops


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _behaviour(provider: str, raw: Mapping[str, Any]) -> Behaviour:
    auth_raw = raw.get("auth") or {}
    lifecycle = None
    if lc := raw.get("lifecycle"):
        lifecycle = Lifecycle(
            states=tuple(lc["states"]),
            initial=lc["initial"],
            terminal=tuple(lc["terminal"]),
            success=lc.get("success"),
            failure=lc.get("failure"),
            transitions={k: tuple(v) for k, v in (lc.get("transitions") or {}).items()},
            phases=tuple(
                Phase(p["state"], Duration.parse(p["seconds"]), int(p.get("polls", 1)))
                for p in lc.get("phases", [])
            ),
        )
        for phase in lifecycle.phases:
            if phase.state not in lifecycle.states:
                raise ContractError(f"{provider}: phase {phase.state!r} is not a declared state")
    polling = None
    if pl := raw.get("polling"):
        polling = Polling(
            min_interval=float(pl["min_interval"]),
            recommended_interval=float(pl.get("recommended_interval", pl["min_interval"])),
            max_wait=float(pl.get("max_wait", 600)),
        )
    ret = raw.get("retention") or {}
    errors = {
        int(status): ErrorSpec(
            status=int(status),
            code=spec.get("code"),
            message=str(spec.get("message", "")),
            meaning=str(spec.get("meaning", "")),
        )
        for status, spec in (raw.get("errors") or {}).items()
    }
    options = {
        name: Option(
            name=name,
            default=str(spec["default"]),
            choices=tuple(str(c) for c in spec["choices"]),
            doc=str(spec.get("doc", "")),
        )
        for name, spec in (raw.get("options") or {}).items()
    }
    quirks = tuple(
        Quirk(
            id=q["id"],
            summary=q["summary"],
            seed=q.get("seed", ""),
            reference=q.get("reference", ""),
            mock=q.get("mock", ""),
        )
        for q in raw.get("quirks") or []
    )
    return Behaviour(
        provider=provider,
        hosts=dict(raw.get("hosts") or {}),
        auth=Auth(header=auth_raw.get("header", "Authorization"), scheme=auth_raw.get("scheme")),
        lifecycle=lifecycle,
        polling=polling,
        retention=Retention(task=_opt_float(ret.get("task")), image_url=_opt_float(ret.get("image_url"))),
        limits=dict(raw.get("limits") or {}),
        latency_budget={k: float(v) for k, v in (raw.get("latency_budget") or {}).items()},
        errors=errors,
        options=options,
        quirks=quirks,
        raw=raw,
    )


def _scenario(raw: Mapping[str, Any]) -> Scenario:
    exp = raw.get("expect") or {}
    return Scenario(
        id=raw["id"],
        summary=raw.get("summary", ""),
        faults=tuple(raw.get("faults") or ()),
        time_scale=_opt_float(raw.get("time_scale")),
        lifecycle=raw.get("lifecycle"),
        options={k: str(v) for k, v in (raw.get("options") or {}).items()},
        request=dict(raw.get("request") or {}),
        expect=Expectation(
            outcome=exp.get("outcome", "success"),
            images=exp.get("images"),
            width=exp.get("width"),
            height=exp.get("height"),
            error_status=exp.get("error_status"),
            within_seconds=_opt_float(exp.get("within_seconds")),
            raw=exp,
        ),
        raw=raw,
    )
