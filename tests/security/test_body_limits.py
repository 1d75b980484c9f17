"""Bodies over a provider's size limit get the provider's own error, not memory growth.

Raw sockets, so that the client can keep sending while the mock has already answered: a
declared ``Content-Length`` far beyond the limit is answered from the header alone, and a
chunked body without a length is read only up to the limit.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from typing import Any

import pytest

from imagegen_conformance.mocks import MockRequest, MockServer, start

# (provider, role, method, path, auth header) of one body-taking operation each.
TARGETS = [
    ("cloudsway", "api", "POST", "/v2/ai/x/images/generations", "Authorization: Bearer k"),
    ("acedata", "api", "POST", "/flux/images", "Authorization: Bearer k"),
    ("fal", "queue", "POST", "/fal-ai/flux-1/dev", "Authorization: Key k"),
    ("yunyx", "api", "POST", "/v1/images/generations", "Authorization: Bearer k"),
    ("dify", "api", "POST", "/v1/workflows/run", "Authorization: Bearer app-k"),
]
CHUNK = b"x" * 65_536


Answer = tuple[int, dict[str, str], bytes]


async def _exchange(url: str, head: bytes, body_bytes: int, chunked: bool) -> Answer:
    """Send ``head`` then up to ``body_bytes`` while reading the answer; return it."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def send() -> None:
        sent = 0
        try:
            writer.write(head)
            while sent < body_bytes:
                piece = CHUNK if not chunked else b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
                writer.write(piece)
                await writer.drain()
                sent += len(CHUNK)
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the mock answered and closed: exactly what it should do

    sender = asyncio.ensure_future(send())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 20)
        raw_headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        headers = {}
        for line in raw_headers.decode("latin-1").split("\r\n"):
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 20)
    finally:
        sender.cancel()
        writer.close()
    return int(status_line.split()[1]), headers, body


def _expected(server: MockServer, role: str) -> tuple[int, Any]:
    own = server.provider.too_large(MockRequest.build("POST", "/", role=role), server.max_body)
    return own.status, json.loads(own.body)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("provider", "role", "method", "path", "auth"), TARGETS,
                         ids=[t[0] for t in TARGETS])
async def test_oversized_bodies_get_the_provider_error_without_memory_growth(
    provider: str, role: str, method: str, path: str, auth: str
) -> None:
    server = MockServer(provider, clock="manual", seed=4)
    served = await start([server], ports={provider: 0})
    url = served.url(provider, role)
    limit = server.max_body
    status, envelope = _expected(server, role)
    assert status in (400, 413)
    try:
        tracemalloc.start()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        host = url.removeprefix("http://")
        # 1. A declared length of 8 GB: answered from the header, the body is never read.
        head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {8 << 30}\r\n\r\n").encode()
        got, headers, body = await _exchange(url, head, 4 * len(CHUNK), chunked=False)
        declared_peak = tracemalloc.get_traced_memory()[1] - base
        # 2. Chunked, no length, twice the limit: read up to the limit and no further.
        tracemalloc.reset_peak()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n"
                f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        got2, headers2, body2 = await _exchange(url, head, 2 * limit, chunked=True)
        chunked_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        await served.close()

    for answer, answer_headers, answer_body in ((got, headers, body), (got2, headers2, body2)):
        assert answer == status, answer_body[:300]
        assert "json" in answer_headers.get("content-type", "")
        parsed = json.loads(answer_body)
        assert isinstance(parsed, type(envelope))
        if isinstance(envelope, dict):
            assert set(parsed) == set(envelope), parsed
    assert declared_peak < 2 << 20, f"{declared_peak / 2**20:.1f} MB held for a body never read"
    # At most the limit (plus one read) is ever held, whatever is sent beyond it.
    assert chunked_peak < limit + (4 << 20), (
        f"{chunked_peak / 2**20:.1f} MB held for a {2 * limit / 2**20:.0f} MB body over a "
        f"{limit / 2**20:.0f} MB limit"
    )
    assert server.errors == []
    exchanges = server.journal.entries()
    assert len(exchanges) == 2 and all(e.status == status for e in exchanges)
    # The journal keeps a bounded excerpt, never the whole body.
    assert all(e.request_body is None or len(e.request_body) < 70_000 for e in exchanges)
