"""Outbound calls: from a tenant's number, through the carrier that holds it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from calls.events import CallEvent, CallEventType
from calls.records import Reservation, VoicemailRequest, new_call_id
from calls.state import CallState
from calls.store import CallStore
from carriers.base import Carrier, Detection, PublicUrls, carrier_time_limit
from carriers.registry import Carriers
from routing.destinations import check as check_destination
from routing.destinations import class_price
from routing.directory import DEFAULT_TENANT, Directory, normalise_number
from routing.errors import RouteRefused
from routing.policy import Decision, Health, Policy, Purpose, route
from tenancy.errors import LimitExceeded
from tenancy.limits import Limits, OutboundLimiter, day

log = logging.getLogger(__name__)


def detection_for(request: VoicemailRequest | None) -> Detection | None:
    """The detection a voicemail choice needs: the greeting's end only to leave a message."""
    if request is None:
        return None
    return Detection.MESSAGE_END if request.action == "leave_message" else Detection.DETECT


@dataclass(frozen=True)
class Placed:
    """An outbound call on its way: our id, the carrier's id and why that carrier."""

    call_id: str
    carrier_call_id: str
    decision: Decision


class Outbound:
    """Places outbound calls; every choice goes through routing and the tenant's limits."""

    def __init__(
        self,
        directory: Directory,
        calls: CallStore,
        policy: Policy,
        carriers: Carriers,
        health: Callable[[float], Health],
        urls: PublicUrls,
        max_call_seconds: int,
        limiter: OutboundLimiter | None = None,
    ) -> None:
        """Dial through ``carriers``; the media comes to ``urls``.

        The carrier is given ``max_call_seconds`` plus its grace as its own hard limit.
        ``limiter`` admits outbound calls against the tenant's limits.
        """
        self.directory = directory
        self.calls = calls
        self.policy = policy
        self.carriers = carriers
        self.health = health
        self.urls = urls
        self.max_call_seconds = max_call_seconds
        self.limiter = limiter

    async def place_call(
        self,
        from_number: str,
        to: str,
        tenant: str = DEFAULT_TENANT,
        limits: Limits | None = None,
        voicemail: VoicemailRequest | None = None,
    ) -> Placed:
        """Call ``to`` from one of the tenant's numbers, through the carrier that holds it.

        With ``limits`` the call must first be admitted by the limiter (:class:`LimitExceeded`
        otherwise); a call the carrier refuses gives its reservation back. A destination of a
        restricted class (premium rate, satellite, high-risk...) is refused
        (:class:`DestinationRefused`) unless ``limits`` allows its class. The residency rule
        applies to both numbers: the caller ID's carrier must be allowed to carry it too.
        With ``voicemail`` the carrier's answering-machine detection is asked for (it costs
        money: only then), its result handled as the request says.
        """
        now = time.time()
        source = await self.directory.lookup(from_number)
        if source is None or source.tenant != tenant:
            raise RouteRefused(f"{from_number} is not one of your numbers")
        if source.carrier is None:
            raise RouteRefused(
                f"{from_number} was not rented through a carrier: it cannot call out"
            )
        holder = Carrier(source.carrier)
        destination = normalise_number(to)
        allowed = limits.allowed_destinations if limits is not None else frozenset()
        kind = check_destination(destination, allowed, self.policy.destinations).kind
        health = self.health(now)
        # A number rented before a territory joined the residency table may sit on a US carrier.
        route(source.number, Purpose.OUTBOUND, self.policy, health, now, holder=holder)
        decision = route(destination, Purpose.OUTBOUND, self.policy, health, now, holder=holder)
        kit = self.carriers.kit(holder)
        call_id = new_call_id()
        reservation = None
        if limits is not None and self.limiter is not None:
            rate = class_price(kind, self.limiter.cents_per_minute, self.policy.destinations)
            refused = await self.limiter.admit(tenant, call_id, limits, now, rate)
            if refused is not None:
                log.warning("outbound call refused by a limit", extra={"limit": refused.limit})
                raise LimitExceeded(refused)
            reservation = Reservation(self.limiter.reserve_cents(rate), day(now), rate)
        metadata = decision.as_metadata() | {"destination": str(kind)}
        await self.calls.open_outbound(
            source,
            destination,
            now,
            metadata,
            call_id=call_id,
            reservation=reservation,
            voicemail_request=voicemail,
        )
        try:
            # The carrier's own hard limit, in case the platform cannot end the call itself.
            limit = carrier_time_limit(self.max_call_seconds)
            carrier_call_id = await kit.dial(
                self.urls, source.number, destination, call_id, limit, detection_for(voicemail)
            )
        except Exception:
            # Ended like any call (the on_final hook queues the tenant's call.ended).
            failed = CallEvent(CallEventType.ENDED, call_id, time.time(), {"status": "failed"})
            await self.calls.end(call_id, CallState.FAILED, failed)
            await self.calls.settle(call_id, time.time(), 0.0)
            raise
        await self.calls.attach_carrier_call(call_id, str(holder), str(carrier_call_id))
        log.info("outbound call placed", extra={"call_id": call_id, **decision.as_metadata()})
        return Placed(call_id, str(carrier_call_id), decision)
