"""Finding and loading contracts: the built-in folders and any named by the user.

A provider is a folder ``<id>/`` holding ``openapi.yaml``, ``behaviour.yaml`` and
``scenarios.yaml``; the provider list is the set of such folders, here and in the directories
of ``IMAGEGEN_CONTRACTS`` (separated by ``os.pathsep``) or :func:`add_contracts` (the CLI's
``--contracts``). Nothing else lists providers.
"""

from __future__ import annotations

import difflib
import os
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from .model import (
    Auth,
    Behaviour,
    Contract,
    ContractError,
    Duration,
    ErrorSpec,
    Expectation,
    Lifecycle,
    LiveSpec,
    Operation,
    Option,
    Phase,
    Polling,
    ProbeSpec,
    Quirk,
    Retention,
    Scenario,
)

__all__ = ["FAULT_CATALOGUE", "add_contracts", "aliases", "available", "canonical", "contract_dir", "load"]

BUILTIN = Path(__file__).resolve().parent
ENV_VAR = "IMAGEGEN_CONTRACTS"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_FILES = ("openapi.yaml", "behaviour.yaml", "scenarios.yaml")
_extra: list[Path] = []
_lock = threading.Lock()


def _yaml_file(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContractError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


#: name -> {"stage": ..., "doc": ...}: the one fault catalogue (contracts/faults.yaml).
FAULT_CATALOGUE: dict[str, dict[str, str]] = dict(_yaml_file(BUILTIN / "faults.yaml")["faults"])


def add_contracts(*dirs: str | os.PathLike[str]) -> None:
    """Load providers from these directories too (what ``--contracts DIR`` does)."""
    with _lock:
        for d in dirs:
            path = Path(d).expanduser().resolve()
            if not path.is_dir():
                raise ContractError(f"contracts directory {d} does not exist")
            if path not in _extra:
                _extra.append(path)
        _clear()


def _roots() -> list[Path]:
    roots = [BUILTIN]
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            path = Path(part.strip()).expanduser().resolve()
            if not path.is_dir():
                raise ContractError(f"{ENV_VAR}: {part} is not a directory")
            roots.append(path)
    return list(dict.fromkeys([*roots, *_extra]))


def _clear() -> None:
    _index.cache_clear()
    load.cache_clear()


@cache
def _index(key: tuple[Path, ...]) -> dict[str, Path]:
    """provider id -> its folder, for the roots in ``key``; a later root never hides an earlier one."""
    found: dict[str, Path] = {}
    for root in key:
        for folder in sorted(root.iterdir()):
            if not (folder / "behaviour.yaml").is_file():
                continue
            if folder.name in found:
                raise ContractError(
                    f"provider {folder.name!r} is defined twice: {found[folder.name]} and {folder}"
                )
            found[folder.name] = folder
    return found


def _providers() -> dict[str, Path]:
    return _index(tuple(_roots()))


def contract_dir(provider: str) -> Path:
    """The folder that holds a provider's contract files."""
    return _providers()[canonical(provider)]


def available() -> tuple[str, ...]:
    """Every provider id: the built-in ones in port order, then those the user added."""
    found = _providers()
    def order(pid: str) -> tuple[int, int, str]:
        builtin = found[pid].parent == BUILTIN
        return (0 if builtin else 1, int(_port_of(pid)), pid)
    return tuple(sorted(found, key=order))


def _port_of(provider: str) -> int:
    try:
        return int(load(provider).behaviour.port)
    except ContractError:
        return 0


def aliases() -> dict[str, str]:
    """alias -> provider id, from every contract's ``aliases``."""
    out: dict[str, str] = {}
    for pid in _providers():
        raw = _yaml_file(_providers()[pid] / "behaviour.yaml") or {}
        for alias in raw.get("aliases") or () if isinstance(raw, dict) else ():
            out[str(alias)] = pid
    return out


def canonical(provider: str) -> str:
    """Map an id or alias to its provider id, or fail naming the known ones and the closest."""
    name = provider.strip().lower()
    found = _providers()
    if name in found:
        return name
    alias = aliases()
    if name in alias:
        return alias[name]
    known = [*found, *alias]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    names = ", ".join(available())
    also = f" (alias: {', '.join(f'{a} -> {t}' for a, t in alias.items())})" if alias else ""
    raise ContractError(f"unknown provider {provider!r}.{hint} Known providers: {names}{also}")


@cache
def load(provider: str) -> Contract:
    """Load, check and type a provider's contract. ``load("siliconflow")`` gives yunyx's."""
    name = canonical(provider)
    folder = _providers()[name]
    for file in _FILES:
        if not (folder / file).is_file():
            raise ContractError(f"{folder / file}: contract file is missing")
    openapi = _yaml_file(folder / "openapi.yaml")
    raw = _yaml_file(folder / "behaviour.yaml")
    _check(folder / "behaviour.yaml", raw, _behaviour_validator())
    if raw["provider"] != name:
        raise ContractError(
            f"{folder / 'behaviour.yaml'}: provider: {raw['provider']!r} is not its folder's name {name!r}"
        )
    behaviour = _behaviour(name, raw, folder / "behaviour.yaml")
    _check_variants(folder / "behaviour.yaml", behaviour)
    scenarios_raw = _yaml_file(folder / "scenarios.yaml") or {}
    _check(folder / "scenarios.yaml", scenarios_raw, _scenarios_validator())
    scenarios = tuple(_scenario(s) for s in scenarios_raw.get("scenarios", []))
    _check_applicable(folder / "scenarios.yaml", name, scenarios, behaviour.not_applicable)
    return Contract(
        provider=name,
        title=str(openapi.get("info", {}).get("title", name)),
        openapi=openapi,
        behaviour=behaviour,
        scenarios=scenarios,
        operations=_operations(openapi),
        folder=str(folder),
    )


def _check_applicable(
    path: Path, provider: str, scenarios: tuple[Scenario, ...], not_applicable: Mapping[str, str]
) -> None:
    """A scenario may not set a fault its provider's behaviour.yaml calls not applicable."""
    for i, scenario in enumerate(scenarios):
        for j, spec in enumerate(scenario.faults):
            name = spec.split(";", 1)[0].split(":", 1)[0].strip()
            if name in not_applicable:
                raise ContractError(
                    f"{path}: scenarios[{i}].faults[{j}]: fault {name!r} does not apply to {provider}"
                    f" ({not_applicable[name]}; behaviour.yaml faults.not_applicable)"
                )


def _check_variants(path: Path, behaviour: Behaviour) -> None:
    """An alias's option defaults must name declared options and valid values."""
    for alias in behaviour.aliases:
        for name, value in (behaviour.variant(alias).get("options") or {}).items():
            where = f"{path}: aliases.{alias}.options.{name}"
            if name not in behaviour.options:
                known = ", ".join(behaviour.options) or "none"
                raise ContractError(f"{where}: no such option; options: {known}")
            if str(value) not in behaviour.options[name].choices:
                raise ContractError(
                    f"{where}: {value!r} is not one of {', '.join(behaviour.options[name].choices)}"
                )


def _key_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _check(path: Path, document: Any, validator: Draft202012Validator) -> None:
    """One line per broken contract: the file, the key path, what is wrong."""
    errors = sorted(validator.iter_errors(document), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return
    error = errors[0]
    where = list(error.absolute_path)
    message = error.message
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        where.append(missing[0])
        message = "required key is missing"
    elif error.validator in ("enum", "pattern") and error.schema.get("x-kind") == "fault":
        name = str(error.instance).split(";")[0].split(":")[0]
        close = difflib.get_close_matches(name, FAULT_CATALOGUE, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        message = f"unknown fault {name!r}.{hint} Valid faults: {', '.join(FAULT_CATALOGUE)}"
    elif error.validator == "type":
        message = f"{error.instance!r} is not of type {error.validator_value!r}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise ContractError(f"{path}: {_key_path(where)}: {message}{more}")


def _fault_enum(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    defs = dict(schema.get("$defs") or {})
    defs["fault"] = {"enum": list(FAULT_CATALOGUE), "x-kind": "fault"}
    names = "|".join(FAULT_CATALOGUE)
    defs["fault_spec"] = {"type": "string", "pattern": f"^({names})($|[:;])", "x-kind": "fault"}
    schema["$defs"] = defs
    return schema


@cache
def _behaviour_validator() -> Draft202012Validator:
    schema = _fault_enum(_yaml_file(BUILTIN / "behaviour.schema.yaml"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@cache
def _scenarios_validator() -> Draft202012Validator:
    schema = _fault_enum(_yaml_file(BUILTIN / "scenarios.schema.yaml"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


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


def _behaviour(provider: str, raw: Mapping[str, Any], path: Path) -> Behaviour:
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
                raise ContractError(f"{path}: lifecycle.phases: {phase.state!r} is not a declared state")
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
    live_raw = raw.get("live")
    live = None if live_raw is None else LiveSpec(
        key_var=live_raw["key_var"], base_url_var=live_raw["base_url_var"], base_url=live_raw["base_url"],
        required_vars=tuple(live_raw.get("required_vars") or ()),
        client_env=dict(live_raw.get("client_env") or {}),
    )
    probe_raw = raw.get("probe") or {}
    size = probe_raw.get("size")
    return Behaviour(
        provider=provider,
        mock=raw["mock"],
        port=int(raw["port"]),
        aliases=tuple(raw.get("aliases") or ()),
        fixture=raw.get("fixture") or f"{provider}_mock",
        live=live,
        probe=ProbeSpec(request=dict(probe_raw.get("request") or {}),
                        size=(int(size[0]), int(size[1])) if size else None),
        not_applicable=dict((raw.get("faults") or {}).get("not_applicable") or {}),
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
