"""Transfers of live calls to a person: the destination checked first, then the carrier asked.

A transfer dials a number at the tenant's expense, so it is treated as an outbound call: the
destination's class (premium, satellite... refused unless allowed), the residency rule with the
call's own carrier as the only possible one (an EU number only through Sinch) and the tenant's
outbound limits (a reservation settled when the call ends: ``calls.store.settle_transfer``).
A warm transfer's summary audio is sealed with the tenant's key and kept briefly under an
unguessable token, where the carrier fetches it (``api/routes_transfer.py``).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import secrets
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from calls.records import CallRecord, Reservation
from calls.store import CallStore, transfer_member
from carriers.base import CallControl, Carrier, PublicUrls
from carriers.registry import Carriers
from recordings.crypto import Identity
from recordings.keyring import KeyRing, WrappedKey
from routing.destinations import check as check_destination
from routing.destinations import class_price
from routing.directory import Agent
from routing.errors import RoutingError
from routing.policy import Health, Policy, Purpose, route
from store import keys
from tenancy.limits import Limits, OutboundLimiter, day
from tenancy.tenants import TenantStore
from voice.errors import TransferRefused, TransferUnavailable
from voice.transfer import TransferPlan

log = logging.getLogger(__name__)

#: Where a warm transfer's summary is served (``{token}``; ``.wav`` for the audio).
SUMMARY_PATH = "/webhooks/transfer/{token}"
#: How long a summary can be fetched: the person answers within the carrier's ring time.
SUMMARY_TTL_S = 300
#: The audio's rate (what phones carry).
SUMMARY_RATE = 8000
_KIND = "transfer-summary"


@dataclass(frozen=True)
class Summary:
    """A warm transfer's summary as the carrier fetches it: WAV audio."""

    wav: bytes


