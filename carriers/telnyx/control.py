"""Telnyx Call Control and numbers over its v2 REST API (Bearer API key).

Commands carry a ``command_id``: Telnyx ignores a repeat within 60 s, so a retried answer or
hang-up has one effect.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from carriers.base import AvailableNumber, Detection, RentedNumber
from carriers.rest import RestClient
from carriers.telnyx.webhook import (
    REJECT_BUSY,
    amd_setting,
    encode_client_state,
    reject_command,
)

API_BASE = "https://api.telnyx.com/v2"
#: The longest ``time_limit_secs`` Telnyx allows (also its default: 4 hours).
MAX_TIME_LIMIT_S = 14400
#: How long the transfer's destination rings before Telnyx gives up (its default is 30 s).
TRANSFER_TIMEOUT_S = 30


@dataclass(frozen=True)
class TelnyxAccount:
    """Credentials of one Telnyx account and the Call Control application (connection)."""

    api_key: str
    public_key: str  # base64 Ed25519 key that signs webhooks
    connection_id: str
    api_base: str = API_BASE


def answer_command(stream_url: str, state: Mapping[str, str], command_id: str) -> dict[str, Any]:
    """The body of ``actions/answer``: stream both ways over RTP in PCMU to our socket."""
    return {
        "client_state": encode_client_state(state),
        "command_id": command_id,
        "stream_url": stream_url,
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
    }


class TelnyxControl:
    """Answer (with streaming), hang up, transfer, place calls; search, rent, release numbers."""

    def __init__(self, account: TelnyxAccount, transport: httpx.AsyncBaseTransport | None = None):
        """Use ``account``'s API key."""
        self.account = account
        self.rest = RestClient(
            "telnyx",
            account.api_base,
            headers={"Authorization": f"Bearer {account.api_key}"},
            transport=transport,
        )

    async def _action(self, call_id: str, action: str, body: dict[str, Any]) -> None:
        body.setdefault("command_id", str(uuid.uuid4()))
        await self.rest.request("POST", f"/calls/{call_id}/actions/{action}", json=body)

    async def answer(self, call_id: str, stream_url: str, state: Mapping[str, str]) -> None:
        """Answer a parked call, streaming its audio to ``stream_url`` both ways."""
        # One command id per call: a retried answer is ignored by Telnyx.
        command_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"answer:{call_id}"))
        await self._action(call_id, "answer", answer_command(stream_url, state, command_id))

    async def hang_up(self, call_id: str) -> None:
        """End the call."""
        await self._action(call_id, "hangup", {})

    async def reject(self, call_id: str, cause: str = REJECT_BUSY) -> None:
        """Refuse a parked incoming call unanswered (busy by default)."""
        await self._action(call_id, "reject", reject_command(cause))

    async def transfer(
        self, call_id: str, number: str, summary_url: str | None = None, *, call_ref: str = ""
    ) -> None:
        """Send the call on to ``number`` (``actions/transfer``).

        With ``summary_url`` (warm) the person hears ``{summary_url}.wav`` (``audio_url``) when
        they answer, before the caller is bridged. ``client_state`` names our call and this
        call (``call_ref``, ``transfer_of``): when the transfer leg fails Telnyx sends only
        its ``call.hangup`` (with that state) and the original call stays up, which the
        platform then hangs up (api/routes_telnyx.py). ``time_limit_secs`` is the longest.
        """
        state = {"call_id": call_ref, "transfer_of": call_id}
        body: dict[str, Any] = {
            "to": number,
            "timeout_secs": TRANSFER_TIMEOUT_S,
            "time_limit_secs": MAX_TIME_LIMIT_S,
            "client_state": encode_client_state(state),
        }
        if summary_url:
            body["audio_url"] = f"{summary_url}.wav"
        await self._action(call_id, "transfer", body)

    async def place_call(
        self,
        from_: str,
        to: str,
        stream_url: str,
        state: Mapping[str, str],
        time_limit_s: int | None = None,
        *,
        detection: Detection | None = None,
    ) -> str:
        """Dial ``to`` from ``from_`` and stream the answered call to us; its call_control_id.

        ``time_limit_s`` is the Dial command's ``time_limit_secs``: Telnyx hangs up that long
        after the answer (``hangup_cause`` ``time_limit``), whatever the platform does.
        ``detection`` sets ``answering_machine_detection`` (:func:`amd_setting`).
        """
        body: dict[str, Any] = {
            "connection_id": self.account.connection_id,
            "to": to,
            "from": from_,
            "client_state": encode_client_state(state),
            "stream_url": stream_url,
            "stream_track": "inbound_track",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
        }
        if time_limit_s is not None:
            body["time_limit_secs"] = min(time_limit_s, MAX_TIME_LIMIT_S)
        if detection is not None:
            body["answering_machine_detection"] = amd_setting(detection)
        data = await self.rest.request("POST", "/calls", json=body)
        return str(data["data"]["call_control_id"])

    async def search(
        self, country: str, area_code: str | None = None, contains: str | None = None
    ) -> list[AvailableNumber]:
        """Voice numbers of ``country`` for rent."""
        params = {"filter[country_code]": country.upper(), "filter[features]": "voice"}
        if area_code:
            params["filter[national_destination_code]"] = area_code
        if contains:
            params["filter[phone_number][contains]"] = contains
        data = await self.rest.request("GET", "/available_phone_numbers", params=params)
        return [
            AvailableNumber(
                "telnyx",
                n["phone_number"],
                country.upper(),
                (n.get("region_information") or [{}])[0].get("region_name", ""),
            )
            for n in data.get("data", [])
        ]

    async def rent(self, number: str, voice_url: str, status_url: str) -> RentedNumber:
        """Order ``number`` on our Call Control connection (whose webhook is ``voice_url``)."""
        body = {
            "phone_numbers": [{"phone_number": number}],
            "connection_id": self.account.connection_id,
        }
        data = await self.rest.request("POST", "/number_orders", json=body)
        return RentedNumber("telnyx", number, str(data["data"]["id"]))

    async def release(self, rented: RentedNumber) -> None:
        """Give the number back."""
        await self.rest.request("DELETE", f"/phone_numbers/{rented.number}")
