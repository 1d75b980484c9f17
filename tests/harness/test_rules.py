"""Rules over hand-made exchanges: provider-side faults a mock never makes on its own."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from imagegen_conformance import contracts
from imagegen_conformance.harness import ClientOutcome, RuleContext, check_rules, rule_catalogue, validate_all
from imagegen_conformance.harness.rules._rules import applicable_rules
from imagegen_conformance.mocks.engine import Exchange

CREATE = "/v2/ai/ep/images/generations"
TASK = "/v2/ai/ep/images/tasks/t1"


def ex(seq: int, t: float, method: str, path: str, op: str | None, status: int | None,
       body: Any = None, request: Any = None, headers: dict[str, str] | None = None,
       ms: float = 5.0, faults: list[str] | None = None, ctype: str = "application/json") -> Exchange:
    return Exchange(
        seq=seq, provider="cloudsway", role="api", operation=op, method=method, path=path, query=[],
        request_headers={"Authorization": "Bearer <redacted>", **(headers or {})},
        request_body=None if request is None else json.dumps(request),
        started_at=1000.0 + t, provider_time=5000.0 + t, status=status,
        response_headers={"Content-Type": ctype},
        response_body=None if body is None else (body if isinstance(body, str) else json.dumps(body)),
        duration_ms=ms, faults=faults or [], complete=True,
    )


def created(seq: int = 1, t: float = 0.0, request: Any = None) -> Exchange:
    return ex(seq, t, "POST", CREATE, "createImageTask", 200,
              {"status": "success", "taskId": "t1"}, request or {"prompts": "x"})


def poll(seq: int, t: float, state: str, urls: list[str] | None = None, **kw: Any) -> Exchange:
    body = {"status": state, "completed": state == "completed", "imageUrls": urls or []}
    return ex(seq, t, "GET", TASK, "getImageTask", 200, body, **kw)


def rules_of(exchanges: list[Exchange], contract: contracts.Contract | None = None,
             ok: bool = True) -> set[str]:
    ctx = RuleContext(contract or contracts.load("cloudsway"), exchanges,
                      outcome=ClientOutcome(ok=ok, images=1))
    return {d.rule for d in [*check_rules(ctx), *validate_all(ctx.contract, exchanges)]}


def test_a_clean_sequence_has_no_deviation() -> None:
    url = "http://h/images/a.png"
    seq = [created(), poll(2, 1.0, "pending"), poll(3, 2.0, "processing"),
           poll(4, 3.5, "completed", [url]),
           ex(5, 3.6, "GET", "/images/a.png", "downloadImage", 200, ctype="image/png")]
    assert rules_of(seq) == set()


@pytest.mark.parametrize(("sequence", "rule"), [
    pytest.param([created(), poll(2, 1, "completed", ["http://h/a.png"]), poll(3, 2, "processing")],
                 "provider.legal-transitions", id="completed-then-processing"),
    pytest.param([created(), poll(2, 1, "queued")], "provider.legal-transitions",
                 id="undeclared-state"),
    pytest.param([created(), ex(2, 1, "GET", TASK, "getImageTask", 200,
                                {"status": "completed", "completed": True, "imageUrls": []})],
                 "provider.success-has-images", id="completed-without-images"),
    pytest.param([created(request={"prompts": "x", "batchsize": 2}),
                  poll(2, 1, "completed", ["http://h/a.png"])],
                 "provider.success-has-images", id="fewer-images-than-asked"),
    pytest.param([created(), poll(2, 1, "completed", ["http://h/images/a.png"]),
                  ex(3, 1.1, "GET", "/images/a.png", "downloadImage", 404, "gone", ctype="text/plain")],
                 "provider.urls-resolve", id="image-url-404"),
    pytest.param([created(), ex(2, 1, "GET", TASK, "getImageTask", 200, {"status": "pending"},
                                ms=2500)],
                 "provider.latency", id="poll-over-latency-budget"),
], )
def test_provider_side_faults_are_the_providers(sequence: list[Exchange], rule: str) -> None:
    found = rules_of(sequence)
    assert rule in found
    assert rule_catalogue()[rule].side.value == "provider"


def test_a_body_breaking_the_schema_is_the_providers_and_a_fault_excuses_it() -> None:
    bad = ex(2, 1, "GET", TASK, "getImageTask", 200, {"status": "done"})
    assert rules_of([created(), bad]) >= {"schema.response"}
    excused = dataclasses.replace(bad, faults=["malformed"])
    assert "schema.response" not in rules_of([created(), excused])


def test_an_undocumented_status_is_a_provider_warning() -> None:
    teapot = ex(2, 1, "GET", TASK, "getImageTask", 418, {"error": {"code": "x", "message": "m"}})
    contract = contracts.load("cloudsway")
    devs = validate_all(contract, [created(), teapot])
    assert [(d.rule, d.side.value, d.severity.label) for d in devs] == [
        ("schema.status", "provider", "warning")
    ]


def test_a_mock_crash_is_critical() -> None:
    crash = dataclasses.replace(poll(2, 1, "pending"), status=500,
                                error="Traceback (most recent call last):\nKeyError: 'x'")
    assert "provider.mock-crash" in rules_of([created(), crash])


def test_retry_after_as_http_date_is_read() -> None:
    limited = ex(1, 0, "POST", CREATE, "createImageTask", 429, {"error": {"code": "r", "message": "m"}},
                 {"prompts": "x"})
    limited.response_headers["Retry-After"] = "Thu, 01 Jan 1970 00:16:50 GMT"  # started_at + 10 s
    again = created(2, 3.0)
    assert rules_of([limited, again]) == {"client.retry-after"}
    assert rules_of([limited, created(2, 10.5)]) == set()


def test_downloads_after_expiry_are_the_clients() -> None:
    base = contracts.load("cloudsway")
    behaviour = dataclasses.replace(
        base.behaviour, retention=dataclasses.replace(base.behaviour.retention, image_url=60.0)
    )
    expiring = dataclasses.replace(base, behaviour=behaviour)
    url = "http://h/images/a.png"
    late = [created(), poll(2, 1, "completed", [url]),
            ex(3, 100, "GET", "/images/a.png", "downloadImage", 403, "expired", ctype="text/plain")]
    assert rules_of(late, expiring) == {"client.downloads-before-expiry"}
    prompt = [*late[:2], ex(3, 30, "GET", "/images/a.png", "downloadImage", 200, ctype="image/png")]
    assert rules_of(prompt, expiring) == set()
    # Cloudsway's own links are not known to expire: the rule does not apply there.
    assert "client.downloads-before-expiry" not in {r.info.id for r in applicable_rules(base)}


def test_every_rule_reads_what_it_says_and_names_its_side() -> None:
    catalogue = rule_catalogue()
    assert len(catalogue) >= 20
    for info in catalogue.values():
        assert info.summary.endswith(".")
        assert info.side.value in ("client", "provider")


def test_a_returned_link_that_404s_is_the_providers() -> None:
    fal = contracts.load("fal")
    submit = Exchange(
        seq=1, provider="fal", role="queue", operation="submitRequest", method="POST",
        path="/fal-ai/flux-1/dev", query=[], request_headers={"Authorization": "Key <redacted>"},
        request_body=json.dumps({"prompt": "x"}), started_at=0, provider_time=0, status=200,
        response_headers={"Content-Type": "application/json"}, complete=True,
        response_body=json.dumps({
            "status": "IN_QUEUE", "request_id": "r1",
            "status_url": "http://h/fal-ai/flux-1/requests/r1/status",
            "response_url": "http://h/fal-ai/flux-1/requests/r1",
            "cancel_url": "http://h/fal-ai/flux-1/requests/r1/cancel",
        }),
    )
    gone = dataclasses.replace(
        submit, seq=2, operation="getRequestStatus", method="GET", request_body=None,
        path="/fal-ai/flux-1/requests/r1/status", status=404, provider_time=1,
        response_body=json.dumps({"detail": "Request not found"}),
    )
    ctx = RuleContext(fal, [submit, gone], outcome=ClientOutcome(ok=False))
    found = [d for d in check_rules(ctx) if d.rule == "provider.urls-resolve"]
    assert [(d.side.value, d.exchanges) for d in found] == [("provider", (1, 2))]
