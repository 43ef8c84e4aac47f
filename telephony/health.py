"""Which configured carriers routing may use at a time: on the register in force, not down."""

from __future__ import annotations

import datetime as dt

from carriers.base import Carrier
from carriers.registry import Carriers
from routing.policy import Health
from routing.subprocessors import Register


class CarrierHealth:
    """The usable carriers at a time; a carrier whose API fails is marked down for a while."""

    def __init__(self, carriers: Carriers, register: Register) -> None:
        """Carriers of ``carriers`` are usable while ``register`` allows them and not down."""
        self.carriers = carriers
        self.register = register
        #: Carriers marked down until a time (a carrier API failing).
        self.down_until: dict[Carrier, float] = {}

    def health(self, now: float) -> Health:
        """Usable carriers at ``now``: configured, on the register in force, not marked down."""
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        usable = frozenset(c for c in self.carriers if self.register.allows(str(c), at))
        return Health(usable, dict(self.down_until))

    def mark_down(self, carrier: Carrier, until: float) -> None:
        """Leave ``carrier`` out of routing decisions until ``until`` (its API is failing)."""
        self.down_until[carrier] = until
