"""Sinch's kit: the account from its settings, verifier, REST control, dialer and paths."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping

import httpx

from carriers.base import Carrier, Detection, Paths, PublicUrls
from carriers.settings import SinchSettings, complete, secret
from carriers.sinch.control import SinchAccount, SinchControl
from carriers.sinch.signature import SinchVerifier

#: Sinch sends every callback of an application to one URL.
PATHS = Paths(voice="/webhooks/sinch", status="/webhooks/sinch", media="/media/sinch")
#: Loopback port where `bonmoniq call --carrier sinch` serves Sinch's REST APIs in local
#: development.
DEV_API_PORT = 8089


class SinchKit:
    """One Sinch voice application's verifier and REST control (calling and numbers)."""

    carrier = Carrier.SINCH
    warm_transfer = False
    paths = PATHS

    def __init__(self, account: SinchAccount, transport: httpx.AsyncBaseTransport | None = None):
        """Act for ``account`` (``transport`` replaced in tests)."""
        self.account = account
        self.control = SinchControl(account, transport)
        self.verifier = SinchVerifier(account.app_key, account.app_secret)

    @classmethod
    def configured(cls, settings: SinchSettings) -> SinchKit | None:
        """The kit of the configured account; ``None`` without one, ``ValueError`` if partial."""
        fields = {
            "sinch_app_key": settings.app_key,
            "sinch_app_secret": secret(settings.app_secret),
            "sinch_project_id": settings.project_id,
            "sinch_key_id": settings.key_id,
            "sinch_key_secret": secret(settings.key_secret),
        }
        if not complete("Sinch", fields):
            return None
        app_key, app_secret, project, key_id, key_secret = (v or "" for v in fields.values())
        return cls(
            SinchAccount(
                app_key,
                app_secret,
                project,
                key_id,
                key_secret,
                settings.voice_base,
                settings.numbers_base,
            )
        )

    @staticmethod
    def dev_secrets() -> dict[str, str]:
        """Fresh secrets of a local development account."""
        return {
            "app_key": secrets.token_hex(16),
            "app_secret": base64.b64encode(secrets.token_bytes(16)).decode(),
            "project_id": secrets.token_hex(8),
            "key_id": secrets.token_hex(8),
            "key_secret": secrets.token_hex(16),
        }

    @classmethod
    def development(cls, dev: Mapping[str, str], settings: SinchSettings) -> SinchKit:
        """The kit of the local development account ``dev`` (its APIs on loopback)."""
        api = f"http://127.0.0.1:{DEV_API_PORT}"
        return cls(
            SinchAccount(
                dev["app_key"],
                dev["app_secret"],
                dev["project_id"],
                dev["key_id"],
                dev["key_secret"],
                api,
                api,
            )
        )

    async def dial(
        self,
        urls: PublicUrls,
        from_: str,
        to: str,
        call_id: str,
        time_limit_s: int,
        detection: Detection | None = None,
    ) -> str:
        """Sinch's callout streams the answered call to our media socket, the call id a header.

        With ``detection`` Sinch's AMD result comes in the call's ACE.
        """
        media = urls.public_ws(PATHS.media)
        return await self.control.place_call(
            from_, to, media, {"call_id": call_id}, time_limit_s, amd=detection is not None
        )
