from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw

__all__ = ["FORMATS", "ImageSpec", "ImageTokenError", "ImageTokens", "render"]

# format -> (Pillow format name, MIME type, file extension)
FORMATS = {
    "png": ("PNG", "image/png", ".png"),
    "jpeg": ("JPEG", "image/jpeg", ".jpeg"),
    "jpg": ("JPEG", "image/jpeg", ".jpg"),
    "webp": ("WEBP", "image/webp", ".webp"),
}
MAX_SIDE = 4096
#: The longest lifetime a signed image link may carry (S3's presigned-URL maximum, 7 days): a
#: token claiming a later expiry is refused even with a good signature.
MAX_LIFETIME = 604_800
#: Tokens the mock issues are ~100 characters (a 64-bit seed included): a much longer one is
#: refused before any work.
MAX_TOKEN = 1024


def _seed64(seed: int) -> int:
    """A seed within 64 bits as is; a longer one (a contract may allow any integer) folded to
    64 bits by its hash, so its token stays short and its image its own."""
    if -(2**63) <= seed < 2**64:
        return seed
    return int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:8], "big")


@dataclass(frozen=True)
class ImageSpec:
    """Everything that determines a placeholder image: same spec, same bytes."""

    width: int
    height: int
    fmt: str = "png"
    seed: int = 0
    index: int = 0
    prompt_hash: str = ""

    @classmethod
    def of(
        cls, width: int, height: int, *, fmt: str = "png", prompt: str = "", seed: int = 0,
        index: int = 0,
    ) -> ImageSpec:
        if fmt not in FORMATS:
            raise ValueError(f"unknown image format {fmt!r}; valid: {', '.join(FORMATS)}")
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ValueError(f"image size {width}x{height} outside 1..{MAX_SIDE}")
        digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        # int(): a JSON schema "integer" admits 2.0; the token must carry what it re-checks.
        return cls(int(width), int(height), fmt, _seed64(int(seed)), int(index), digest)

    @property
    def content_type(self) -> str:
        return FORMATS[self.fmt][1]

    @property
    def extension(self) -> str:
        return FORMATS[self.fmt][2]


def _rows(spec: ImageSpec) -> tuple[bytes, bytes, int, int]:
    """The picture as its two kinds of raw RGB row: (plain, banded, first banded, last banded).

    A background, and six coloured bands across the middle half, colours derived from
    everything in ``spec``; a picture narrower than six pixels gets fewer bands.
    """
    key = hashlib.sha256(
        f"{spec.prompt_hash}|{spec.seed}|{spec.index}|{spec.width}x{spec.height}".encode()
    ).digest()
    background = bytes(key[0:3])
    bands = 6
    banded = bytearray(background * spec.width)
    for i in range(bands):
        x0, x1 = spec.width * i // bands, spec.width * (i + 1) // bands - 1
        if x1 >= x0:
            banded[3 * x0 : 3 * (x1 + 1)] = bytes(key[3 + 3 * i : 6 + 3 * i]) * (x1 - x0 + 1)
    return background * spec.width, bytes(banded), spec.height // 4, spec.height * 3 // 4


