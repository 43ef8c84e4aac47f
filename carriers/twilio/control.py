"""Twilio call control and numbers over its REST API (2010-04-01), Basic auth with the SID."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

import httpx

from carriers.base import AvailableNumber, RentedNumber
from carriers.rest import RestClient

API_BASE = "https://api.twilio.com"
#: Twilio's default and longest ``TimeLimit`` of a call (4 hours).
MAX_TIME_LIMIT_S = 14400


@dataclass(frozen=True)
class TwilioAccount:
    """Credentials of one Twilio account (or region: each has its own auth token)."""

    account_sid: str
    auth_token: str
    api_base: str = API_BASE


class TwilioControl:
    """Hang up, transfer, place calls; search, rent and release numbers."""

    def __init__(self, account: TwilioAccount, transport: httpx.AsyncBaseTransport | None = None):
        """Use ``account``'s credentials."""
        self.account = account
        self.rest = RestClient(
            "twilio",
            account.api_base,
            auth=(account.account_sid, account.auth_token),
            transport=transport,
        )
        self._root = f"/2010-04-01/Accounts/{account.account_sid}"

    async def hang_up(self, call_id: str) -> None:
        """End the call (``Status=completed``)."""
        await self.rest.request(
            "POST", f"{self._root}/Calls/{call_id}.json", data={"Status": "completed"}
        )

    async def transfer(self, call_id: str, number: str) -> None:
        """Replace the call's TwiML with a ``<Dial>`` to ``number``."""
        twiml = f"<Response><Dial>{escape(number)}</Dial></Response>"
        await self.rest.request("POST", f"{self._root}/Calls/{call_id}.json", data={"Twiml": twiml})

    async def place_call(
        self, from_: str, to: str, answer_url: str, status_url: str, time_limit_s: int | None = None
    ) -> str:
        """Start an outbound call whose answer is fetched from ``answer_url``; its CallSid.

        ``time_limit_s`` is Twilio's ``TimeLimit`` (Call resource, create): Twilio ends the call
        that many seconds after it started, whatever the platform does.
        """
        data = {
            "From": from_,
            "To": to,
            "Url": answer_url,
            "StatusCallback": status_url,
            "StatusCallbackEvent": "initiated ringing answered completed",
        }
        if time_limit_s is not None:
            data["TimeLimit"] = str(min(time_limit_s, MAX_TIME_LIMIT_S))
        body = await self.rest.request("POST", f"{self._root}/Calls.json", data=data)
        return str(body["sid"])

    async def search(
        self, country: str, area_code: str | None = None, contains: str | None = None
    ) -> list[AvailableNumber]:
        """Local voice numbers of ``country`` for rent."""
        params = {"VoiceEnabled": "true"}
        if area_code:
            params["AreaCode"] = area_code
        if contains:
            params["Contains"] = contains
        body = await self.rest.request(
            "GET", f"{self._root}/AvailablePhoneNumbers/{country.upper()}/Local.json", params=params
        )
        return [
            AvailableNumber("twilio", n["phone_number"], country.upper(), n.get("locality") or "")
            for n in body.get("available_phone_numbers", [])
        ]

    async def rent(self, number: str, voice_url: str, status_url: str) -> RentedNumber:
        """Buy ``number`` with its voice webhook pointing at the platform."""
        data = {
            "PhoneNumber": number,
            "VoiceUrl": voice_url,
            "VoiceMethod": "POST",
            "StatusCallback": status_url,
            "StatusCallbackMethod": "POST",
        }
        body = await self.rest.request("POST", f"{self._root}/IncomingPhoneNumbers.json", data=data)
        return RentedNumber("twilio", body["phone_number"], body["sid"])

    async def release(self, rented: RentedNumber) -> None:
        """Give the number back."""
        await self.rest.request(
            "DELETE", f"{self._root}/IncomingPhoneNumbers/{rented.carrier_id}.json"
        )
