"""``imagegen-conformance verify``: the CI gate over a running mock's live deviations.

A client in any language runs its own integration tests against ``serve --check``; then
``verify --target URL`` reads what the mock found (``GET /__mock/deviations``) and exits 1 when
anything is at or above ``--fail-on``. A mock started without ``--check`` is judged the same way
from its journal (``GET /__mock/journal``), by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from imagegen_conformance.mocks.engine import Exchange

from ..report import Report, ScenarioResult
from ..rules._deviation import Deviation, Severity
from ..rules._exchanges import exchange_from_dict
from ..rules._live import LiveRules
from ..rules._rules import OTHER_CHECKS, applicable_rules

__all__ = ["Unreachable", "VerifyError", "fetch_session", "live_report"]

ADMIN_TOKEN_HEADER = "X-Admin-Token"


class VerifyError(ValueError):
    """The target is not something verify can read (the CLI exits 2)."""


class Unreachable(OSError):
    """No answer from the target (the CLI exits 3)."""


@dataclass
class Session:
    """What a running mock (or proxy) saw and found."""

    provider: str
    target: str
    exchanges: list[Exchange]
    clients: list[dict[str, Any]]
    deviations: list[dict[str, Any]]
    judged_here: bool = False  # the mock ran without --check: its journal was judged here
    notes: list[str] = field(default_factory=list)


def _get(http: httpx.Client, url: str) -> httpx.Response:
    try:
        return http.get(url)
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def fetch_session(target: str, *, admin_token: str | None = None, timeout: float = 30.0) -> Session:
    """Read a mock's (``/__mock/``) or a proxy's (``/__proxy/``) deviations and exchanges."""
    base = target.rstrip("/")
    headers = {ADMIN_TOKEN_HEADER: admin_token} if admin_token else {}
    with httpx.Client(timeout=timeout, headers=headers) as http:
        health = _get(http, base + "/__mock/health")
        data = _json(health)
        if health.status_code == 401:
            raise VerifyError(f"{base} needs its admin token: pass --admin-token (or set "
                              "IMAGEGEN_ADMIN_TOKEN)")
        if health.status_code == 200 and isinstance(data, dict) and "provider" in data:
            provider = str(data["provider"])
            journal = _json(_get(http, base + "/__mock/journal")) or {}
            exchanges = [exchange_from_dict(e) for e in journal.get("exchanges") or []]
            answer = _get(http, base + "/__mock/deviations")
            found = _json(answer)
            if answer.status_code == 200 and isinstance(found, dict):
                return Session(provider, base, exchanges, list(found.get("clients") or []),
                               list(found.get("deviations") or []))
            # Started without --check: judge its journal here, with the same rules.
            live = LiveRules(provider, base_url=base)
            for exchange in exchanges:
                live.add(exchange)
            snapshot = live.to_dict(live.deviations())
            return Session(provider, base, exchanges, snapshot["clients"], snapshot["deviations"],
                           judged_here=True,
                           notes=[f"{base} runs without --check: its journal "
                                  f"({len(exchanges)} exchanges) was judged here"])
        proxied = _get(http, base + "/__proxy/deviations")
        found = _json(proxied)
        if proxied.status_code == 200 and isinstance(found, dict) and "provider" in found:
            journal = _json(_get(http, base + "/__proxy/journal")) or {}
            exchanges = [exchange_from_dict(e) for e in journal.get("exchanges") or []]
            return Session(str(found["provider"]), base, exchanges, list(found.get("clients") or []),
                           list(found.get("deviations") or []))
    raise VerifyError(f"{base} is neither an imagegen-conformance mock (GET /__mock/health) nor "
                      "its proxy (GET /__proxy/deviations); start it with "
                      "`imagegen-conformance serve --check`")


def live_report(session: Session, fail_on: Severity) -> Report:
    """One report section per client the mock told apart, with its exchanges and deviations."""
    from imagegen_conformance import contracts

    contract = contracts.load(session.provider)
    by_seq = {e.seq: e for e in session.exchanges}
    rules = [i.id for i in OTHER_CHECKS if i.id.startswith("schema.")]
    rules += [r.info.id for r in applicable_rules(contract)]
    report = Report(session.provider, "live clients", session.target, fail_on)
    for client in session.clients:
        label = str(client.get("client"))
        seqs = [int(s) for s in client.get("exchanges") or []]
        devs = [Deviation.from_dict(d) for d in session.deviations if d.get("client") == label]
        report.results.append(ScenarioResult(
            provider=session.provider, scenario=label,
            summary=f"a live session: {len(seqs)} exchange(s) from {label}", client=label,
            target=session.target, expect={}, deviations=devs,
            exchanges=[by_seq[s] for s in seqs if s in by_seq], rules=rules,
            base_url=session.target,
        ))
    return report
