"""Make a mock *drift* from its contract on purpose, to test drift detection.

A drift spec rewrites the mock's answers after the provider has produced them, so no
provider module changes: ``KIND:ARG[;op=OPERATION][;times=N]`` with

* ``rename:OLD=NEW``  rename a JSON key (anywhere in the body) from OLD to NEW
* ``drop:KEY``        remove a JSON key (anywhere in the body)
* ``status:CODE``     answer with another HTTP status code

``imagegen-conformance serve -p fal --drift "rename:status=state;op=getRequestStatus"``.
Streams and non-JSON bodies are left alone (``status`` still applies).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._http import MockRequest, MockResponse
from ._server import ADMIN_PREFIX, MockServer

__all__ = ["DRIFTS", "DriftSpec", "apply_drift"]

DRIFTS = {
    "rename": "rename a JSON key of the answer, ARG = OLD=NEW",
    "drop": "remove a JSON key of the answer, ARG = KEY",
    "status": "answer with HTTP status ARG instead",
}


@dataclass
class DriftSpec:
    """One parsed drift: what to rewrite, on which operation, how many more times."""

    kind: str
    arg: str
    op: str | None = None
    times: int | None = None

    @classmethod
    def parse(cls, text: str) -> DriftSpec:
        head, *opts = [p.strip() for p in text.split(";") if p.strip()]
        kind, _, arg = head.partition(":")
        if kind not in DRIFTS:
            raise ValueError(f"unknown drift {kind!r}; valid: {', '.join(DRIFTS)}")
        if (kind == "rename" and "=" not in arg) or not arg:
            raise ValueError(f"drift {text!r}: {kind} needs {DRIFTS[kind].split(', ')[-1]}")
        if kind == "status" and not (arg.isdigit() and 100 <= int(arg) <= 599):
            raise ValueError(f"drift {text!r}: status needs an HTTP status code")
        spec = cls(kind, arg)
        for opt in opts:
            name, _, value = opt.partition("=")
            if name == "op":
                spec.op = value
            elif name == "times" and value.isdigit():
                spec.times = int(value)
            else:
                raise ValueError(f"drift {text!r}: unknown option {opt!r} (op=, times=)")
        return spec

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" + (f";op={self.op}" if self.op else "")


def _rewrite(node: Any, spec: DriftSpec) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if spec.kind == "drop" and key == spec.arg:
                continue
            old, _, new = spec.arg.partition("=")
            name = new if spec.kind == "rename" and key == old else key
            out[name] = _rewrite(value, spec)
        return out
    if isinstance(node, list):
        return [_rewrite(v, spec) for v in node]
    return node


def _drifted(response: MockResponse, spec: DriftSpec) -> MockResponse:
    if spec.kind == "status":
        response.status = int(spec.arg)
        return response
    if response.is_stream or "json" not in response.headers.get("Content-Type", ""):
        return response
    assert isinstance(response.body, bytes | bytearray)
    try:
        data = json.loads(response.body)
    except ValueError:
        return response
    response.body = json.dumps(_rewrite(data, spec), allow_nan=False).encode()
    return response


def apply_drift(server: MockServer, specs: list[DriftSpec]) -> None:
    """Wrap ``server.dispatch`` so its answers drift as ``specs`` say (admin API untouched)."""
    if not specs:
        return
    inner = server.dispatch

    async def dispatch(request: MockRequest) -> MockResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await inner(request)
        route, _ = server.match(request)
        operation = route.operation if route else None
        response = await inner(request)
        for spec in specs:
            if (spec.op and spec.op != operation) or spec.times == 0:
                continue
            if spec.times is not None:
                spec.times -= 1
            response = _drifted(response, spec)
        return response

    server.dispatch = dispatch  # type: ignore[method-assign]
