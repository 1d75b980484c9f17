"""An official provider SDK, unmodified, served in-process by the imagegen_respx fixture."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

import fal_client
import httpx
import pytest
from PIL import Image

from imagegen_conformance.mocks import MockServer


def test_fal_client_subscribe_through_the_respx_fixture(
    imagegen_respx: Callable[..., MockServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    server = imagegen_respx("fal", clock="scaled", time_scale=200, seed=4)
    updates: list[str] = []
    client = fal_client.SyncClient(key="respx-key")
    result = client.subscribe(
        "fal-ai/flux-1/dev",
        arguments={"prompt": "a lighthouse", "image_size": "square", "output_format": "png"},
        with_logs=True,
        on_queue_update=lambda update: updates.append(type(update).__name__),
    )
    (image,) = result["images"]
    assert (image["width"], image["height"], image["content_type"]) == (512, 512, "image/png")
    assert image["url"].startswith("https://queue.fal.run/files/")
    assert updates and set(updates) <= {"Queued", "InProgress", "Completed"}
    operations = [e.operation for e in server.journal.entries()]
    assert operations[0] is not None and operations.count(operations[0]) == 1
    downloaded = httpx.get(image["url"])
    assert Image.open(io.BytesIO(downloaded.content)).size == (512, 512)
