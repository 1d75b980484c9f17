"""What the harness needs to know about a provider beyond its OpenAPI document, as data.

It is read from the ``conformance:`` section of ``contracts/<id>/behaviour.yaml``, the one
place provider knowledge lives. Nothing here is code about one provider: every rule reads
these fields.

.. code-block:: yaml

    conformance:
      reference_client: imagegen_conformance.clients.cloudsway:run
      env: { FAL_KEY: "{api_key}" }          # the provider SDK's own variables
      operations:
        createImageTask: { kind: create, task_id: "response:$.taskId" }
        getImageTask:
          kind: poll
          task_id: "path:taskId"
          state: "response:$.status"
          images: "response:$.imageUrls[*]"

Selectors are ``response:$.json.path``, ``request:$.json.path``, ``path:param``,
``query:name`` or ``header:Name``; JSON paths know ``.key``, ``[n]`` and ``[*]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from imagegen_conformance import contracts
from imagegen_conformance.contracts import Contract
from imagegen_conformance.mocks.engine import Exchange

from ._exchanges import header, json_or_none

__all__ = [
    "OperationProfile", "Profile", "Selector", "Selectors", "event_name", "json_path",
    "operation_for", "profile",
]

KINDS = ("create", "poll", "result", "run", "cancel", "download", "other")
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_TOKEN = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\*|\d+)\]|\[['\"]([^'\"]+)['\"]\]")


def json_path(document: Any, path: str) -> list[Any]:
    """Values at ``path`` (``$.images[*].url``); an absent branch gives no value."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} must start with $")
    values = [document]
    rest = path[1:]
    pos = 0
    while pos < len(rest):
        m = _TOKEN.match(rest, pos)
        if m is None:
            raise ValueError(f"cannot read JSON path {path!r} at {rest[pos:]!r}")
        pos = m.end()
        key, index, quoted = m.group(1) or m.group(3), m.group(2), None
        nxt: list[Any] = []
        for value in values:
            if key is not None:
                if isinstance(value, dict) and key in value:
                    nxt.append(value[key])
            elif index == "*":
                if isinstance(value, list):
                    nxt.extend(value)
            elif isinstance(value, list) and int(index) < len(value):
                nxt.append(value[int(index)])
        del quoted
        values = nxt
    return values


@dataclass(frozen=True)
class Selector:
    """Where a value sits in an exchange: ``response:$.taskId``, ``path:taskId``...

    ``event:$.path`` reads every streamed event; ``event:NAME:$.path`` only events named NAME
    (the SSE ``event:`` field, or the JSON ``event`` field of the data).
    """

    source: str
    expr: str
    event: str | None = None

    @classmethod
    def parse(cls, text: str) -> Selector:
        source, sep, expr = text.partition(":")
        if not sep or source not in ("response", "request", "path", "query", "header", "event"):
            raise contracts.ContractError(
                f"selector {text!r}: write response:$.path, request:$.path, event:[NAME:]$.path, "
                "path:param, query:name or header:Name"
            )
        event = None
        if source == "event" and not expr.startswith("$"):
            event, _, expr = expr.partition(":")
        return cls(source, expr, event)

    def values(self, exchange: Exchange, contract: Contract) -> list[Any]:
        if self.source == "response":
            return json_path(json_or_none(exchange.response_body), self.expr)
        if self.source == "request":
            return json_path(json_or_none(exchange.request_body), self.expr)
        if self.source == "event":
            from ._exchanges import stream_events

            out: list[Any] = []
            for event in stream_events(exchange):
                data = event.json()
                if self.event is not None and event_name(event.event, data) != self.event:
                    continue
                out.extend(json_path(data, self.expr))
            return out
        if self.source == "query":
            return [v for k, v in exchange.query if k == self.expr]
        if self.source == "header":
            value = header(exchange.response_headers, self.expr)
            return [] if value is None else [value]
        params = path_params(contract, exchange.operation, exchange.path)
        return [params[self.expr]] if self.expr in params else []

    def first(self, exchange: Exchange, contract: Contract) -> Any:
        values = self.values(exchange, contract)
        return values[0] if values else None

    def __str__(self) -> str:
        name = f"{self.event}:" if self.event else ""
        return f"{self.source}:{name}{self.expr}"


