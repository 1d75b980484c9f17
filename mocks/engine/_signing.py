"""Ed25519 signing keys a mock publishes as a JSON Web Key Set (RFC 7517, RFC 8037).

A receiver's verification code can be developed offline against them: the private key is
derived from the server's signing secret (``--signing-secret`` repeats it run to run, never
``--seed``), the public half is served as a JWKS by the provider that signs with it.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["Ed25519Signer"]


class Ed25519Signer:
    """One Ed25519 key pair derived from ``secret`` and a ``purpose`` label.

    >>> signer = Ed25519Signer(b"secret", "fal-webhook")
    >>> len(signer.sign(b"message"))
    64
    """

    def __init__(self, secret: bytes, purpose: str) -> None:
        seed = hashlib.sha256(secret + b"|ed25519|" + purpose.encode()).digest()
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_bytes = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        #: A stable key id: the first 16 hex digits of the public key's SHA-256.
        self.kid = hashlib.sha256(self.public_bytes).hexdigest()[:16]

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def jwk(self, *, padded: bool = False) -> dict[str, Any]:
        """The public key as a JWK. RFC 7515 base64url has no ``=`` padding; ``padded`` keeps it
        (some providers' own verification examples decode ``x`` with a padding-strict decoder)."""
        x = base64.urlsafe_b64encode(self.public_bytes).decode()
        return {"kty": "OKP", "crv": "Ed25519", "x": x if padded else x.rstrip("="),
                "kid": self.kid, "use": "sig", "alg": "EdDSA"}
