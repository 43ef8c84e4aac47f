"""Telnyx webhook signatures: Ed25519 over ``"{telnyx-timestamp}|{raw body}"``.

Headers ``telnyx-signature-ed25519`` (base64 signature) and ``telnyx-timestamp`` (unix seconds),
verified with the account's base64 public key (developers.telnyx.com, "Webhook signing";
telnyx-python 4.x tolerates 300 s of skew). Pure: ``now`` is passed in.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from carriers.base import Verdict, WebhookRequest

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
DEFAULT_WINDOW_S = 300.0


def load_public_key(public_key_b64: str) -> Ed25519PublicKey:
    """The account's public key from its base64 form (32 raw bytes)."""
    raw = base64.b64decode(public_key_b64, validate=True)
    if len(raw) != 32:
        raise ValueError("a Telnyx public key is 32 bytes, base64-encoded")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(
    body: bytes,
    headers: Mapping[str, str],
    public_key: Ed25519PublicKey,
    now: float,
    window_s: float = DEFAULT_WINDOW_S,
) -> Verdict:
    """Verdict on one webhook (``headers`` with lower-case keys, ``now`` in unix seconds)."""
    signature_b64 = headers.get(SIGNATURE_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not signature_b64 or not timestamp:
        return Verdict(False, "missing telnyx-signature-ed25519 or telnyx-timestamp")
    try:
        at = int(timestamp)
    except ValueError:
        return Verdict(False, "telnyx-timestamp is not unix seconds")
    if abs(now - at) > window_s:
        return Verdict(False, "telnyx-timestamp outside the replay window (stale or replayed)")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return Verdict(False, "signature is not base64")
    try:
        public_key.verify(signature, timestamp.encode() + b"|" + body)
    except InvalidSignature:
        return Verdict(False, "signature does not match")
    return Verdict(True)


class TelnyxVerifier:
    """:class:`carriers.base.WebhookVerifier` for one Telnyx account."""

    def __init__(self, public_key_b64: str, window_s: float = DEFAULT_WINDOW_S) -> None:
        """Verify with the account's base64 Ed25519 public key."""
        self._key = load_public_key(public_key_b64)
        self._window = window_s

    def verify(self, request: WebhookRequest, now: float) -> Verdict:
        """See :func:`verify`."""
        return verify(request.body, request.headers, self._key, now, self._window)
