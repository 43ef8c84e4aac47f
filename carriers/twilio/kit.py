"""Twilio's kit: the account from its settings, verifier, REST control, dialer and paths."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import httpx

from carriers.base import Carrier, Detection, Paths, PublicUrls
from carriers.settings import TwilioSettings, complete, secret
from carriers.twilio.control import TwilioAccount, TwilioControl
from carriers.twilio.signature import TwilioVerifier

PATHS = Paths(
    voice="/webhooks/twilio/voice", status="/webhooks/twilio/status", media="/media/twilio"
)
#: Where an answered outbound call asks for its TwiML (``?call_id=`` ours).
OUTBOUND_PATH = "/webhooks/twilio/outbound"
#: Where Twilio posts an outbound call's asynchronous answering-machine detection result.
AMD_PATH = "/webhooks/twilio/amd"


class TwilioKit:
    """One Twilio account's verifier and REST control."""

    carrier = Carrier.TWILIO
    warm_transfer = True
    paths = PATHS

    def __init__(self, account: TwilioAccount, transport: httpx.AsyncBaseTransport | None = None):
        """Act for ``account`` (``transport`` replaced in tests)."""
        self.account = account
        self.control = TwilioControl(account, transport)
        self.verifier = TwilioVerifier(account.auth_token)

    @classmethod
    def configured(cls, settings: TwilioSettings) -> TwilioKit | None:
        """The kit of the configured account; ``None`` without one, ``ValueError`` if partial."""
        sid, token = settings.account_sid, secret(settings.auth_token)
        if not complete("Twilio", {"twilio_account_sid": sid, "twilio_auth_token": token}):
            return None
        return cls(TwilioAccount(sid or "", token or "", settings.api_base))

    @staticmethod
    def dev_secrets() -> dict[str, str]:
        """Fresh secrets of a local development account."""
        return {"account_sid": "AC" + secrets.token_hex(16), "auth_token": secrets.token_hex(16)}

    @classmethod
    def development(cls, dev: Mapping[str, str], settings: TwilioSettings) -> TwilioKit:
        """The kit of the local development account ``dev``."""
        return cls(TwilioAccount(dev["account_sid"], dev["auth_token"], settings.api_base))

    async def dial(
        self,
        urls: PublicUrls,
        from_: str,
        to: str,
        call_id: str,
        time_limit_s: int,
        detection: Detection | None = None,
    ) -> str:
        """Twilio asks for the answered call's TwiML: our stream, for this call id.

        With ``detection`` Twilio's asynchronous AMD posts its result to :data:`AMD_PATH`.
        """
        answer = urls.public(f"{OUTBOUND_PATH}?call_id={call_id}")
        status = urls.public(PATHS.status)
        amd = urls.public(AMD_PATH) if detection is not None else None
        return await self.control.place_call(
            from_, to, answer, status, time_limit_s, detection=detection, amd_url=amd
        )