def wav_of(pcm: bytes, rate: int = SUMMARY_RATE) -> bytes:
    """16-bit mono ``pcm`` at ``rate`` as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


class Transfers:
    """Checks and makes transfers (``voice.transfer.TransferDesk`` for the call sessions)."""

    def __init__(
        self,
        *,
        calls: CallStore,
        tenants: TenantStore,
        policy: Policy,
        carriers: Carriers,
        health: Callable[[float], Health],
        limiter: OutboundLimiter,
        default_limits: Limits,
        keyring: KeyRing,
        urls: PublicUrls,
    ) -> None:
        """Transfer through ``carriers`` within the tenants' limits.

        ``default_limits`` apply to a tenant without its own; summaries are sealed with
        ``keyring`` and served at ``urls``.
        """
        self.calls = calls
        self.tenants = tenants
        self.policy = policy
        self.carriers = carriers
        self.health = health
        self.limiter = limiter
        self.default_limits = default_limits
        self.keyring = keyring
        self.urls = urls
        #: The call control of channels that are not a carrier (``sip``), by channel name:
        #: their transfers are made in the call's own signalling, at no cost to the platform.
        self.channels: dict[str, CallControl] = {}

    async def admit(self, call: CallRecord, agent: Agent) -> TransferPlan:
        """Check the transfer of ``call`` to ``agent``'s number and reserve what it may cost.

        Raises:
            TransferUnavailable: the agent has no transfer number.
            TransferRefused: routing (``route_refused``, ``destination_refused``,
                ``invalid_number``) or the tenant's limits (``limit_exceeded``) refuse it;
                ``transfer_failed`` when the check itself failed (the state store).
        """
        try:
            return await self._admit(call, agent)
        except (TransferUnavailable, TransferRefused):
            raise
        except Exception as e:
            log.exception("transfer admission failed")
            raise TransferRefused("transfer_failed", "the transfer could not be checked") from e

    async def _admit(self, call: CallRecord, agent: Agent) -> TransferPlan:
        number = agent.transfer_number
        if not number:
            raise TransferUnavailable("the agent has no transfer number")
        if call.carrier not in set(Carrier):
            return await self._admit_channel(call, number)
        now = time.time()
        holder = Carrier(call.carrier)
        limits = await self.tenants.limits(call.tenant, self.default_limits)
        try:
            kind = check_destination(
                number, limits.allowed_destinations, self.policy.destinations
            ).kind
            route(number, Purpose.OUTBOUND, self.policy, self.health(now), now, holder=holder)
        except RoutingError as e:
            log.warning("transfer refused by routing", extra={"code": e.code})
            raise TransferRefused(e.code, str(e)) from e
        rate = class_price(kind, self.limiter.cents_per_minute, self.policy.destinations)
        refused = await self.limiter.admit(
            call.tenant, transfer_member(call.call_id), limits, now, rate
        )
        if refused is not None:
            log.warning("transfer refused by a limit", extra={"limit": refused.limit})
            raise TransferRefused(
                "limit_exceeded", f"the tenant's outbound limit {refused.limit} is reached"
            )
        reservation = Reservation(self.limiter.reserve_cents(rate), day(now), rate)
        try:
            await self.calls.reserve_transfer(call.call_id, reservation)
        except Exception:
            try:  # not noted on the call: nothing would ever settle it
                await self.limiter.release(
                    call.tenant, transfer_member(call.call_id), reservation.cents, reservation.day
                )
            except Exception:
                log.exception("transfer reservation could not be released")
            raise
        warm = agent.transfer_mode == "warm" and self.carriers.kit(holder).warm_transfer
        return TransferPlan(number, "warm" if warm else "cold")

    async def _admit_channel(self, call: CallRecord, number: str) -> TransferPlan:
        """A transfer on a channel's own signalling (a SIP PBX dials it): the class checked."""
        if call.carrier not in self.channels:
            raise TransferUnavailable("transfers are not offered on this call's channel")
        limits = await self.tenants.limits(call.tenant, self.default_limits)
        try:
            check_destination(number, limits.allowed_destinations, self.policy.destinations)
        except RoutingError as e:
            log.warning("transfer refused by routing", extra={"code": e.code})
            raise TransferRefused(e.code, str(e)) from e
        return TransferPlan(number, "cold")

    async def hand_over(self, call: CallRecord, plan: TransferPlan, summary: bytes | None) -> None:
        """Ask the call's carrier to transfer it as ``plan`` says.

        ``summary`` is 16-bit mono PCM at 8 kHz (warm only). A carrier that fails (or a summary
        that cannot be stored) gives the reservation back and raises :class:`TransferRefused`
        (``carrier_failed``). Once the carrier took the transfer nothing undoes it: a store
        error noting it is logged, not raised.
        """
        try:
            control = (
                self.channels.get(call.carrier) or self.carriers.kit(Carrier(call.carrier)).control
            )
            url = None
            if plan.mode == "warm" and summary:
                url = await self._publish(call, summary)
            await control.transfer(call.carrier_call_id, plan.number, url, call_ref=call.call_id)
        except Exception as e:
            log.warning("carrier transfer failed", extra={"error": str(e)[:200]})
            await self.cancel(call)
            raise TransferRefused("carrier_failed", "the carrier did not take the transfer") from e
        try:
            await self.calls.transferred(call.call_id, time.time())
        except Exception:
            log.exception("the carrier took the transfer; its time could not be noted")

    async def cancel(self, call: CallRecord) -> None:
        """Give back the reservation of a transfer that was not made."""
        try:
            await self.calls.settle_transfer(call.call_id, time.time())
        except Exception:
            log.exception("transfer reservation could not be given back")

    async def _publish(self, call: CallRecord, pcm: bytes) -> str:
        """Seal the summary audio under a new token; the public URL the carrier is given."""
        token = secrets.token_urlsafe(32)
        identity = Identity(call.tenant, call.call_id, _KIND)
        dek, wrapped = await self.keyring.new_data_key(identity)
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(dek).encrypt(nonce, wav_of(pcm), token.encode())
        await self.redis_set(
            token,
            {
                "tenant": call.tenant,
                "call_id": call.call_id,
                "key": wrapped.encode(),
                "audio": base64.b64encode(sealed).decode(),
            },
        )
        return self.urls.public(SUMMARY_PATH.format(token=token))

    async def redis_set(self, token: str, fields: dict[str, str]) -> None:
        """Keep a summary's fields for :data:`SUMMARY_TTL_S`."""
        redis = self.calls.redis
        async with redis.pipeline(transaction=True) as p:
            p.hset(keys.transfer_summary(token), mapping=keys.fields(fields))
            p.expire(keys.transfer_summary(token), SUMMARY_TTL_S)
            await p.execute()

    async def summary(self, token: str) -> Summary | None:
        """The summary audio kept under ``token``; ``None`` when unknown, expired or unreadable."""
        if not token or len(token) > 100:
            return None
        raw = keys.strs(await self.calls.redis.hgetall(keys.transfer_summary(token)))
        if not raw.get("audio"):
            return None
        try:
            identity = Identity(raw["tenant"], raw["call_id"], _KIND)
            dek = await self.keyring.data_key(identity, WrappedKey.decode(raw["key"]))
            sealed = base64.b64decode(raw["audio"])
            wav = AESGCM(dek).decrypt(sealed[:12], sealed[12:], token.encode())
        except Exception:
            log.warning("transfer summary could not be opened")
            return None
        return Summary(wav)
