"""Sinch Voice (calling v1) call control and Numbers API, Basic auth.

Calls: ``PATCH /calling/v1/calls/id/{callId}`` with SVAML (application key and secret).
Numbers: ``https://numbers.api.sinch.com/v1/projects/{projectId}`` (project access key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from carriers.base import AvailableNumber, RentedNumber
from carriers.rest import RestClient
from carriers.sinch.webhook import svaml_connect_stream

VOICE_BASE = "https://calling-euc1.api.sinch.com"
NUMBERS_BASE = "https://numbers.api.sinch.com"


@dataclass(frozen=True)
class SinchAccount:
    """A Sinch voice application and the project that owns its numbers."""

    app_key: str
    app_secret: str  # base64, as Sinch shows it; signs callbacks
    project_id: str
    key_id: str
    key_secret: str
    voice_base: str = VOICE_BASE
    numbers_base: str = NUMBERS_BASE


def svaml_transfer(number: str) -> dict[str, Any]:
    """The SVAML that connects a live call to ``number`` (no ``cli``: the caller's shown)."""
    return {"instructions": [], "action": {"name": "connectPstn", "number": number}}


class SinchControl:
    """Hang up, transfer, place calls; search, rent and release numbers."""

    def __init__(self, account: SinchAccount, transport: httpx.AsyncBaseTransport | None = None):
        """Use ``account``'s keys."""
        self.account = account
        self.voice = RestClient(
            "sinch",
            account.voice_base,
            auth=(account.app_key, account.app_secret),
            transport=transport,
        )
        self.numbers = RestClient(
            "sinch",
            f"{account.numbers_base}/v1/projects/{account.project_id}",
            auth=(account.key_id, account.key_secret),
            transport=transport,
        )

    async def hang_up(self, call_id: str) -> None:
        """End the call (SVAML ``hangup``)."""
        svaml = {"instructions": [], "action": {"name": "hangup"}}
        await self.voice.request("PATCH", f"/calling/v1/calls/id/{call_id}", json=svaml)

    async def transfer(
        self, call_id: str, number: str, summary_url: str | None = None, *, call_ref: str = ""
    ) -> None:
        """Connect the call on to ``number`` (SVAML ``connectPstn``; cold only).

        Sinch has no whisper to the person, so ``summary_url`` is not used. Its "Update a call
        in progress" page lists no actions, and its SDKs type a live call's update as hangup,
        continue or park only: ``connectPstn`` here follows the SVAML action reference
        (``number``) and is this one function to change if Sinch refuses it.
        """
        svaml = svaml_transfer(number)
        await self.voice.request("PATCH", f"/calling/v1/calls/id/{call_id}", json=svaml)

    async def place_call(
        self,
        from_: str,
        to: str,
        stream_url: str,
        headers: Mapping[str, str],
        time_limit_s: int | None = None,
        *,
        amd: bool = False,
    ) -> str:
        """A custom callout whose ICE answer streams the call to us; its call id.

        ``time_limit_s`` becomes the ``connectStream`` action's ``maxDuration``: Sinch
        disconnects the call after it, whatever the platform does. ``amd`` turns on Sinch's
        answering-machine detection (its result arrives in the ACE).
        """
        ice = (
            svaml_connect_stream(stream_url, headers, amd=amd)
            if time_limit_s is None
            else svaml_connect_stream(stream_url, headers, max_seconds=time_limit_s, amd=amd)
        )
        body = {
            "method": "customCallout",
            "customCallout": {
                "cli": from_,
                "destination": {"type": "number", "endpoint": to},
                "ice": json.dumps(ice),
            },
        }
        data = await self.voice.request("POST", "/calling/v1/callouts", json=body)
        return str(data["callId"])

    async def search(
        self, country: str, area_code: str | None = None, contains: str | None = None
    ) -> list[AvailableNumber]:
        """Local voice numbers of ``country`` for rent."""
        params = {"regionCode": country.upper(), "type": "LOCAL", "capabilities": "VOICE"}
        if contains or area_code:
            params["numberPattern.pattern"] = contains or area_code or ""
            params["numberPattern.searchPattern"] = "CONTAINS"
        data = await self.numbers.request("GET", "/availableNumbers", params=params)
        return [
            AvailableNumber("sinch", n["phoneNumber"], n.get("regionCode", country.upper()))
            for n in data.get("availableNumbers", [])
        ]

    async def rent(self, number: str, voice_url: str, status_url: str) -> RentedNumber:
        """Rent ``number`` for our voice application (its callback URL is set on the app)."""
        body = {"voiceConfiguration": {"type": "RTC", "appId": self.account.app_key}}
        data = await self.numbers.request("POST", f"/availableNumbers/{number}:rent", json=body)
        return RentedNumber(
            "sinch", data.get("phoneNumber", number), data.get("phoneNumber", number)
        )

    async def release(self, rented: RentedNumber) -> None:
        """Give the number back."""
        await self.numbers.request("POST", f"/activeNumbers/{rented.number}:release")
