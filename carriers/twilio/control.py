"""Twilio call control and numbers over its REST API (2010-04-01), Basic auth with the SID."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import httpx

from carriers.base import AvailableNumber, Detection, RentedNumber
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


def transfer_twiml(number: str, summary_url: str | None = None) -> str:
    """``<Dial><Number>`` to ``number``; ``url`` (the whisper to the person) when warm."""
    url = f" url={quoteattr(summary_url)}" if summary_url else ""
    return f"<Response><Dial><Number{url}>{escape(number)}</Number></Dial></Response>"


def amd_params(detection: Detection, callback_url: str) -> dict[str, str]:
    """The Call resource's answering-machine detection parameters, asynchronous.

    twilio.com/docs/voice/answering-machine-detection: ``MachineDetection`` ``Enable`` answers
    as soon as the callee is identified (to hang up on a machine); ``DetectMessageEnd`` waits
    for the end of a machine's greeting (to leave a message). With ``AsyncAmd`` the call is
    connected at once and ``AnsweredBy`` is posted to ``AsyncAmdStatusCallback``.
    """
    mode = "DetectMessageEnd" if detection is Detection.MESSAGE_END else "Enable"
    return {
        "MachineDetection": mode,
        "AsyncAmd": "true",
        "AsyncAmdStatusCallback": callback_url,
        "AsyncAmdStatusCallbackMethod": "POST",
    }


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

    async def transfer(
        self, call_id: str, number: str, summary_url: str | None = None, *, call_ref: str = ""
    ) -> None:
        """Replace the call's TwiML with a ``<Dial>`` to ``number`` (Modify a call in progress).

        With ``summary_url`` (a warm transfer) the ``<Number url>`` whisper: Twilio POSTs there
        when the person answers and plays the TwiML it returns to them before bridging.
        ``TimeLimit`` is raised to Twilio's longest: the caller's talk with the person is not
        cut at the limit the agent's call was placed with.
        """
        await self.rest.request(
            "POST",
            f"{self._root}/Calls/{call_id}.json",
            data={
                "Twiml": transfer_twiml(number, summary_url),
                "TimeLimit": str(MAX_TIME_LIMIT_S),
            },
        )

    async def place_call(
        self,
        from_: str,
        to: str,
        answer_url: str,
        status_url: str,
        time_limit_s: int | None = None,
        *,
        detection: Detection | None = None,
        amd_url: str | None = None,
    ) -> str:
        """Start an outbound call whose answer is fetched from ``answer_url``; its CallSid.

        ``time_limit_s`` is Twilio's ``TimeLimit`` (Call resource, create): Twilio ends the call
        that many seconds after it started, whatever the platform does. ``detection`` asks for
        answering-machine detection, its result posted to ``amd_url`` (:func:`amd_params`).
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
        if detection is not None:
            if not amd_url:
                raise ValueError("answering-machine detection needs its callback URL")
            data |= amd_params(detection, amd_url)
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
