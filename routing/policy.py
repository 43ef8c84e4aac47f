"""Which carrier serves a number: a pure policy, ``route(number, purpose, policy, health, now)``.

The DPA rule first: a number of an EU member state (EEA countries can be added), or of a
territory that is part of one (Réunion, Åland: ``territories.toml``), goes through the EU carrier
(Sinch) only, and if that carrier is unavailable the request is refused: it is never re-routed
through a US carrier. Other numbers follow the operator's policy (an order or weights
per country) with failover to the next healthy carrier. Pure: no I/O, no clock (``now`` is passed).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import phonenumbers

from carriers.base import Carrier
from routing.destinations import DestinationTable, default_table
from routing.errors import InvalidNumber, RouteRefused
from routing.territories import member_state


class Purpose(StrEnum):
    """Why a route is asked for."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    PROVISION = "provision"


#: EU-27, ISO 3166-1 alpha-2.
EU27: frozenset[str] = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)
#: EEA members outside the EU, which an operator may add to the residency set.
EEA_EXTRA: frozenset[str] = frozenset({"IS", "LI", "NO"})
#: Carriers that are US companies: never used for a number under the residency rule.
US_CARRIERS: frozenset[Carrier] = frozenset({Carrier.TWILIO, Carrier.TELNYX})


@dataclass(frozen=True)
class CountryRule:
    """How one country's (non-resident) numbers are served: an order, or weights."""

    order: tuple[Carrier, ...] = ()
    weights: Mapping[Carrier, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.order) == bool(self.weights):
            raise ValueError("a country rule has either an order or weights")
        if any(w <= 0 for w in self.weights.values()):
            raise ValueError("weights must be positive")


@dataclass(frozen=True)
class Policy:
    """The operator's routing policy (``BONMONIQ_ROUTING_POLICY``: a JSON file or JSON text)."""

    residency_countries: frozenset[str] = EU27
    residency_carrier: Carrier = Carrier.SINCH
    default_order: tuple[Carrier, ...] = (Carrier.TWILIO, Carrier.TELNYX)
    countries: Mapping[str, CountryRule] = field(default_factory=dict)
    #: Destination classes and prices of outbound calls (the operator's high-risk list).
    destinations: DestinationTable = field(default_factory=default_table)

    def __post_init__(self) -> None:
        if self.residency_carrier in US_CARRIERS:
            raise ValueError("the residency carrier cannot be a US carrier")
        if not self.default_order:
            raise ValueError("default_order needs at least one carrier")
        if not EU27 <= self.residency_countries:
            raise ValueError("the residency set must contain every EU member state")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Policy:
        """Build from the documented JSON shape (see README, "Routing policy")."""
        extra = {c.upper() for c in raw.get("add_residency_countries", [])}
        known = {"add_residency_countries", "default_order", "countries", "high_risk_prefixes"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown routing policy keys: {sorted(unknown)}")
        countries = {
            code.upper(): CountryRule(
                order=tuple(Carrier(c) for c in rule.get("order", [])),
                weights={Carrier(c): float(w) for c, w in rule.get("weights", {}).items()},
            )
            for code, rule in raw.get("countries", {}).items()
        }
        order = tuple(Carrier(c) for c in raw.get("default_order", ["twilio", "telnyx"]))
        destinations = default_table()
        if "high_risk_prefixes" in raw:
            destinations = destinations.with_prefixes(str(p) for p in raw["high_risk_prefixes"])
        return cls(EU27 | extra, Carrier.SINCH, order, countries, destinations)

    def resident(self, region: str) -> bool:
        """Whether numbers of ``region`` fall under the residency rule.

        By its own code, or by the member state it is part of (``RE`` is France).
        """
        region = region.upper()
        return bool({region, member_state(region)} & self.residency_countries)

    @classmethod
    def load(cls, source: str | None) -> Policy:
        """From a JSON file path, inline JSON text, or the default when ``None``."""
        if not source:
            return cls()
        text = source if source.lstrip().startswith("{") else Path(source).read_text()
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class Health:
    """Which carriers can be used at ``now``: configured ones, not marked down."""

    available: frozenset[Carrier] = frozenset(Carrier)
    down_until: Mapping[Carrier, float] = field(default_factory=dict)

    def usable(self, carrier: Carrier, now: float) -> bool:
        """Whether ``carrier`` may take traffic at ``now``."""
        return carrier in self.available and now >= self.down_until.get(carrier, 0.0)


@dataclass(frozen=True)
class Decision:
    """The carrier chosen for a number, with where it applies and why."""

    carrier: Carrier
    region: str  # "eu" for numbers under the residency rule, else "international"
    country: str
    reason: str

    def as_metadata(self) -> dict[str, str]:
        """The routing metadata stored with the call and logged."""
        return {
            "carrier": str(self.carrier),
            "region": self.region,
            "country": self.country,
            "reason": self.reason,
        }


def country_of(number: str) -> str:
    """ISO country of an E.164 number, via ``phonenumbers``; :class:`InvalidNumber` otherwise.

    Remembered per number (a pure function; every webhook asks it of the called number).
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as e:
        raise InvalidNumber(f"{number!r} is not an international phone number: {e}") from e
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidNumber(f"{number!r} is not a possible phone number")
    region = phonenumbers.region_code_for_number(parsed)
    if not region or region == "ZZ":
        # Not a valid number of any one country (a +1 555 test number, a new range): take the
        # main country of its calling code. For EU codes that is the member state, so an
        # unknown +33 number still goes through the EU carrier only.
        region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    if not region or region == "ZZ":
        raise InvalidNumber(f"{number!r} belongs to no country")
    return str(region)  # "001": a non-geographic number (satellite, international network)


def regions_of(number: str) -> tuple[str, ...]:
    """Every region whose numbering plan ``number`` is valid in (empty for an invalid number).

    Several where territories share a calling code and ranges: +590 69x mobiles are numbers of
    Guadeloupe, Saint-Barthélemy and Saint-Martin alike.
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ()
    return tuple(
        str(r)
        for r in phonenumbers.region_codes_for_country_code(parsed.country_code or 0)
        if phonenumbers.is_valid_number_for_region(parsed, r)
    )


def resident_region(number: str, country: str, policy: Policy) -> str | None:
    """The region that puts ``number`` (of ``country``) under the residency rule, or ``None``.

    ``country`` itself, or any other region the number is also valid in: where the numbering
    plan cannot tell an EU territory from a non-EU one (Saint-Martin and Saint-Barthélemy share
    ranges), the number is treated as EU (fail closed).
    """
    if policy.resident(country):
        return country
    return next((r for r in regions_of(number) if policy.resident(r)), None)


def _where(country: str, via: str | None = None) -> str:
    """``FR``; ``RE, part of FR`` for a territory; ``BL, a range shared with MF, part of FR``."""
    if via and via != country:
        return f"{country}, a range shared with {_where(via)}"
    state = member_state(country)
    return country if state == country else f"{country}, part of {state}"


def _weighted_order(number: str, weights: Mapping[Carrier, float]) -> list[Carrier]:
    """Rendezvous hashing: a stable order per number in which each carrier leads by weight."""

    def score(carrier: Carrier) -> float:
        digest = hashlib.sha256(f"{number}|{carrier}".encode()).digest()
        u = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)
        return -weights[carrier] / math.log(u)

    return sorted(weights, key=score, reverse=True)


