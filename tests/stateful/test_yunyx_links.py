"""yunyx: generated links work for exactly one hour of provider time, whatever happens between."""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qsl, urlsplit

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule
from PIL import Image

from imagegen_conformance import contracts
from imagegen_conformance.harness.stateful import MockMachine

AUTH = {"Authorization": "Bearer k"}
TTL = contracts.load("yunyx").behaviour.retention.image_url
SIZES = ["1024x1024", "512x1024", "768x512", "768x1024", "1024x576", "576x1024"]


class YunyxLinks(MockMachine):
    provider = "yunyx"
    max_advance = 1800.0
    drive_step = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.issued: dict[str, tuple[float, tuple[int, int]]] = {}

    @rule(target=MockMachine.keys, size=st.sampled_from(SIZES),
          model=st.sampled_from(["FLUX.1-schnell", "stable-diffusion-3-5-large"]))
    def generate(self, size: str, model: str) -> str:
        response = self.call("POST", "/v1/images/generations", headers=AUTH,
                             json={"model": model, "prompt": "an island", "image_size": size})
        assert response.status == 200, response.body
        assert b"&" not in response.body  # the seed's quirk: '&' is written \\u0026
        (image,) = json.loads(response.body)["images"]
        width, height = (int(v) for v in size.split("x"))
        self.issued[image["url"]] = (self.server.clock.now(), (width, height))
        return str(image["url"])

    @rule(url=MockMachine.keys)
    def download(self, url: str) -> None:
        parts = urlsplit(url)
        response = self.call("GET", parts.path, query=dict(parse_qsl(parts.query)))
        issued, size = self.issued[url]
        assert TTL is not None
        # Links carry their expiry in whole epoch seconds (OSS `Expires`, S3 `X-Amz-Date`), as the
        # provider writes them: valid through the second the hour ends in.
        if self.server.clock.now() <= int(issued) + TTL:
            assert response.status == 200, response.body
            assert Image.open(io.BytesIO(response.body)).size == size
        else:
            assert response.status == 403


YunyxLinks.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestYunyxLinks = YunyxLinks.TestCase
