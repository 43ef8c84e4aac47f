"""Classes of outbound destinations (premium, shared-cost, satellite, high-risk) and their price.

Pure: :func:`classify` reads the numbering plan (``phonenumbers``) and the operator's table
(``destinations.toml``); :func:`check` refuses a class the tenant is not allowed to call;
:func:`class_price` is what a minute to a class costs for the spend cap.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from types import MappingProxyType

import phonenumbers
from phonenumbers import PhoneNumberType

from routing.errors import DestinationRefused, InvalidNumber

TABLE_PATH = Path(__file__).with_name("destinations.toml")


class DestinationClass(StrEnum):
    """What kind of number a call goes to; all but ``standard`` need the operator's allowance."""

    STANDARD = "standard"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    PERSONAL = "personal"
    SATELLITE = "satellite"
    INTERNATIONAL_NETWORK = "international_network"
    HIGH_RISK = "high_risk"


#: Classes refused unless the operator allows them for a tenant.
RESTRICTED: frozenset[DestinationClass] = frozenset(DestinationClass) - {DestinationClass.STANDARD}
#: ITU-T E.164 non-geographic codes: Inmarsat (870) and the Global Mobile Satellite System (881).
SATELLITE_CODES = frozenset({870, 881})
#: Freephone (800) is standard; 979 and 808 are classed by number type (premium, shared cost).
_BY_TYPE_CODES = frozenset({800, 808, 979})
_BY_TYPE = {
    PhoneNumberType.PREMIUM_RATE: DestinationClass.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: DestinationClass.SHARED_COST,
    PhoneNumberType.PERSONAL_NUMBER: DestinationClass.PERSONAL,
}


@dataclass(frozen=True)
class DestinationTable:
    """The operator's high-risk ranges (E.164 prefixes) and per-class prices (cents a minute)."""

    high_risk_prefixes: tuple[str, ...] = ()
    cents_per_minute: Mapping[DestinationClass, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for prefix in self.high_risk_prefixes:
            if not (prefix.startswith("+") and prefix[1:].isdigit() and 2 <= len(prefix) <= 16):
                raise ValueError(f"high-risk prefix {prefix!r}: '+' and 1-15 digits")
        if any(c < 0 for c in self.cents_per_minute.values()):
            raise ValueError("prices cannot be negative")

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> DestinationTable:
        """From the shape of ``destinations.toml``."""
        prefixes = raw.get("high_risk_prefixes", [])
        prices = raw.get("cents_per_minute", {})
        if not isinstance(prefixes, list) or not isinstance(prices, Mapping):
            raise ValueError("high_risk_prefixes is a list and cents_per_minute a table")
        return cls(
            tuple(str(p) for p in prefixes),
            MappingProxyType({DestinationClass(k): int(v) for k, v in prices.items()}),
        )

    def with_prefixes(self, prefixes: Iterable[str]) -> DestinationTable:
        """This table with the operator's own high-risk list instead."""
        return DestinationTable(tuple(prefixes), self.cents_per_minute)


@cache
def default_table(path: Path = TABLE_PATH) -> DestinationTable:
    """The table shipped in ``destinations.toml``."""
    return DestinationTable.from_dict(tomllib.loads(path.read_text()))


@dataclass(frozen=True)
class Destination:
    """A number's class and why."""

    number: str
    kind: DestinationClass
    reason: str


def classify(number: str, table: DestinationTable) -> Destination:
    """The class of the E.164 ``number`` (:class:`InvalidNumber` if it cannot be parsed).

    Satellite and international-network codes first, then the numbering plan's premium-rate,
    shared-cost and personal ranges, then the operator's high-risk prefixes; else standard
    (numbers of no known range too: a carrier cannot complete them).
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as e:
        raise InvalidNumber(f"{number!r} is not an international phone number: {e}") from e
    code = parsed.country_code or 0
    if code in SATELLITE_CODES:
        return Destination(number, DestinationClass.SATELLITE, f"+{code}: satellite network")
    region = phonenumbers.region_code_for_country_code(code)
    if region == "001" and code not in _BY_TYPE_CODES:
        return Destination(
            number, DestinationClass.INTERNATIONAL_NETWORK, f"+{code}: international network"
        )
    kind = _BY_TYPE.get(phonenumbers.number_type(parsed))
    if kind is not None:
        return Destination(number, kind, f"{kind} range of the numbering plan")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    for prefix in table.high_risk_prefixes:
        if e164.startswith(prefix):
            return Destination(
                number, DestinationClass.HIGH_RISK, f"{prefix}: operator's high-risk list"
            )
    return Destination(number, DestinationClass.STANDARD, "standard")


def check(number: str, allowed: Iterable[str], table: DestinationTable) -> Destination:
    """The class of ``number`` if the tenant may call it; :class:`DestinationRefused` otherwise.

    ``allowed`` is the tenant's allowance: restricted classes the operator lets it call.
    """
    destination = classify(number, table)
    if destination.kind in RESTRICTED and destination.kind not in set(allowed):
        raise DestinationRefused(
            f"calls to {destination.kind} destinations are not allowed for this tenant "
            f"({destination.reason}); the operator can allow the class"
        )
    return destination


def class_price(kind: DestinationClass, base_cents: int, table: DestinationTable) -> int:
    """Cents a minute for ``kind``: its price in the table or ``base_cents``, the higher."""
    return max(base_cents, table.cents_per_minute.get(kind, 0))
