"""One exchange model for the mock journal, the proxy and httpx/respx capture; the public API."""

from __future__ import annotations

import json

import httpx

from imagegen_conformance import contracts, harness
from imagegen_conformance.harness import (
    ClientOutcome,
    RecordingTransport,
    RuleContext,
    check_rules,
    curl_line,
    exchange_from_dict,
    operation_for,
    stream_events,
    validate_all,
)
from imagegen_conformance.mocks import MockServer, mock_router
from imagegen_conformance.mocks.engine import Exchange


def test_all_is_honest_and_every_name_resolves() -> None:
    assert len(set(harness.__all__)) == len(harness.__all__)
    # Declared once: what the package imports is what it declares (its subpackages aside).
    imported = {n for n, v in vars(harness).items()
                if not n.startswith("_") and not isinstance(v, type(harness)) and n != "annotations"}
    assert set(harness.__all__) == imported
    for name in harness.__all__:
        assert getattr(harness, name) is not None, name


async def test_httpx_capture_records_what_the_mock_journals() -> None:
    server = MockServer("cloudsway", clock="manual", seed=5)
    contract = contracts.load("cloudsway")
    transport = RecordingTransport(
        httpx.AsyncHTTPTransport(), provider="cloudsway",
        operation_of=lambda method, path: operation_for(contract, method, path),
    )
    base = "https://genaiapi.cloudsway.net/v2/ai/ep/images"
    with mock_router(server):
        async with httpx.AsyncClient(transport=transport) as http:
            created = await http.post(f"{base}/generations", json={"prompts": "fox", "batchsize": 12},
                                      headers={"Authorization": "Bearer secret-key-1"})
            assert created.status_code == 400
            await http.post(f"{base}/generations", json={"prompts": "fox", "batchsize": 12},
                            headers={"Authorization": "Bearer secret-key-1"})
    captured, journaled = transport.journal.entries(), server.journal.entries()
    assert len(captured) == len(journaled) == 2
    for mine, theirs in zip(captured, journaled, strict=True):
        assert isinstance(mine, Exchange)
        for name in ("operation", "method", "path", "status", "response_body", "request_body"):
            assert getattr(mine, name) == getattr(theirs, name), name
        assert mine.request_headers["authorization"] == "Bearer <redacted>"
    # The harness checks captured traffic exactly as it checks a journal.
    ctx = RuleContext(contract, captured, outcome=ClientOutcome(ok=False))
    found = {d.rule for d in [*validate_all(contract, captured), *check_rules(ctx)]}
    assert found == {"schema.request", "client.no-blind-retry"}


def test_journal_dicts_round_trip() -> None:
    server_side = Exchange(
        seq=7, provider="cloudsway", role="api", operation="getImageTask", method="GET",
        path="/v2/ai/ep/images/tasks/t", query=[("a", "1")],
        request_headers={"Authorization": "Bearer <redacted>"},
        request_body=None, started_at=1.0, provider_time=2.0, status=200,
        response_body=json.dumps({"status": "pending"}), complete=True,
    )
    again = exchange_from_dict(json.loads(json.dumps(server_side.to_dict())))
    assert again == server_side
    line = curl_line(again, "http://127.0.0.1:8701")
    assert line.startswith("curl -sS -X GET 'http://127.0.0.1:8701/v2/ai/ep/images/tasks/t?a=1'")
    assert "Bearer $API_KEY" in line


def test_sse_parsing_keeps_bare_pings_apart() -> None:
    ex = Exchange(
        seq=1, provider="dify", role="api", operation="runWorkflow", method="POST", path="/v1/workflows/run",
        query=[], request_headers={}, request_body=None, started_at=0, provider_time=0, status=200,
        response_headers={"Content-Type": "text/event-stream; charset=utf-8"},
        events=['data: {"event": "workflow_started"}\n\n', "event: ping\n\n", ": comment\n\n",
                'data: {"event": "workflow_fin', 'ished"}\n\n'],
    )
    events = stream_events(ex)
    assert [(e.event, e.json(), e.comment) for e in events] == [
        (None, {"event": "workflow_started"}, False),
        ("ping", None, False),
        (None, None, True),
        (None, {"event": "workflow_finished"}, False),
    ]
