"""X-Twilio-Signature: HMAC-SHA1 over the URL and sorted POST parameters, base64.

Follows twilio-python 9.x ``twilio/request_validator.py``: parameters sorted by name then value
with exact duplicates kept once; for JSON bodies the URL carries ``bodySHA256`` and only the
URL is signed; validators try the URL with and without its port. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from carriers.base import Verdict, WebhookRequest

SIGNATURE_HEADER = "x-twilio-signature"
_DEFAULT_PORTS = {"https": 443, "http": 80, "wss": 443, "ws": 80}


def signing_string(url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The exact string Twilio signs: URL, then name+value of each sorted unique parameter."""
    return url + "".join(name + value for name, value in sorted(set(params)))


def compute_signature(url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """Base64 HMAC-SHA1 of :func:`signing_string` with the account's auth token."""
    mac = hmac.new(auth_token.encode(), signing_string(url, params).encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def _with_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is not None or parts.scheme not in _DEFAULT_PORTS:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{_DEFAULT_PORTS[parts.scheme]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is None:
        return url
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, parts.query, parts.fragment))


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], *parts[2:]))


def _matches(url: str, params: list[tuple[str, str]], signature: str, token: str) -> bool:
    url = _without_credentials(url)
    candidates = {_with_port(url), _without_port(url)}
    return any(
        hmac.compare_digest(compute_signature(u, params, token).encode(), signature.encode())
        for u in candidates
    )


def verify_request(url: str, body: bytes, headers: Mapping[str, str], auth_token: str) -> Verdict:
    """Verdict on a Twilio webhook.

    ``url`` is the full public URL the carrier called (query string included), ``headers``
    have lower-case keys. Form bodies are signed parameter by parameter; a URL with
    ``bodySHA256`` is a JSON body whose hash must match too.
    """
    signature = headers.get(SIGNATURE_HEADER, "")
    if not signature:
        return Verdict(False, "missing X-Twilio-Signature")
    query = parse_qs(urlsplit(url).query)
    if "bodySHA256" in query:
        expected = query["bodySHA256"][0]
        actual = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(expected.encode(), actual.encode()):
            return Verdict(False, "body does not match bodySHA256")
        params: list[tuple[str, str]] = []
    else:
        content_type = headers.get("content-type", "")
        form = content_type.startswith("application/x-www-form-urlencoded")
        try:
            text = body.decode() if form else ""
        except UnicodeDecodeError:
            return Verdict(False, "form body is not UTF-8")
        params = parse_qsl(text, keep_blank_values=True)
    if _matches(url, params, signature, auth_token):
        return Verdict(True)
    return Verdict(False, "signature does not match")


def verify_websocket(url: str, headers: Mapping[str, str], auth_token: str) -> Verdict:
    """Verdict on a Media Streams WebSocket upgrade: only the URL is signed (with or without /)."""
    signature = headers.get(SIGNATURE_HEADER, "")
    if not signature:
        return Verdict(False, "missing X-Twilio-Signature")
    alternative = url[:-1] if url.endswith("/") else url + "/"
    if _matches(url, [], signature, auth_token) or _matches(alternative, [], signature, auth_token):
        return Verdict(True)
    return Verdict(False, "signature does not match")


class TwilioVerifier:
    """:class:`carriers.base.WebhookVerifier` for one Twilio account."""

    def __init__(self, auth_token: str) -> None:
        """Verify with the account's auth token."""
        self._token = auth_token

    def verify(self, request: WebhookRequest, now: float) -> Verdict:
        """See :func:`verify_request`; Twilio signs no time, so ``now`` plays no part."""
        return verify_request(request.url, request.body, request.headers, self._token)
