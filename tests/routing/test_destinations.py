"""Destination classes of outbound calls: premium, shared-cost, personal, satellite, international
networks and the operator's high-risk list are refused unless allowed; each class has its price."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from carriers.base import Carrier
from routing.destinations import (
    RESTRICTED,
    DestinationClass,
    DestinationTable,
    check,
    class_price,
    classify,
    default_table,
)
from routing.errors import DestinationRefused, InvalidNumber
from routing.policy import EEA_EXTRA, EU27, Health, Policy, Purpose, route

TABLE = default_table()
C = DestinationClass


def example(region: str, kind: PhoneNumberType) -> str:
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None, (region, kind)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        (example("FR", PhoneNumberType.PREMIUM_RATE), C.PREMIUM_RATE),
        (example("GB", PhoneNumberType.PREMIUM_RATE), C.PREMIUM_RATE),
        (example("DE", PhoneNumberType.PREMIUM_RATE), C.PREMIUM_RATE),
        (example("US", PhoneNumberType.PREMIUM_RATE), C.PREMIUM_RATE),  # +1 900
        (example("FR", PhoneNumberType.SHARED_COST), C.SHARED_COST),
        (example("ES", PhoneNumberType.SHARED_COST), C.SHARED_COST),
        (example("GB", PhoneNumberType.PERSONAL_NUMBER), C.PERSONAL),  # +44 70
        ("+881612345678", C.SATELLITE),  # Global Mobile Satellite System
        ("+870301234567", C.SATELLITE),  # Inmarsat
        ("+8823421234", C.INTERNATIONAL_NETWORK),
        ("+883510012345", C.INTERNATIONAL_NETWORK),
        ("+979123456789", C.PREMIUM_RATE),  # international premium rate service
        ("+80812345678", C.SHARED_COST),  # international shared cost service
        ("+80012345678", C.STANDARD),  # international freephone
        ("+18765551234", C.HIGH_RISK),  # Jamaica (FCC "One Ring" list)
        ("+5378123456", C.HIGH_RISK),  # Cuba
        (example("US", PhoneNumberType.FIXED_LINE), C.STANDARD),
        (example("GB", PhoneNumberType.MOBILE), C.STANDARD),
        (example("FR", PhoneNumberType.TOLL_FREE), C.STANDARD),
        ("+15555550777", C.STANDARD),  # no known range: nothing to charge more for
    ],
)
def test_classes(number: str, kind: DestinationClass) -> None:
    assert classify(number, TABLE).kind == kind


@pytest.mark.parametrize("region", sorted(EU27 | EEA_EXTRA | {"RE", "GP", "MQ", "GF", "YT", "MF"}))
def test_ordinary_numbers_of_the_eu_are_standard(region: str) -> None:
    for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None:
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            assert classify(e164, TABLE).kind == C.STANDARD, e164


def test_restricted_classes_are_refused_unless_allowed() -> None:
    premium = example("FR", PhoneNumberType.PREMIUM_RATE)
    with pytest.raises(DestinationRefused, match="premium_rate") as refused:
        check(premium, frozenset(), TABLE)
    assert refused.value.code == "destination_refused"
    assert premium not in str(refused.value) and premium[3:] not in str(refused.value)
    with pytest.raises(DestinationRefused):
        check(premium, {"satellite"}, TABLE)
    assert check(premium, {"premium_rate"}, TABLE).kind == C.PREMIUM_RATE
    assert check("+14155550199", frozenset(), TABLE).kind == C.STANDARD
    assert RESTRICTED == frozenset(C) - {C.STANDARD}
    with pytest.raises(InvalidNumber):
        classify("not a number", TABLE)


def price_cents_per_minute(number: str, base_cents: int, table: DestinationTable) -> int:
    """What ``place_call`` charges a minute to ``number``: its class's price."""
    return class_price(classify(number, table).kind, base_cents, table)


def test_prices_per_class() -> None:
    premium = example("FR", PhoneNumberType.PREMIUM_RATE)
    assert price_cents_per_minute("+14155550199", 2, TABLE) == 2
    assert price_cents_per_minute(premium, 2, TABLE) == TABLE.cents_per_minute[C.PREMIUM_RATE]
    assert price_cents_per_minute("+881612345678", 2, TABLE) > price_cents_per_minute(
        premium, 2, TABLE
    )
    # The operator's base price wins when it is higher than a class's.
    assert class_price(C.SHARED_COST, 10_000, TABLE) == 10_000
    assert all(class_price(c, 0, TABLE) > 0 for c in RESTRICTED)


def test_the_operator_replaces_the_high_risk_list_in_the_routing_policy() -> None:
    policy = Policy.from_dict({"high_risk_prefixes": ["+4420"]})
    assert classify("+442071234567", policy.destinations).kind == C.HIGH_RISK
    assert classify("+18765551234", policy.destinations).kind == C.STANDARD
    assert policy.destinations.cents_per_minute == TABLE.cents_per_minute
    for bad in (["4420"], ["+"], ["+44x"]):
        with pytest.raises(ValueError):
            Policy.from_dict({"high_risk_prefixes": bad})
    with pytest.raises(ValueError):
        DestinationTable.from_dict({"cents_per_minute": {"premium_rate": -1}})


def test_an_allowed_satellite_number_is_routed_as_international() -> None:
    now = 1_800_000_000.0
    d = route("+881612345678", Purpose.OUTBOUND, Policy(), Health(), now, holder=Carrier.TWILIO)
    assert (d.country, d.region) == ("001", "international")


@settings(max_examples=300, deadline=None)
@given(
    region=st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    kind=st.sampled_from([PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST]),
    tail=st.from_regex(r"[0-9]{2}", fullmatch=True),
)
def test_no_premium_or_shared_cost_number_passes_by_default(region, kind, tail) -> None:  # type: ignore[no-untyped-def]
    number = phonenumbers.example_number_for_type(region, kind)
    if number is None:
        return
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    varied = e164[:-2] + tail
    if phonenumbers.number_type(phonenumbers.parse(varied)) != kind:
        varied = e164
    with pytest.raises(DestinationRefused):
        check(varied, frozenset(), TABLE)
