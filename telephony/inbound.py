"""Accepting an inbound call: the number's agent, the routing policy, the caps, the record."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from calls.events import current_call_id
from calls.state import CallState
from calls.store import CallStore
from carriers.base import Carrier, InboundCall
from routing.directory import Agent, Directory, Route
from routing.errors import InvalidNumber, RouteRefused
from routing.policy import Decision, Health, Policy, Purpose, route
from telephony.admission import Admission, member

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """The outcome of an inbound webhook: answer ``route``, or refuse (``route`` is None).

    ``busy``: refused because a cap on calls in progress is reached; the carrier's busy answer.
    """

    call_id: str
    created: bool
    route: Route | None
    decision: Decision | None
    refusal: str | None
    busy: bool = False


class Inbound:
    """Accepts inbound calls: agent lookup, routing, admission, the call recorded once."""

    def __init__(
        self,
        directory: Directory,
        policy: Policy,
        health: Callable[[float], Health],
        admission: Admission,
        calls: CallStore,
        prepare: Callable[[Agent], None],
    ) -> None:
        """``prepare(agent)`` synthesizes an agent's fixed phrases in the background."""
        self.directory = directory
        self.policy = policy
        self.health = health
        self.admission = admission
        self.calls = calls
        self.prepare = prepare

    async def accept(self, inbound: InboundCall, now: float) -> Accepted:
        """Look up the agent, apply the routing policy, record the call once."""
        found = await self.directory.lookup(inbound.to_number)
        decision: Decision | None = None
        refusal: str | None = None
        try:
            holder = Carrier(inbound.carrier)
            decision = route(
                inbound.to_number,
                Purpose.INBOUND,
                self.policy,
                self.health(now),
                now,
                holder=holder,
            )
        except (RouteRefused, InvalidNumber) as e:
            refusal = str(e)
        busy = None
        if found is not None and refusal is None:
            busy = await self.admission.admit(
                found.tenant, member(inbound.carrier, inbound.carrier_call_id), now
            )
            if busy is not None:
                refusal = (
                    "busy: draining" if busy.limit == "draining" else f"busy: {busy.limit} reached"
                )
        admitted = found is not None and busy is None and refusal is None
        try:
            call_id, created, state = await self.calls.open_inbound(
                inbound, found, now, decision.as_metadata() if decision else None, refusal
            )
        except BaseException:
            if admitted and found is not None:  # nothing was recorded: the place goes back
                await self.admission.release(
                    found.tenant, member(inbound.carrier, inbound.carrier_call_id)
                )
            raise
        answer = found is not None and state is CallState.RINGING
        if admitted and found is not None and state is not None and state.is_final:
            # admitted, but the call is already over (a final status came first): not counted.
            # A repeated webhook of a call in progress keeps its place.
            await self.admission.release(
                found.tenant, member(inbound.carrier, inbound.carrier_call_id)
            )
        token = current_call_id.set(call_id)
        try:
            if busy is not None:
                log.warning("inbound call refused: busy", extra={"limit": busy.limit})
            elif refusal:
                log.warning("inbound call refused by routing", extra={"reason": refusal})
            elif not found:
                log.warning("call to a number without agent", extra={"to": inbound.to_number})
            elif created and answer and decision:
                log.info(
                    "inbound call", extra={"agent": found.agent.name, **decision.as_metadata()}
                )
                # Synthesize the fixed phrases now, without holding up the carrier's webhook.
                self.prepare(found.agent)
            elif not created:
                log.info("duplicate inbound webhook: same answer, nothing new stored")
        finally:
            current_call_id.reset(token)
        routed = found if answer else None
        return Accepted(
            call_id, created, routed, decision, refusal, busy=busy is not None and not answer
        )
