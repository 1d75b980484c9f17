"""The one redactor: what the journal, the proxy, the recorder and the reports store of a secret.

Header values keep their scheme (``Bearer <redacted>``); secret query parameters become
``<redacted>``; a secret ``name=value`` inside any text (a signed link in a JSON body, a form
body ``token=...&prompt=...``, a webhook URL passed as a value) becomes ``name=REDACTED``, which
keeps a link inside a body a valid URL. Redacting twice changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qsl, urlencode

if TYPE_CHECKING:
    from ._journal import Exchange

__all__ = [
    "REDACTED",
    "SECRET_HEADERS",
    "SECRET_PARAMS",
    "redact_exchange",
    "redact_headers",
    "redact_query",
    "redact_text",
    "redact_url",
]

#: What replaces a whole header or query value.
REDACTED = "<redacted>"
#: What replaces a secret value inside a text (URI-safe, so a link stays a link).
REDACTED_IN_TEXT = "REDACTED"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie",
     "x-admin-token", "x-webhook-secret"}
)
SECRET_PARAMS = frozenset(
    {"key", "api_key", "apikey", "token", "access_token", "sign", "signature", "sig",
     "x-amz-signature", "x-amz-credential", "x-amz-security-token", "nonce",
     "ossaccesskeyid"}  # Aliyun OSS signed links (yunyx): the key id, as X-Amz-Credential
)

# ``name=value`` with a secret name, wherever it stands: after ? or & in a URL, at the start of
# a form body, inside a JSON string. The value stops at &, #, quotes, white space, angle
# brackets or a backslash (yunyx escapes & as \u0026 in its JSON, so a name may follow "\u0026").
_SECRET_IN_TEXT = re.compile(
    r"(?i)(?:(?<!\w)|(?<=\\u0026))("
    + "|".join(re.escape(p) for p in sorted(SECRET_PARAMS, key=len, reverse=True))
    + r")=([^&#\s\"'\\<>]+)"
)


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header values that carry secrets keep only their scheme: ``Bearer <redacted>``."""
    # keys(): a mapping (dict, multidict); anything else is (name, value) pairs. Not an ABC
    # check: this runs twice per request.
    items = cast("Iterable[tuple[str, str]]", headers)
    if hasattr(headers, "keys"):
        items = cast("Mapping[str, str]", headers).items()
    out: dict[str, str] = {}
    known = _SECRET_NAME
    for name, value in items:
        secret = known.get(name)
        if secret is None:  # a spelling not seen yet (this runs twice per request)
            secret = name.lower() in SECRET_HEADERS
            if len(known) < 4096:
                known[name] = secret
        if secret:
            scheme, sep, _ = value.partition(" ")
            value = f"{scheme} {REDACTED}" if sep and scheme.isalpha() else REDACTED
        out[name] = value
    return out


#: Header name as spelt -> whether it carries a secret (a few dozen spellings in practice).
_SECRET_NAME: dict[str, bool] = {}


def redact_text(text: str | None) -> str | None:
    """``text`` with the value of every secret ``name=value`` in it replaced.

    >>> redact_text("token=SECRET&prompt=fox")
    'token=REDACTED&prompt=fox'
    """
    if not text or "=" not in text:
        return text
    return _SECRET_IN_TEXT.sub(lambda m: f"{m.group(1)}={REDACTED_IN_TEXT}", text)


def redact_query(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Query pairs with secret parameters replaced, and secrets inside other values (a webhook URL)."""
    return [(k, REDACTED if k.lower() in SECRET_PARAMS else redact_text(v) or v) for k, v in pairs]


def redact_url(url: str) -> str:
    """A URL with its signed or secret query parameters, and a password in it, replaced."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        # scheme://user:PASSWORD@host (a store URL such as redis://:secret@host:6379/0)
        userinfo, _, hostpart = rest.partition("@")
        user, colon, _ = userinfo.partition(":")
        url = f"{scheme}://{user}{':' + REDACTED if colon else ''}@{hostpart}"
    base, sep, query = url.partition("?")
    if not sep:
        return url
    return base + "?" + urlencode(redact_query(parse_qsl(query, keep_blank_values=True)), safe="<>:/")


def redact_exchange(exchange: Exchange) -> Exchange:
    """A copy whose bodies and stream events carry no secrets either (reports, recordings).

    The journal keeps the mock's own answers whole (the harness follows their links); what
    leaves the process goes through this.
    """
    return type(exchange)(**{
        **exchange.__dict__,
        "request_body": redact_text(exchange.request_body),
        "response_body": redact_text(exchange.response_body),
        "events": [redact_text(e) or "" for e in exchange.events],
    })
