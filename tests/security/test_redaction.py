"""One redactor (mocks/engine/_redact.py) for the journal, the proxy, the recorder and reports."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import httpx
import pytest

from imagegen_conformance.harness import Report, render_html, render_json, render_junit
from imagegen_conformance.harness.report import ScenarioResult
from imagegen_conformance.harness.rules._exchanges import RecordingTransport
from imagegen_conformance.mocks import MockServer
from imagegen_conformance.mocks.engine import Exchange, redact_text

SECRET = "imagegen-canary-form-0123456789"
FORM = f"token={SECRET}&prompt=fox"
ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(FORM, "token=REDACTED&prompt=fox", id="form-body"),
    pytest.param("prompt=fox&api_key=abc", "prompt=fox&api_key=REDACTED", id="form-body-later-field"),
    pytest.param('{"url": "https://h/x.png?a=1&sign=s1gn&nonce=n"}',
                 '{"url": "https://h/x.png?a=1&sign=REDACTED&nonce=REDACTED"}', id="signed-link-in-json"),
    pytest.param('"https://s3/o.png?X-Amz-Date=1\\u0026X-Amz-Signature=abc"',
                 '"https://s3/o.png?X-Amz-Date=1\\u0026X-Amz-Signature=REDACTED"', id="go-escaped-ampersand"),
    pytest.param("monkey=banana&keyboard=1", "monkey=banana&keyboard=1", id="names-that-only-contain-one"),
])
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # redacting twice changes nothing


async def test_the_journal_stores_a_form_body_redacted() -> None:
    server = MockServer("cloudsway", clock="manual")
    await server.request("POST", "/v2/ai/e/images/generations", body=FORM.encode(),
                         headers={"Authorization": "Bearer k",
                                  "Content-Type": "application/x-www-form-urlencoded"})
    entry = server.journal.entries()[-1]
    assert entry.request_body == "token=REDACTED&prompt=fox"
    assert SECRET not in json.dumps(entry.to_dict())


def test_a_report_redacts_a_form_body_it_was_given_whole() -> None:
    exchange = Exchange(
        seq=1, provider="cloudsway", role="api", operation="createImageTask", method="POST",
        path="/v2/ai/e/images/generations", query=[], request_headers={}, request_body=FORM,
        started_at=0.0, provider_time=0.0, status=400, response_body=f'{{"echo": "{FORM}"}}',
    )
    report = Report("cloudsway", "c", "mock")
    report.results.append(ScenarioResult("cloudsway", "s", "", "c", "mock", {}, exchanges=[exchange]))
    for text in (render_json(report), render_html(report), render_junit(report)):
        assert SECRET not in text
    assert "token=REDACTED&prompt=fox" in render_json(report)


async def test_the_recording_transport_redacts_the_request_body() -> None:
    transport = RecordingTransport(httpx.MockTransport(lambda r: httpx.Response(200)), provider="cloudsway")
    async with httpx.AsyncClient(transport=transport) as http:
        await http.post("http://h/x", content=FORM.encode())
    assert transport.journal.entries()[0].request_body == "token=REDACTED&prompt=fox"


def test_there_is_one_redactor() -> None:
    defined = []
    for folder in ("contracts", "mocks", "harness", "clients"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef) and node.name.startswith("redact"):
                    defined.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert sorted(defined) == [
        "mocks/engine/_redact.py:redact_exchange", "mocks/engine/_redact.py:redact_headers",
        "mocks/engine/_redact.py:redact_query",
        "mocks/engine/_redact.py:redact_text", "mocks/engine/_redact.py:redact_url",
    ]


def test_a_go_escaped_oss_link_is_redacted() -> None:
    # yunyx writes & as \u0026 in its JSON: a secret name right after the escape is still found.
    raw = r'{"url":"http://h/outputs/x_0.png?OSSAccessKeyId=LTAI5tabc\u0026Expires=9\u0026Signature=ab%2Fc%3D"}'
    assert redact_text(raw) == (
        r'{"url":"http://h/outputs/x_0.png?OSSAccessKeyId=REDACTED\u0026Expires=9\u0026Signature=REDACTED"}'
    )
