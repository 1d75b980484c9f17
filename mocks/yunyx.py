"""yunyx (SiliconFlow-style) ``POST /v1/images/generations``: one synchronous call.

Seed 003 (yunyx 文生图模型接口) and shared/reference/providers.md §4 and §6. The answer carries
``images[]`` (the seed) and, as captured SiliconFlow answers do, ``data[]``, ``created`` and
``shared_id``. Its links are Aliyun-OSS-style signed URLs (``/outputs/<uuid>_<i>.png?
OSSAccessKeyId=...&Expires=<created+3600>&Signature=...``; option links=s3: S3-style presigned)
that work for one hour of provider time; the raw JSON is written as Go writes it, so the links'
``&`` reach the client as ``\\u0026`` (quirk url-ampersand-escaped). Error bodies differ by status:
objects for 400/429/500/503, bare JSON strings otherwise. Started as ``siliconflow`` (the
contract's ``aliases.siliconflow``), it takes SiliconFlow's own models, sizes and error codes.
"""

from __future__ import annotations

import calendar
import json
import math
import time
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
    uuid4_text,
)

JSON_TYPE = "application/json; charset=utf-8"  # [V] the FAQ's raw HTTP example
TRACE_HEADER = "x-siliconcloud-trace-id"  # [V] on chat completions; assumed here [I]
_ALGORITHM = "AWS4-HMAC-SHA256"


