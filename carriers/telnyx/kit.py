"""Telnyx's kit: the account from its settings, verifier, REST control, dialer and paths."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from carriers.base import Carrier, Detection, Paths, PublicUrls
from carriers.settings import TelnyxSettings, complete, secret
from carriers.telnyx.control import TelnyxAccount, TelnyxControl
from carriers.telnyx.signature import TelnyxVerifier

#: Call Control sends every event of a call to one webhook.
PATHS = Paths(voice="/webhooks/telnyx", status="/webhooks/telnyx", media="/media/telnyx")
#: Loopback port where `bonmoniq call --carrier telnyx` serves Telnyx's REST API in local
#: development.
DEV_API_PORT = 8088


class TelnyxKit:
    """One Telnyx account's verifier and REST control (Call Control)."""

    carrier = Carrier.TELNYX
    warm_transfer = True
    paths = PATHS

    def __init__(self, account: TelnyxAccount, transport: httpx.AsyncBaseTransport | None = None):
        """Act for ``account`` (``transport`` replaced in tests)."""
        self.account = account
        self.control = TelnyxControl(account, transport)
        self.verifier = TelnyxVerifier(account.public_key)

    @classmethod
    def configured(cls, settings: TelnyxSettings) -> TelnyxKit | None:
        """The kit of the configured account; ``None`` without one, ``ValueError`` if partial."""
        key, public, connection = (
            secret(settings.api_key),
            settings.public_key,
            settings.connection_id,
        )
        fields = {
            "telnyx_api_key": key,
            "telnyx_public_key": public,
            "telnyx_connection_id": connection,
        }
        if not complete("Telnyx", fields):
            return None
        return cls(TelnyxAccount(key or "", public or "", connection or "", settings.api_base))

    @staticmethod
    def dev_secrets() -> dict[str, str]:
        """Fresh secrets of a local development account (the signing key pair included)."""
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {
            "api_key": "KEY" + secrets.token_hex(16),
            "public_key": base64.b64encode(public).decode(),
            "private_key": base64.b64encode(key.private_bytes_raw()).decode(),
            "connection_id": secrets.token_hex(8),
        }

    @classmethod
    def development(cls, dev: Mapping[str, str], settings: TelnyxSettings) -> TelnyxKit:
        """The kit of the local development account ``dev`` (its API on loopback)."""
        api = f"http://127.0.0.1:{DEV_API_PORT}/v2"
        return cls(TelnyxAccount(dev["api_key"], dev["public_key"], dev["connection_id"], api))

    async def dial(
        self,
        urls: PublicUrls,
        from_: str,
        to: str,
        call_id: str,
        time_limit_s: int,
        detection: Detection | None = None,
    ) -> str:
        """Telnyx streams the answered call to our media socket, the call id in its state.

        With ``detection`` its AMD results come to the call's webhook like its other events.
        """
        media = urls.public_ws(PATHS.media)
        return await self.control.place_call(
            from_, to, media, {"call_id": call_id}, time_limit_s, detection=detection
        )
