"""``/webhooks/transfer/{token}``: a warm transfer's summary, fetched by the carrier.

Twilio POSTs the ``<Number url>`` when the person answers and plays the TwiML it gets back;
Telnyx fetches the ``audio_url`` (``.wav``). The token is unguessable and short-lived; the
audio is kept sealed with the tenant's key (``telephony.transfer``).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from fastapi import APIRouter, Response

from api.problems import ApiProblem
from carriers.base import PublicUrls
from telephony.transfer import SUMMARY_PATH, Transfers


def router(transfers: Transfers, urls: PublicUrls) -> APIRouter:
    """The summary of each warm transfer under way, as audio and as TwiML that plays it."""
    r = APIRouter(tags=["carrier webhooks"], include_in_schema=False)

    async def audio(token: str) -> bytes:
        summary = await transfers.summary(token)
        if summary is None:
            raise ApiProblem(404, "transfer_summary_not_found", "no such transfer summary")
        return summary.wav

    @r.get("/webhooks/transfer/{token}.wav")
    async def wav(token: str) -> Response:
        """The summary's audio (WAV, 8 kHz mono)."""
        return Response(await audio(token), media_type="audio/wav")

    @r.post("/webhooks/transfer/{token}")
    async def whisper(token: str) -> Response:
        """TwiML that plays the summary to the person before Twilio bridges the caller."""
        await audio(token)  # 404 for an unknown or expired token
        url = urls.public(SUMMARY_PATH.format(token=token)) + ".wav"
        twiml = f"<Response><Play>{escape(url)}</Play></Response>"
        return Response(twiml, media_type="application/xml")

    return r
