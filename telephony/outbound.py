"""Numbers and outbound calls, through the carrier the router picks (or that holds the number)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.settings import Settings
from calls.store import CallStore, Reservation, carrier_time_limit, new_call_id
from carriers.base import AvailableNumber, RentedNumber
from carriers.errors import CarrierApiError, CarrierUnavailable
from carriers.sinch.control import SinchControl
from carriers.telnyx.control import TelnyxControl
from carriers.twilio.control import TwilioControl
from routing.destinations import check as check_destination
from routing.destinations import class_price
from routing.directory import DEFAULT_TENANT, Agent, Directory, Route, normalise_number
from routing.errors import RouteRefused
from routing.policy import Carrier, Decision, Health, Policy, Purpose, choose, route
from tenancy.limits import LimitExceeded, Limits, OutboundLimiter, day

log = logging.getLogger(__name__)
Control = TwilioControl | TelnyxControl | SinchControl
#: Where each carrier sends a rented number's calls (paths of api/routes_<carrier>.py).
VOICE_PATHS = {
    Carrier.TWILIO: "/webhooks/twilio/voice",
    Carrier.TELNYX: "/webhooks/telnyx",
    Carrier.SINCH: "/webhooks/sinch",
}
STATUS_PATHS = {
    Carrier.TWILIO: "/webhooks/twilio/status",
    Carrier.TELNYX: "/webhooks/telnyx",
    Carrier.SINCH: "/webhooks/sinch",
}
MEDIA_PATHS = {
    Carrier.TWILIO: "/media/twilio",
    Carrier.TELNYX: "/media/telnyx",
    Carrier.SINCH: "/media/sinch",
}


@dataclass(frozen=True)
class Placed:
    """An outbound call on its way: our id, the carrier's id and why that carrier."""

    call_id: str
    carrier_call_id: str
    decision: Decision


class Telephony:
    """Search, rent and release numbers; place outbound calls. Every choice goes through routing."""

    def __init__(
        self,
        settings: Settings,
        directory: Directory,
        calls: CallStore,
        policy: Policy,
        health: Callable[[float], Health],
        controls: Mapping[Carrier, Control],
        mark_down: Callable[[Carrier, float], None] | None = None,
        limiter: OutboundLimiter | None = None,
    ) -> None:
        """Act through ``controls`` (one per configured carrier).

        ``mark_down(carrier, until)`` records a carrier whose API failed, so that the policy
        fails over to the next usable carrier (never across the EU residency rule).
        ``limiter`` admits outbound calls against the tenant's limits.
        """
        self.settings = settings
        self.directory = directory
        self.calls = calls
        self.policy = policy
        self.health = health
        self.controls = controls
        self.mark_down = mark_down
        self.limiter = limiter

    def _control(self, carrier: Carrier) -> Control:
        control = self.controls.get(carrier)
        if control is None:
            raise CarrierUnavailable(f"{carrier} is not configured")
        return control

    async def search(
        self, country: str, area_code: str | None = None, contains: str | None = None
    ) -> tuple[Decision, list[AvailableNumber]]:
        """Numbers of ``country`` from the carrier the policy picks for it."""
        key = f"{country}{area_code or ''}"
        tried: list[Carrier] = []
        while True:
            now = time.time()
            decision = choose(country, key, self.policy, self.health(now), now)
            if decision.carrier in tried:
                raise RouteRefused(f"no usable carrier for {country}: {', '.join(tried)} failed")
            try:
                found = await self._control(decision.carrier).search(country, area_code, contains)
            except CarrierApiError as e:
                if self.mark_down is None or not e.retryable:
                    raise
                log.warning("carrier API failing: marked down", extra={"carrier": decision.carrier})
                self.mark_down(decision.carrier, now + self.settings.carriers.carrier_down_seconds)
                tried.append(decision.carrier)
                continue
            log.info("number search", extra={**decision.as_metadata(), "found": len(found)})
            return decision, found

    async def rent(self, number: str, agent: Agent) -> tuple[Decision, RentedNumber, Route]:
        """Rent ``number`` from the carrier the policy picks, pointing it at ``agent``."""
        now = time.time()
        e164 = normalise_number(number)
        decision = route(e164, Purpose.PROVISION, self.policy, self.health(now), now)
        control = self._control(decision.carrier)
        rented = await control.rent(
            e164,
            self.settings.public(VOICE_PATHS[decision.carrier]),
            self.settings.public(STATUS_PATHS[decision.carrier]),
        )
        holding = {"carrier": str(decision.carrier), "carrier_id": rented.carrier_id}
        holding |= {f"routing_{k}": v for k, v in decision.as_metadata().items()}
        found = await self.directory.attach(e164, agent, holding)
        log.info("number rented", extra={"number": e164, **decision.as_metadata()})
        return decision, rented, found

    async def release(self, number: str, tenant: str = DEFAULT_TENANT) -> RentedNumber | None:
        """Give a rented number back to its carrier and forget it."""
        e164 = normalise_number(number)
        route_ = await self.directory.lookup(e164)
        if route_ is None or route_.tenant != tenant:
            return None
        fields = await self.directory.remove_number(e164, tenant)
        if not fields.get("carrier"):
            return None  # added by hand: nothing to give back
        rented = RentedNumber(fields["carrier"], e164, fields.get("carrier_id", e164))
        await self._control(Carrier(fields["carrier"])).release(rented)
        log.info("number released", extra={"number": e164, "carrier": fields["carrier"]})
        return rented

    async def place_call(
        self, from_number: str, to: str, tenant: str = DEFAULT_TENANT, limits: Limits | None = None
    ) -> Placed:
        """Call ``to`` from one of the tenant's numbers, through the carrier that holds it.

        With ``limits`` the call must first be admitted by the limiter (:class:`LimitExceeded`
        otherwise); a call the carrier refuses gives its reservation back. A destination of a
        restricted class (premium rate, satellite, high-risk...) is refused
        (:class:`DestinationRefused`) unless ``limits`` allows its class. The residency rule
        applies to both numbers: the caller ID's carrier must be allowed to carry it too.
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
        control = self._control(holder)
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
            source, destination, now, metadata, call_id=call_id,
            reservation=reservation,
        )  # fmt: skip
        try:
            carrier_call_id = await self._dial(control, holder, source.number, destination, call_id)
        except Exception:
            await self.calls.advance(call_id, "failed", time.time())
            await self.calls.settle(call_id, time.time(), 0.0)
            raise
        await self.calls.attach_carrier_call(call_id, str(holder), str(carrier_call_id))
        log.info("outbound call placed", extra={"call_id": call_id, **decision.as_metadata()})
        return Placed(call_id, str(carrier_call_id), decision)

    async def _dial(
        self, control: Control, holder: Carrier, source: str, destination: str, call_id: str
    ) -> str:
        # The carrier's own hard limit, in case the platform cannot end the call itself.
        limit = carrier_time_limit(self.settings.call.call_max_seconds)
        if isinstance(control, TwilioControl):
            # Twilio asks for the call's TwiML once answered: our stream, for this call id.
            answer = self.settings.public(f"/webhooks/twilio/outbound?call_id={call_id}")
            status = self.settings.public(STATUS_PATHS[holder])
            return str(await control.place_call(source, destination, answer, status, limit))
        # Telnyx and Sinch stream the answered call to us directly.
        media = self.settings.public_ws(MEDIA_PATHS[holder])
        return str(
            await control.place_call(source, destination, media, {"call_id": call_id}, limit)
        )
