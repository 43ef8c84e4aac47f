"""Sinch Voice API v1 callback signatures: ``Authorization: application {key}:{signature}``.

``signature = base64(HMAC-SHA256(base64decode(secret), StringToSign))`` with
``StringToSign`` = the lines ``VERB``, ``base64(MD5(body))``, ``content-type``,
``x-timestamp:{value}`` and ``path`` joined by newlines
(developers.sinch.com, "Callback request signing"). Sinch signs no nonce, so freshness is ours:
``x-timestamp`` must lie within ``window_s`` of ``now``. Pure: no I/O, no clock. v2 (CloudEvents,
``service {id}:{sig}``) would sit beside this function.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from carriers.base import Verdict, WebhookRequest

DEFAULT_WINDOW_S = 300.0


def content_md5(body: bytes) -> str:
    """Base64 MD5 of the body, as in the string to sign."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def string_to_sign(method: str, path: str, body: bytes, content_type: str, timestamp: str) -> str:
    """The exact string Sinch signs."""
    return "\n".join(
        [method.upper(), content_md5(body), content_type, f"x-timestamp:{timestamp}", path]
    )


def sign(
    secret_b64: str, method: str, path: str, body: bytes, content_type: str, timestamp: str
) -> str:
    """Base64 HMAC-SHA256 of :func:`string_to_sign` with the decoded application secret."""
    key = base64.b64decode(secret_b64)
    message = string_to_sign(method, path, body, content_type, timestamp).encode()
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def _parse_time(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def verify(
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    app_key: str,
    app_secret_b64: str,
    now: dt.datetime,
    window_s: float = DEFAULT_WINDOW_S,
) -> Verdict:
    """Verdict on one callback (``headers`` with lower-case keys)."""
    auth = headers.get("authorization", "")
    scheme, _, credentials = auth.partition(" ")
    key, _, signature = credentials.partition(":")
    if scheme.lower() != "application" or not key or not signature:
        return Verdict(False, "missing or malformed Authorization: application key:signature")
    if not hmac.compare_digest(key.encode(), app_key.encode()):
        return Verdict(False, "signed for another application key")
    timestamp = headers.get("x-timestamp", "")
    at = _parse_time(timestamp)
    if at is None:
        return Verdict(False, "missing or invalid x-timestamp")
    if abs((now - at).total_seconds()) > window_s:
        return Verdict(False, "x-timestamp outside the freshness window (stale or replayed)")
    try:
        expected = sign(
            app_secret_b64, method, path, body, headers.get("content-type", ""), timestamp
        )
    except (binascii.Error, ValueError):
        return Verdict(False, "application secret is not base64")
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return Verdict(False, "signature does not match")
    return Verdict(True)


class SinchVerifier:
    """:class:`carriers.base.WebhookVerifier` for one Sinch voice application."""

    def __init__(self, app_key: str, app_secret_b64: str, window_s: float = DEFAULT_WINDOW_S):
        """Verify with the application's key and (base64) secret."""
        self._key = app_key
        self._secret = app_secret_b64
        self._window = window_s

    def verify(self, request: WebhookRequest, now: float) -> Verdict:
        """See :func:`verify`: Sinch signs the path of the URL it called."""
        return verify(
            request.method,
            urlsplit(request.url).path,
            request.body,
            request.headers,
            self._key,
            self._secret,
            dt.datetime.fromtimestamp(now, dt.UTC),
            self._window,
        )