@dataclass(frozen=True)
class Selectors:
    """One or more selectors: the values of all of them, the first that finds something."""

    items: tuple[Selector, ...]

    @classmethod
    def parse(cls, spec: str | list[str]) -> Selectors:
        texts = [spec] if isinstance(spec, str) else list(spec)
        return cls(tuple(Selector.parse(t) for t in texts))

    def values(self, exchange: Exchange, contract: Contract) -> list[Any]:
        return [v for sel in self.items for v in sel.values(exchange, contract)]

    def first(self, exchange: Exchange, contract: Contract) -> Any:
        for sel in self.items:
            found = sel.values(exchange, contract)
            if found:
                return found[0]
        return None

    def last(self, exchange: Exchange, contract: Contract) -> Any:
        """The last value found by the first selector that finds any (a stream's final state)."""
        for sel in self.items:
            found = sel.values(exchange, contract)
            if found:
                return found[-1]
        return None

    @property
    def expr(self) -> str:
        return " | ".join(str(s) for s in self.items)

    def __str__(self) -> str:
        return self.expr


def event_name(sse_name: str | None, data: Any) -> str:
    """An event's name: the JSON ``event`` field, else its ``status``, else the SSE name."""
    if isinstance(data, dict) and isinstance(data.get("event"), str):
        return str(data["event"])
    if isinstance(data, dict) and isinstance(data.get("status"), str):
        return str(data["status"])
    return sse_name or "message"


@dataclass(frozen=True)
class OperationProfile:
    """How the rules read one operation's exchanges."""

    operation: str
    kind: str
    idempotent: bool
    task_id: Selectors | None = None
    state: Selectors | None = None
    state_map: Mapping[str, str] = field(default_factory=dict)
    # For implicit states (AceData has no status field): the first state whose selector finds
    # a value is the state; wins over ``state``.
    state_when: Mapping[str, Selectors] = field(default_factory=dict)
    images: Selectors | None = None
    count: Selectors | None = None  # how many images the request asked for (create)
    returns_urls: tuple[Selector, ...] = ()
    stream_end: tuple[str, ...] = ()  # event names (or JSON "event" values) that end a stream
    retry_5xx: bool | None = None  # a transient 5xx should be retried (default: idempotent)

    @property
    def retries_5xx(self) -> bool:
        return self.idempotent if self.retry_5xx is None else self.retry_5xx


@dataclass(frozen=True)
class Profile:
    provider: str
    operations: Mapping[str, OperationProfile]
    env: Mapping[str, str]
    reference_client: str | None
    retryable_4xx: tuple[int, ...]
    source: str  # where the profile came from: "contracts/<id>/behaviour.yaml"
    after_terminal_polls: int = 0  # polls a client may still make after a terminal state
    retry_backoff_min: float | None = None  # smallest wait before retrying a 5xx (provider s)

    def op(self, operation: str | None) -> OperationProfile | None:
        return None if operation is None else self.operations.get(operation)

    def of_kind(self, kind: str) -> list[OperationProfile]:
        return [p for p in self.operations.values() if p.kind == kind]

    def idempotent(self, exchange: Exchange) -> bool:
        prof = self.op(exchange.operation)
        if prof is not None:
            return prof.idempotent
        return exchange.method.upper() in _IDEMPOTENT_METHODS

    def retries_5xx(self, exchange: Exchange) -> bool:
        """Whether a transient 5xx answer to this exchange should be retried."""
        prof = self.op(exchange.operation)
        return prof.retries_5xx if prof is not None else self.idempotent(exchange)


def _state_map(raw: Any) -> dict[str, str]:
    return {str(k).lower() if isinstance(k, bool) else str(k): str(v) for k, v in (raw or {}).items()}