def go_json(data: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, UTF-8, and HTML-escaped.

    Go escapes ``&``, ``<``, ``>``, U+2028 and U+2029 inside strings; those characters never
    occur outside strings in JSON, so replacing them in the whole text is exact.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
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
        models = self.setting("models")
        model = body.get("model", self.setting("default_model"))
        low, high = models[model]["inference"]
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
        seed = int(body.get("seed", call.rng.randrange(0, 10_000_000_000)))
        width, height = (int(v) for v in body.get("image_size", self._sizes(model)[0]).split("x"))
        created = int(call.now)
        issued, _ = call.link_times()
        images = [
            {"url": self._link(request, ImageSpec.of(width, height, prompt=body["prompt"], seed=seed,
                                                      index=i), issued)}
            for i in range(int(body.get("batch_size", 1)))
        ]
        result: dict[str, Any] = {"images": images}
        if self.option("response_body") == "captured":
            # [V-3p] captured SiliconFlow answers: data[] (what the openai SDK reads), created, shared_id.
            result["data"] = [dict(image) for image in images]
        result |= {"timings": {"inference": round(inference, 3)}, "seed": seed}
        if self.option("response_body") == "captured":
            result |= {"shared_id": "0", "created": created}
        return MockResponse.raw(go_json(result), 200, JSON_TYPE, self._headers())

    @route("GET", "/outputs/{name}", operation="getImageFile", auth=False)
    @route("HEAD", "/outputs/{name}", operation="headImageFile", auth=False)
    async def download(self, request: MockRequest, call: Call) -> MockResponse:
        """A signed link (operationId getImageFile: the engine reserves downloadImage for its own
        image route), OSS- or S3-style by its query: signature checked, expired one hour after
        issue [I]. Both styles are served whatever option links says, so a link stays good."""
        if "X-Amz-Signature" not in request.query and "X-Amz-Algorithm" not in request.query:
            return self._download_oss(request, call)
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
        models = self.setting("models")
        default = self.setting("default_model") if self.option("model_required") == "false" else None
        model = body.data.get("model", default)
        if model is None:
            return self.error(request, 400, data="model is required")
        if isinstance(model, str) and model not in models:
            return self._unknown_model(request)
        size_problem = self._size_problem(model, body.data) if isinstance(model, str) else None
        # image_size is checked against the model's own sizes (the alias's differ), not the schema's enum.
        issues = [i for i in body.issues if not i.path.startswith("$.image_size")]
        if issues:
            field = issues[0].path.removeprefix("$").lstrip(".") or "body"
            return self.error(request, 400, data=f"{field}: {issues[0].message}")
        if size_problem is not None:
            return self.error(request, 400, data=size_problem)
        return None

    def auth_error(self, request: MockRequest, reason: str) -> MockResponse:
        return self.error(request, 401)

    def too_large(self, request: MockRequest, limit: int) -> MockResponse:
        return self.error(request, 400, data=f"request body exceeds {limit} bytes")

    def overloaded(self, request: MockRequest) -> MockResponse:
        return self.error(request, 503)

    def _unknown_model(self, request: MockRequest) -> MockResponse:
        known = self.setting("unknown_model")
        if self.option("unknown_model") == "400":
            return self.error(request, 400, known["code"], known["message"])
        return self.error(request, 404, message=known["message"])

    # --- sizes ------------------------------------------------------------------------

    def _sizes(self, model: str) -> list[str]:
        """The sizes a model takes, the first its default: its own list, else the provider's."""
        sizes: list[str] = self.setting("models")[model].get("sizes") or self.setting("image_sizes")
        return sizes

    def _size_problem(self, model: str, body: dict[str, Any]) -> str | None:
        if "image_size" not in body:
            return None
        size, sizes = body["image_size"], self._sizes(model)
        if isinstance(size, str) and size in sizes:
            return None
        return f"image_size: {size!r} is not one of {sizes!r} ({model})"

    # --- links -----------------------------------------------------------------------

    def _signature(self, token: str, date: str, expires: str) -> str:
        return self.server.signer.hex(f"{token}\n{date}\n{expires}")

    def _link(self, request: MockRequest, spec: ImageSpec, issued: float) -> str:
        """A signed link valid ``retention.image_url`` seconds from ``issued`` (provider time)."""
        if self.option("links") == "oss":
            return self._oss_link(request, spec, issued)
        return self._s3_link(request, spec, issued)

    def _oss_link(self, request: MockRequest, spec: ImageSpec, issued: float) -> str:
        """``/outputs/<uuid>_<i>.png?OSSAccessKeyId=&Expires=&Signature=`` as captured [V-3p].

        The uuid holds the image's spec, so no image is stored; ``Expires`` (epoch seconds) is
        the expiry, and ``Signature`` (HMAC-SHA1 over OSS's string to sign [I]) covers both.
        """
        lifetime = int(self.link_lifetime() or 3600)
        expires = str(int(issued) + lifetime)
        name = f"{_pack(spec)}_{spec.index}{spec.extension}"
        query = "&".join([
            f"OSSAccessKeyId={self._oss_key_id()}",
            f"Expires={expires}",
            f"Signature={_quote_b64(self._oss_signature(name, expires))}",
        ])
        path = self.contract.behaviour.raw["links"]["path"]
        return request.url(f"{path}{name}?{query}")

    def _oss_key_id(self) -> str:
        return self.server.signer.key_id("LTAI5t", 18)

    def _oss_signature(self, name: str, expires: str) -> str:
        bucket = self.contract.behaviour.raw["links"]["bucket"]
        return self.server.signer.b64(f"GET\n\n\n{expires}\n/{bucket}/outputs/{name}", "sha1")

    def _download_oss(self, request: MockRequest, call: Call) -> MockResponse:
        query, name = request.query, request.params["name"]
        if any(n not in query for n in ("OSSAccessKeyId", "Expires", "Signature")):
            return _s3_error("AccessDenied", "AccessKeyId, Expires and Signature are required in the query.")
        expected = self._oss_signature(name, query["Expires"])
        if query["OSSAccessKeyId"] != self._oss_key_id() or not self.server.signer.matches(
            query["Signature"], expected
        ):
            return _s3_error("SignatureDoesNotMatch",
                             "The request signature we calculated does not match the signature you provided.")
        if not query["Expires"].isdigit() or call.now > int(query["Expires"]):
            return _s3_error("AccessDenied", "Request has expired")
        spec = _unpack(name)
        if spec is None:
            return _s3_error("NoSuchKey", "The specified key does not exist.", 404)
        image = render(spec)
        return MockResponse.raw(b"" if request.method == "HEAD" else image, 200, spec.content_type,
                                {"Content-Length": str(len(image))})

    def _s3_link(self, request: MockRequest, spec: ImageSpec, issued: float) -> str:
        """An S3-style presigned link (option links=s3) [I]."""
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
        return uuid4_text(self.server.rng.getrandbits(128))

    def _headers(self) -> dict[str, str]:
        return {TRACE_HEADER: self._trace()}


_PACK = ((13, "width"), (13, "height"), (34, "seed"), (48, "hash"))  # 108 bits in a uuid's 120


def _quote_b64(text: str) -> str:
    """``quote(text, safe="")`` for standard base64: only ``+``, ``/`` and ``=`` need escaping."""
    return text.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")


def _pack(spec: ImageSpec) -> str:
    """A uuid-shaped name (version 4, variant 8) whose free bits hold a PNG's width, height,
    seed and prompt hash: the link's file name is the image's whole description."""
    number = 0
    values = {"width": spec.width, "height": spec.height, "seed": spec.seed,
              "hash": int(spec.prompt_hash, 16)}
    for bits, key in _PACK:
        number = (number << bits) | (values[key] & ((1 << bits) - 1))
    h = f"{number:030x}"
    return f"{h[:8]}-{h[8:12]}-4{h[12:15]}-8{h[15:18]}-{h[18:]}"


def _unpack(name: str) -> ImageSpec | None:
    """The spec a ``<uuid>_<i>.png`` name stands for, or None when it is no such name."""
    stem, _, ext = name.rpartition(".")
    uid, _, index = stem.rpartition("_")
    h = uid.replace("-", "")
    if ext != "png" or not index.isdigit() or len(h) != 32 or h[12] != "4" or h[16] != "8":
        return None
    try:
        number = int(h[:12] + h[13:16] + h[17:], 16)
    except ValueError:
        return None
    values: dict[str, int] = {}
    for bits, key in reversed(_PACK):
        values[key] = number & ((1 << bits) - 1)
        number >>= bits
    if not (1 <= values["width"] <= 4096 and 1 <= values["height"] <= 4096):
        return None
    return ImageSpec(values["width"], values["height"], "png", values["seed"], int(index),
                     f"{values['hash']:012x}")


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
