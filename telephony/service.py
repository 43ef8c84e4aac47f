"""Numbers and outbound calls through one set of carriers: what the routes and the CLI use."""

from __future__ import annotations

from collections.abc import Callable

from calls.store import CallStore
from carriers.base import Carrier, PublicUrls
from carriers.registry import Carriers
from carriers.settings import CARRIER_DOWN_SECONDS
from routing.directory import Directory
from routing.policy import Health, Policy
from telephony.numbers import Numbers
from telephony.outbound import Outbound
from tenancy.limits import OutboundLimiter


class Telephony:
    """Search, rent and release numbers (:class:`Numbers`); place calls (:class:`Outbound`)."""

    def __init__(
        self,
        directory: Directory,
        calls: CallStore,
        policy: Policy,
        carriers: Carriers,
        health: Callable[[float], Health],
        urls: PublicUrls,
        *,
        max_call_seconds: int,
        mark_down: Callable[[Carrier, float], None] | None = None,
        down_seconds: float = CARRIER_DOWN_SECONDS,
        limiter: OutboundLimiter | None = None,
    ) -> None:
        """Both halves share ``carriers``, ``health`` and ``policy``."""
        self.directory = directory
        self.calls = calls
        self.numbers = Numbers(directory, policy, carriers, health, urls, mark_down, down_seconds)
        self.outbound = Outbound(
            directory, calls, policy, carriers, health, urls, max_call_seconds, limiter
        )
        self.search = self.numbers.search
        self.rent = self.numbers.rent
        self.release = self.numbers.release
        self.place_call = self.outbound.place_call