@cache
def profile(provider: str) -> Profile:
    """The conformance profile of a provider, from its contract's ``conformance:`` section."""
    contract = contracts.load(provider)
    raw = dict(contract.behaviour.raw.get("conformance") or {})
    source = f"contracts/{contract.provider}/behaviour.yaml" if raw else "(none)"
    ops: dict[str, OperationProfile] = {}
    for op_id, spec in (raw.get("operations") or {}).items():
        op = contract.operation(op_id)  # fails naming the known ones
        kind = spec.get("kind", "other")
        if kind not in KINDS:
            raise contracts.ContractError(f"{provider} {op_id}: kind {kind!r}; valid: {', '.join(KINDS)}")

        def sel(name: str, spec: Mapping[str, Any] = spec) -> Selectors | None:
            return Selectors.parse(spec[name]) if spec.get(name) else None

        ops[op_id] = OperationProfile(
            operation=op_id,
            kind=kind,
            idempotent=bool(spec.get("idempotent", op.method in _IDEMPOTENT_METHODS)),
            task_id=sel("task_id"),
            state=sel("state"),
            state_map=_state_map(spec.get("state_map")),
            state_when={
                str(name): Selectors.parse(sel) for name, sel in (spec.get("state_when") or {}).items()
            },
            images=sel("images"),
            count=sel("count"),
            returns_urls=tuple(Selector.parse(s) for s in spec.get("returns_urls") or ()),
            stream_end=tuple(str(e) for e in spec.get("stream_end") or ()),
            retry_5xx=None if spec.get("retry_5xx") is None else bool(spec["retry_5xx"]),
        )
    for op_id, op in contract.operations.items():
        ops.setdefault(op_id, OperationProfile(op_id, "other", op.method in _IDEMPOTENT_METHODS))
    return Profile(
        provider=contract.provider,
        operations=ops,
        env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
        reference_client=raw.get("reference_client"),
        retryable_4xx=tuple(int(s) for s in raw.get("retryable_4xx", (408, 429))),
        source=source,
        after_terminal_polls=int(raw.get("after_terminal_polls", 0)),
        retry_backoff_min=(
            None if raw.get("retry_backoff_min") is None else float(raw["retry_backoff_min"])
        ),
    )


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _match_suffix(template: str, path: str) -> tuple[int, dict[str, str]] | None:
    """Match ``template`` against the end of ``path``: how many segments matched, and params.

    Providers whose documented prefix is unreliable (Cloudsway's doubled ``/v2/ai``) are
    routed on the suffix, so the harness matches the same way; leading literal segments of
    the template may be missing from the path, and extra leading segments are allowed.
    """
    tpl = _segments(template)
    got = _segments(path)
    params: dict[str, str] = {}
    matched = 0
    for t, g in zip(reversed(tpl), reversed(got), strict=False):
        if t.startswith("{") and t.endswith("}"):
            params[t[1:-1]] = g
        elif t != g:
            return None
        matched += 1
    rest = tpl[: len(tpl) - matched]
    if any(s.startswith("{") for s in rest):
        return None
    return matched, params


def path_params(contract: Contract, operation: str | None, path: str) -> dict[str, str]:
    if operation is None or operation not in contract.operations:
        return {}
    found = _match_suffix(contract.operations[operation].path, path)
    return found[1] if found else {}


def operation_for(contract: Contract, method: str, path: str) -> str | None:
    """The operationId a request addresses (the longest matching path template), or None."""
    best: tuple[int, int, int, str] | None = None
    for op in contract.operations.values():
        if op.method != method.upper():
            continue
        found = _match_suffix(op.path, path)
        if found is None:
            continue
        literal = sum(1 for s in _segments(op.path) if not s.startswith("{"))
        extra = len(_segments(path)) - found[0]
        key = (found[0], literal, -extra, op.operation_id)
        if best is None or key > best:
            best = key
    return best[3] if best else None
