"""Signed links a provider serves itself (Dify's HMAC file links, yunyx's OSS and S3-style
presigned ones): one HMAC signer with the server's secret (random per process unless
``--signing-secret``, never from ``--seed``; shared through the store between workers),
SHA-256 unless the provider's scheme says otherwise (OSS: SHA-1), and one constant-time
comparison. How long a link lives is :meth:`MockServer.link_times`'s business.
"""

from __future__ import annotations

import base64
import hmac

__all__ = ["LinkSigner"]


class LinkSigner:
    """HMAC-SHA256 signatures over a link's fields.

    >>> signer = LinkSigner(b"secret")
    >>> signer.matches(signer.hex("a|b"), signer.hex("a|b"))
    True
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._key_ids: dict[tuple[str, int], str] = {}

    def digest(self, message: str, algorithm: str = "sha256") -> bytes:
        # surrogatepass: a client may send any query string, lone surrogates included.
        # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).digest().
        return hmac.digest(self._secret, message.encode(errors="surrogatepass"), algorithm)

    def b64(self, message: str, algorithm: str = "sha256") -> str:
        """Standard base64 (OSS's ``Signature``: HMAC-SHA1, then base64)."""
        return base64.b64encode(self.digest(message, algorithm)).decode()

    def key_id(self, prefix: str, length: int) -> str:
        """A stable access-key id derived from the secret (never the secret itself); made once."""
        known = self._key_ids.get((prefix, length))
        if known is None:
            known = self._key_ids[prefix, length] = prefix + self.hex("access-key-id")[:length]
        return known

    def hex(self, message: str) -> str:
        return self.digest(message).hex()

    def urlsafe(self, message: str) -> str:
        """URL-safe base64 with its ``=`` padding kept."""
        return base64.urlsafe_b64encode(self.digest(message)).decode()

    @staticmethod
    def matches(given: str, expected: str) -> bool:
        """Whether a signature a client sent is the expected one (constant time)."""
        return bool(given) and hmac.compare_digest(
            given.encode(errors="surrogatepass"), expected.encode(errors="surrogatepass")
        )
