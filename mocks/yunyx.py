"""yunyx (SiliconFlow-style) ``POST /v1/images/generations``: one synchronous call.

Seed 003 (yunyx 文生图模型接口) and shared/reference/providers.md §4. The answer carries
S3-style presigned links that work for one hour of provider time; the raw JSON is written as
Go writes it, so the links' ``&`` reach the client as ``\\u0026`` (quirk url-ampersand-escaped).
Error bodies differ by status: objects for 400/429/500/503, bare JSON strings otherwise.
"""

from __future__ import annotations

import calendar
import json
import math
import time
import uuid
from typing import Any
from urllib.parse import quote

from .engine import (
    Body,
    Call,
    ImageSpec,
    ImageTokenError,
    MockRequest,
    MockResponse,
    Provider,
    render,
    route,
)

JSON_TYPE = "application/json; charset=utf-8"  # [V] the FAQ's raw HTTP example
TRACE_HEADER = "x-siliconcloud-trace-id"  # [V] on chat completions; assumed here [I]
_ALGORITHM = "AWS4-HMAC-SHA256"


def go_json(data: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, UTF-8, and HTML-escaped.

    Go escapes ``&``, ``<``, ``>``, U+2028 and U+2029 inside strings; those characters never
    occur outside strings in JSON, so replacing them in the whole text is exact.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


class YunyxProvider(Provider):
    """The yunyx / SiliconFlow image API: ``MockServer("yunyx")`` or ``MockServer("siliconflow")``."""

    id = "yunyx"
    image_prefix = None  # links are presigned S3-style URLs served by getImageFile below

    # --- routes ----------------------------------------------------------------------

    @route("POST", "/v1/images/generations", operation="generateImages")
    async def generate(self, request: MockRequest, call: Call) -> MockResponse:
        raw = self.contract.behaviour.raw
        body = call.body  # checked by the engine with refuse() below
        model = body.get("model", raw["default_model"])
        low, high = raw["models"][model]["inference"]
        # A synchronous call is a task the answer waits for: the engine applies its faults.
        generation = call.new_task({}, phases=[("generating", call.rng.uniform(float(low), float(high)))],
                                   keep=False)
        inference = generation.durations[0]
        timeout = float(self.contract.behaviour.limits["request_timeout"])
        await self.server.clock.sleep(min(inference, timeout))
        if inference > timeout:
            return self.error(request, 504)
        if generation.failure is not None:
            return self.error(request, int(raw["failure"]["status"]))
        seed = body.get("seed", call.rng.randrange(0, 10_000_000_000))
        width, height = (int(v) for v in body.get("image_size", raw["default_image_size"]).split("x"))
        issued, _ = call.link_times()
        images = [
            {"url": self._link(request, ImageSpec.of(width, height, prompt=body["prompt"], seed=seed,
                                                      index=i), issued)}
            for i in range(int(body.get("batch_size", 1)))
        ]
        result = {"images": images, "timings": {"inference": round(inference, 3)}, "seed": seed}
        return MockResponse.raw(go_json(result), 200, JSON_TYPE, self._headers())

    @route("GET", "/outputs/{name}", operation="getImageFile", auth=False)
    @route("HEAD", "/outputs/{name}", operation="headImageFile", auth=False)
    async def download(self, request: MockRequest, call: Call) -> MockResponse:
        """An S3-style presigned link (operationId getImageFile: the engine reserves downloadImage
        for its own image route): signature checked, expired one hour after issue [I]."""
        token, _, ext = request.params["name"].rpartition(".")
        query = request.query
        names = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                 "X-Amz-SignedHeaders", "X-Amz-Signature")
        if any(n not in query for n in names):
            return _s3_error("AccessDenied", "Query-string authentication requires the X-Amz-* parameters.")
        date, expires = query["X-Amz-Date"], query["X-Amz-Expires"]
        if not self.server.signer.matches(query["X-Amz-Signature"], self._signature(token, date, expires)):
            return _s3_error("SignatureDoesNotMatch",
                             "The request signature we calculated does not match the signature you provided.")
        try:
            spec = self.server.images.open(token, now=call.now)
        except ImageTokenError as exc:
            if exc.expired:
                return _s3_error("AccessDenied", "Request has expired")
            return _s3_error("NoSuchKey", "The specified key does not exist.", 404)
        if call.now > _parse_amz_date(date) + int(expires):
            return _s3_error("AccessDenied", "Request has expired")
        if ext != spec.fmt:
            return _s3_error("NoSuchKey", "The specified key does not exist.", 404)
        image = render(spec)
        return MockResponse.raw(b"" if request.method == "HEAD" else image, 200, spec.content_type,
                                {"Content-Length": str(len(image))})

    # --- the provider's own answers ------------------------------------------------------

    def error(
        self, request: MockRequest, status: int, code: str | int | None = None,
        message: str | None = None, headers: dict[str, str] | None = None, *, data: str | None = None,
    ) -> MockResponse:
        """The body in the shape SiliconFlow uses for ``status`` (error-bodies-differ-by-status)."""
        spec = self.error_spec(status)
        message = message or spec.message
        shape = self.contract.behaviour.raw["error_bodies"].get(status, "string")
        body: Any
        if shape == "code_message_data":
            value = code if code is not None else spec.code
            number = str(value).lstrip("-").isdigit()
            body = {"code": int(str(value)) if number else value, "message": message, "data": data}
            if status == 503 and data is None:
                body["data"] = self._trace()
        elif shape == "message_data":
            body = {"message": message, "data": data if data is not None else self._trace()}
        else:
            body = message
        return MockResponse.raw(go_json(body), status, JSON_TYPE, {**self._headers(), **(headers or {})})

    def refuse(self, request: MockRequest, body: Body) -> MockResponse | None:
        """A 400 with the reason in ``data``; the model is checked before the schema."""
        if body.error is not None:
            return self.error(request, 400, data=str(body.error))
        assert body.data is not None
        raw = self.contract.behaviour.raw
        default = raw["default_model"] if self.option("model_required") == "false" else None
        model = body.data.get("model", default)
        if model is None:
            return self.error(request, 400, data="model is required")
        if isinstance(model, str) and model not in raw["models"]:
            return self._unknown_model(request)
        if body.issues:
            issue = body.issues[0]
            field = issue.path.removeprefix("$").lstrip(".") or "body"
            return self.error(request, 400, data=f"{field}: {issue.message}")
        return None

    def auth_error(self, request: MockRequest, reason: str) -> MockResponse:
        return self.error(request, 401)

    def too_large(self, request: MockRequest, limit: int) -> MockResponse:
        return self.error(request, 400, data=f"request body exceeds {limit} bytes")

    def overloaded(self, request: MockRequest) -> MockResponse:
        return self.error(request, 503)

    def _unknown_model(self, request: MockRequest) -> MockResponse:
        known = self.contract.behaviour.raw["unknown_model"]
        if self.option("unknown_model") == "400":
            return self.error(request, 400, known["code"], known["message"])
        return self.error(request, 404, message=known["message"])

    # --- links -----------------------------------------------------------------------

    def _signature(self, token: str, date: str, expires: str) -> str:
        return self.server.signer.hex(f"{token}\n{date}\n{expires}")

    def _link(self, request: MockRequest, spec: ImageSpec, issued: float) -> str:
        """A presigned link valid ``retention.image_url`` seconds from ``issued`` (provider time)."""
        lifetime = int(self.link_lifetime() or 3600)
        token = self.server.images.issue(spec, expires_at=issued + lifetime)
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(issued))
        region = self.contract.behaviour.raw["links"]["region"]
        credential = f"yunyx-mock/{date[:8]}/{region}/s3/aws4_request"
        query = "&".join([
            f"X-Amz-Algorithm={_ALGORITHM}",
            f"X-Amz-Credential={quote(credential, safe='')}",
            f"X-Amz-Date={date}",
            f"X-Amz-Expires={lifetime}",
            "X-Amz-SignedHeaders=host",
            f"X-Amz-Signature={self._signature(token, date, str(lifetime))}",
        ])
        path = self.contract.behaviour.raw["links"]["path"]
        return request.url(f"{path}{token}{spec.extension}?{query}")

    def _trace(self) -> str:
        return str(uuid.UUID(int=self.server.rng.getrandbits(128), version=4))

    def _headers(self) -> dict[str, str]:
        return {TRACE_HEADER: self._trace()}


def _parse_amz_date(date: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ")))
    except (ValueError, OverflowError):
        return -math.inf


def _s3_error(code: str, message: str, status: int = 403) -> MockResponse:
    """An S3-style XML error, as the storage host behind presigned links answers [I]."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return MockResponse.raw(body.encode(), status, "application/xml")