def route(
    number: str,
    purpose: Purpose,
    policy: Policy,
    health: Health,
    now: float,
    holder: Carrier | None = None,
) -> Decision:
    """Choose the carrier for ``number``; :class:`RouteRefused` when no allowed carrier is usable.

    Calls have no choice of carrier: an inbound call arrives through, and an outbound call
    leaves through, the carrier ``holder`` that holds our number (the called number, or the
    caller ID). The residency rule still applies to ``number``: an EU/EEA number on a US carrier
    is refused. Provisioning chooses among the carriers.
    """
    country = country_of(number)
    via = resident_region(number, country, policy)
    resident = via is not None
    region = "eu" if resident else "international"
    if purpose in (Purpose.INBOUND, Purpose.OUTBOUND):
        if holder is None:
            raise ValueError(f"an {purpose} route needs the carrier holding our number")
        if resident and holder != policy.residency_carrier:
            raise RouteRefused(
                f"{_where(country, via)} is an EU/EEA number: it may only be carried by "
                f"{policy.residency_carrier}, not {holder}"
            )
        # An inbound call proves its carrier works: only configuration and the register count.
        usable = (
            holder in health.available if purpose == Purpose.INBOUND else health.usable(holder, now)
        )
        if not usable:
            raise RouteRefused(f"{holder}, which holds the number, is unavailable")
        what = "caller ID" if purpose == Purpose.OUTBOUND else "called number"
        reason = f"{purpose} through {holder}, which holds the {what}"
        if resident:
            reason += f"; EU/EEA number ({_where(country, via)}): EU carrier only"
        return Decision(holder, region, country, reason)
    if via is not None and via != country:
        return _resident_choice(country, via, policy, health, now)
    return choose(country, number, policy, health, now)


def choose(country: str, key: str, policy: Policy, health: Health, now: float) -> Decision:
    """Provisioning's choice for ``country`` (``key`` makes weighted choices stable).

    Used directly when searching numbers of a country, before any number exists.
    """
    country = country.upper()
    if policy.resident(country):
        return _resident_choice(country, country, policy, health, now)
    region = "international"
    rule = policy.countries.get(country)
    if rule and rule.weights:
        candidates, how = _weighted_order(key, rule.weights), f"weights for {country}"
    elif rule:
        candidates, how = list(rule.order), f"order for {country}"
    else:
        candidates, how = list(policy.default_order), "default order"
    for rank, carrier in enumerate(candidates):
        if health.usable(carrier, now):
            failover = f", failover from {', '.join(candidates[:rank])}" if rank else ""
            return Decision(carrier, region, country, f"{how}{failover}")
    raise RouteRefused(f"no usable carrier for {country} among {', '.join(candidates)}")


def _resident_choice(
    country: str, via: str, policy: Policy, health: Health, now: float
) -> Decision:
    """The EU carrier for a number under the residency rule, or :class:`RouteRefused`."""
    carrier = policy.residency_carrier
    where = _where(country, via)
    if not health.usable(carrier, now):
        raise RouteRefused(
            f"{where} is an EU/EEA country and {carrier} (the only EU carrier) "
            "is unavailable; refused rather than routed through a US carrier"
        )
    return Decision(carrier, "eu", country, f"EU/EEA number ({where}): EU carrier only")