def drawn_by_pillow(spec: ImageSpec) -> Image.Image:
    """The picture :func:`_rows` describes, drawn with Pillow's ``ImageDraw`` instead: the
    independent reference the tests decode :func:`render`'s PNG against, and the benchmark's
    baseline renderer (Pillow drawing and encoding it)."""
    key = hashlib.sha256(
        f"{spec.prompt_hash}|{spec.seed}|{spec.index}|{spec.width}x{spec.height}".encode()).digest()
    image = Image.new("RGB", (spec.width, spec.height), (key[0], key[1], key[2]))
    draw = ImageDraw.Draw(image)
    for i in range(6):
        x0, x1 = spec.width * i // 6, spec.width * (i + 1) // 6 - 1
        if x1 >= x0:
            draw.rectangle([x0, spec.height // 4, x1, spec.height * 3 // 4],
                           fill=(key[3 + 3 * i], key[4 + 3 * i], key[5 + 3 * i]))
    return image


def _layout(spec: ImageSpec, plain: bytes, banded: bytes, first: int, last: int) -> bytes:
    return plain * first + banded * (last - first + 1) + plain * (spec.height - last - 1)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _deflate_runs(runs: list[tuple[bytes, int]]) -> bytes:
    """A zlib stream of each ``row`` repeated ``count`` times, in turn.

    A placeholder is a few kinds of row, each repeated hundreds of times. Each run is deflated
    as one chunk of up to ``_CHUNK`` bytes of its rows, ended by a full flush (no reference
    reaches back past it, and it ends on a byte boundary), so the same compressed bytes stand
    for every repetition of that chunk: a 1024x1024 picture costs a few chunks of deflate, not
    three megabytes of it. The Adler-32 checksum still covers every byte.
    """
    pieces = [b"\x78\x01"]  # zlib header: deflate, 32 KiB window, fastest
    adler = 1
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    for row, count in runs:
        if count <= 0:
            continue
        per_chunk = max(1, min(count, _CHUNK // len(row)))
        chunk = row * per_chunk
        whole, rest = divmod(count, per_chunk)
        pieces.append((deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)) * whole)
        for _ in range(whole):
            adler = zlib.adler32(chunk, adler)
        if rest:
            tail = row * rest
            pieces.append(deflate.compress(tail) + deflate.flush(zlib.Z_FULL_FLUSH))
            adler = zlib.adler32(tail, adler)
    pieces.append(deflate.flush(zlib.Z_FINISH))
    pieces.append(struct.pack(">I", adler))
    return b"".join(pieces)


_CHUNK = 64 * 1024


def _png(spec: ImageSpec) -> bytes:
    """An 8-bit RGB PNG whose every row has filter type 0 (None).

    Pillow's encoder tries every PNG filter on every row of an RGB image and deflates every
    byte, which is most of the cost of a large flat placeholder; unfiltered rows of flat colour
    deflate as well, and :func:`_deflate_runs` deflates each kind of row once. Decoders
    (Pillow, in the tests) read the very pixels Pillow's drawing has.
    """
    plain, banded, first, last = _rows(spec)
    plain, banded = b"\x00" + plain, b"\x00" + banded
    idat = _deflate_runs([(plain, first), (banded, last - first + 1), (plain, spec.height - last - 1)])
    header = struct.pack(">IIBBBBB", spec.width, spec.height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", header),
        _png_chunk(b"IDAT", idat),
        _png_chunk(b"IEND", b""),
    ])


@lru_cache(maxsize=64)
def render(spec: ImageSpec) -> bytes:
    """A deterministic image at exactly ``spec``'s size and format: same spec, same bytes."""
    pil_format = FORMATS[spec.fmt][0]
    if pil_format == "PNG":
        return _png(spec)
    image = Image.frombytes("RGB", (spec.width, spec.height), _layout(spec, *_rows(spec)))
    out = io.BytesIO()
    if pil_format == "JPEG":
        image.save(out, pil_format, quality=80)
    else:
        image.save(out, pil_format)
    return out.getvalue()


class ImageTokenError(ValueError):
    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


class ImageTokens:
    """Self-contained, signed image references: no image is stored, each is drawn on request.

    A token carries the :class:`ImageSpec` and an optional expiry (provider time), signed with
    HMAC-SHA256 so a client cannot forge or extend one.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        # A finished task is polled many times and gets the same links each time: sign once.
        self._signed = lru_cache(maxsize=4096)(self._sign)

    def _mac(self, payload: bytes) -> str:
        digest = hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, spec: ImageSpec, *, expires_at: float | None = None) -> str:
        """A signed token for ``spec``, valid until ``expires_at`` (provider time) if given."""
        return self._signed(spec, expires_at)

    def _sign(self, spec: ImageSpec, expires_at: float | None) -> str:
        fields = [spec.width, spec.height, spec.fmt, spec.seed, spec.index, spec.prompt_hash]
        if expires_at is not None:
            fields.append(int(expires_at))
        payload = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode())
        body = payload.rstrip(b"=")
        return body.decode() + "." + self._mac(body)

    def open(self, token: str, *, now: float) -> ImageSpec:
        """The spec a token carries, or :class:`ImageTokenError` (bad signature, malformed, expired).

        Everything a token says is checked before it can cost anything: its length, its
        signature (as bytes, so a non-ASCII character is a bad signature, not a crash), each
        field's type and range (size within ``MAX_SIDE``, a known format), and an expiry no more
        than ``MAX_LIFETIME`` ahead.
        """
        if len(token) > MAX_TOKEN:
            raise ImageTokenError("image reference is malformed")
        body, _, mac = token.partition(".")
        expected = self._mac(body.encode("utf-8", "surrogatepass")).encode()
        if not mac or not hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), expected):
            raise ImageTokenError("image reference has a bad signature")
        try:
            fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError as exc:
            raise ImageTokenError("image reference is malformed") from exc
        spec = _spec_of(fields)
        if len(fields) == 7:
            expires = fields[6]
            if now > expires:
                raise ImageTokenError("image link has expired", expired=True)
            if expires - now > MAX_LIFETIME:
                raise ImageTokenError("image link claims a lifetime beyond the longest issued")
        return spec


def _spec_of(fields: object) -> ImageSpec:
    """The :class:`ImageSpec` of a token's fields, each checked (a token is outside input)."""
    ok = (
        isinstance(fields, list) and len(fields) in (6, 7)
        and all(type(v) is int for v in (*fields[:2], *fields[3:5], *fields[6:]))
        and isinstance(fields[2], str) and fields[2] in FORMATS and isinstance(fields[5], str)
        and 1 <= fields[0] <= MAX_SIDE and 1 <= fields[1] <= MAX_SIDE
    )
    if not ok:
        raise ImageTokenError("image reference is malformed")
    assert isinstance(fields, list)
    return ImageSpec(*fields[:6])
