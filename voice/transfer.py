"""Handing a caller to a person: the desk that checks and asks the carrier, the summary.

The desk is ``telephony.transfer.Transfers``, injected; the warm transfer's one-sentence
summary is asked of the call's model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from calls.records import CallRecord
from llm.endpoint import LLMEndpoint
from routing.directory import Agent

log = logging.getLogger(__name__)

#: How long the summary may take the model: the caller is on hold meanwhile.
SUMMARY_TIMEOUT_S = 4.0
#: The summary when the model cannot write one: it says nothing the caller said.
FALLBACK_SUMMARY = "You have a caller on the line, transferred by the phone agent."
_SUMMARY_PROMPT = (
    "Summarize this phone call for the person who is about to take it over, in one short "
    "sentence spoken to them (start with 'The caller'). No names of the agent, no lists."
)


@dataclass(frozen=True)
class TransferPlan:
    """An admitted transfer: where to, and whether the person hears a summary first."""

    number: str
    mode: str  # "cold" | "warm"

    def __post_init__(self) -> None:
        if self.mode not in ("cold", "warm"):
            raise ValueError("a transfer is cold or warm")


class TransferDesk(Protocol):
    """Checks a transfer and asks the carrier for it (``telephony.transfer.Transfers``)."""

    async def admit(self, call: CallRecord, agent: Agent) -> TransferPlan:
        """The plan, or ``TransferRefused``/``TransferUnavailable`` (voice.errors)."""

    async def hand_over(self, call: CallRecord, plan: TransferPlan, summary: bytes | None) -> None:
        """Ask the carrier; ``TransferRefused`` (``carrier_failed``) when it does not take it."""

    async def cancel(self, call: CallRecord) -> None:
        """Give back what an admitted transfer that is not made reserved."""


class Outbox(Protocol):
    """Where a call's events for the tenant's webhooks go (``integrations.outbox``)."""

    async def emit(self, tenant: str, event: str, call_id: str, data: Mapping[str, Any]) -> None:
        """Queue ``event`` of ``call_id`` for delivery; never raises."""


async def summarize(endpoint: LLMEndpoint, said: Sequence[tuple[str, str]]) -> str:
    """One sentence about the call from the model (not streamed, bounded in time).

    ``said`` is the conversation as (role, text). Any failure gives :data:`FALLBACK_SUMMARY`.
    """
    if not said:
        return FALLBACK_SUMMARY
    lines = "\n".join(f"{'Caller' if r == 'caller' else 'Agent'}: {t}" for r, t in said[-12:])
    body = {
        "model": endpoint.model,
        "messages": [
            {"role": "system", "content": _SUMMARY_PROMPT},
            {"role": "user", "content": lines},
        ],
        "max_tokens": 60,
        "temperature": 0.2,
        "stream": False,
    }
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        async with asyncio.timeout(SUMMARY_TIMEOUT_S):
            async with httpx.AsyncClient(timeout=SUMMARY_TIMEOUT_S) as client:
                r = await client.post(f"{endpoint.v1}/chat/completions", json=body, headers=headers)
                r.raise_for_status()
                text = str(r.json()["choices"][0]["message"]["content"] or "")
    except Exception as e:
        log.warning("transfer summary unavailable", extra={"error": type(e).__name__})
        return FALLBACK_SUMMARY
    sentence = " ".join(text.split())[:300]
    return sentence or FALLBACK_SUMMARY
