"""Numbers: search what a carrier offers, rent one pointing at an agent, give it back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from carriers.base import AvailableNumber, Carrier, PublicUrls, RentedNumber
from carriers.errors import CarrierApiError
from carriers.registry import Carriers
from carriers.settings import CARRIER_DOWN_SECONDS
from routing.directory import DEFAULT_TENANT, Agent, Directory, Route, normalise_number
from routing.errors import RouteRefused
from routing.policy import Decision, Health, Policy, Purpose, choose, route

log = logging.getLogger(__name__)


class Numbers:
    """Search, rent and release numbers through the carrier the routing policy picks."""

    def __init__(
        self,
        directory: Directory,
        policy: Policy,
        carriers: Carriers,
        health: Callable[[float], Health],
        urls: PublicUrls,
        mark_down: Callable[[Carrier, float], None] | None = None,
        down_seconds: float = CARRIER_DOWN_SECONDS,
    ) -> None:
        """Act through ``carriers``; a rented number's calls come to ``urls``.

        ``mark_down(carrier, until)`` records a carrier whose API failed (for ``down_seconds``),
        so that the policy fails over to the next usable carrier (never across the EU
        residency rule).
        """
        self.directory = directory
        self.policy = policy
        self.carriers = carriers
        self.health = health
        self.urls = urls
        self.mark_down = mark_down
        self.down_seconds = down_seconds

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
            control = self.carriers.kit(decision.carrier).control
            try:
                found = await control.search(country, area_code, contains)
            except CarrierApiError as e:
                if self.mark_down is None or not e.retryable:
                    raise
                log.warning("carrier API failing: marked down", extra={"carrier": decision.carrier})
                self.mark_down(decision.carrier, now + self.down_seconds)
                tried.append(decision.carrier)
                continue
            log.info("number search", extra={**decision.as_metadata(), "found": len(found)})
            return decision, found

    async def rent(self, number: str, agent: Agent) -> tuple[Decision, RentedNumber, Route]:
        """Rent ``number`` from the carrier the policy picks, pointing it at ``agent``."""
        now = time.time()
        e164 = normalise_number(number)
        decision = route(e164, Purpose.PROVISION, self.policy, self.health(now), now)
        kit = self.carriers.kit(decision.carrier)
        rented = await kit.control.rent(
            e164, self.urls.public(kit.paths.voice), self.urls.public(kit.paths.status)
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
        await self.carriers.kit(Carrier(fields["carrier"])).control.release(rented)
        log.info("number released", extra={"number": e164, "carrier": fields["carrier"]})
        return rented
