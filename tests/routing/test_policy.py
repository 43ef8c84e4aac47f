"""The routing policy: EU numbers through Sinch only (fail closed), the rest per operator policy."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from carriers.base import Carrier
from routing.errors import InvalidNumber, RouteRefused
from routing.policy import (
    EU27,
    US_CARRIERS,
    Decision,
    Health,
    Policy,
    Purpose,
    country_of,
    route,
)

NOW = 1_800_000_000.0
ALL_UP = Health()
SINCH_DOWN = Health(down_until={Carrier.SINCH: NOW + 60})
TWILIO_DOWN = Health(down_until={Carrier.TWILIO: NOW + 60})


def example(region: str) -> str:
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.FIXED_LINE)
    assert number is not None, region
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_eu27_is_the_27_member_states() -> None:
    assert len(EU27) == 27 and "GB" not in EU27 and "CH" not in EU27 and "NO" not in EU27


@pytest.mark.parametrize("region", sorted(EU27))
def test_every_eu_member_state_routes_to_sinch(region: str) -> None:
    d = route(example(region), Purpose.PROVISION, Policy(), ALL_UP, NOW)
    assert (d.carrier, d.region, d.country) == (Carrier.SINCH, "eu", region)
    assert "EU" in d.reason


@pytest.mark.parametrize("region", sorted(EU27))
def test_eu_number_with_sinch_down_is_refused(region: str) -> None:
    with pytest.raises(RouteRefused, match="refused rather than routed through a US carrier"):
        route(example(region), Purpose.PROVISION, Policy(), SINCH_DOWN, NOW)
    # Sinch without credentials is just as unavailable.
    with pytest.raises(RouteRefused):
        route(example(region), Purpose.PROVISION, Policy(), Health(frozenset(US_CARRIERS)), NOW)


def test_sinch_back_after_its_down_window() -> None:
    assert (
        route(example("FR"), Purpose.PROVISION, Policy(), SINCH_DOWN, NOW + 61).carrier
        == Carrier.SINCH
    )


@pytest.mark.parametrize("region", ["US", "GB", "CH", "CA", "JP"])
def test_non_eu_numbers_follow_the_default_order_and_fail_over(region: str) -> None:
    d = route(example(region), Purpose.PROVISION, Policy(), ALL_UP, NOW)
    assert (d.carrier, d.region) == (Carrier.TWILIO, "international")
    d = route(example(region), Purpose.PROVISION, Policy(), TWILIO_DOWN, NOW)
    assert d.carrier == Carrier.TELNYX and "failover from twilio" in d.reason
    with pytest.raises(RouteRefused, match="no usable carrier"):
        route(example(region), Purpose.PROVISION, Policy(), Health(frozenset({Carrier.SINCH})), NOW)


def test_country_order_and_weights_from_the_operator_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "routing.json"
    path.write_text(
        '{"add_residency_countries": ["no"], "default_order": ["telnyx", "twilio"],'
        ' "countries": {"gb": {"order": ["twilio", "telnyx"]},'
        ' "us": {"weights": {"twilio": 3, "telnyx": 1}}}}'
    )
    policy = Policy.load(str(path))
    assert route(example("NO"), Purpose.PROVISION, policy, ALL_UP, NOW).carrier == Carrier.SINCH
    assert route(example("GB"), Purpose.PROVISION, policy, ALL_UP, NOW).carrier == Carrier.TWILIO
    assert route(example("JP"), Purpose.PROVISION, policy, ALL_UP, NOW).carrier == Carrier.TELNYX
    # Weights: stable per number, about 3:1 over many numbers, failover when one is down.
    us = [f"+1212555{n:04d}" for n in range(2000)]
    picks = [route(n, Purpose.PROVISION, policy, ALL_UP, NOW).carrier for n in us]
    share = picks.count(Carrier.TWILIO) / len(picks)
    assert 0.70 < share < 0.80
    assert picks == [route(n, Purpose.PROVISION, policy, ALL_UP, NOW).carrier for n in us]
    assert all(
        route(n, Purpose.PROVISION, policy, TWILIO_DOWN, NOW).carrier == Carrier.TELNYX
        for n in us[:50]
    )
    assert Policy.load(path.read_text()) == policy


@pytest.mark.parametrize(
    "raw",
    [
        '{"default_order": ["verizon"]}',
        '{"countries": {"US": {}}}',
        '{"colour": 1}',
        '{"default_order": []}',
        '{"countries": {"US": {"weights": {"twilio": 0}}}}',
    ],
)
def test_bad_policy_files_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        Policy.load(raw)


@pytest.mark.parametrize("purpose", [Purpose.OUTBOUND, Purpose.INBOUND])
def test_calls_go_through_the_carrier_holding_the_number_subject_to_residency(
    purpose: Purpose,
) -> None:
    d = route(example("US"), purpose, Policy(), ALL_UP, NOW, holder=Carrier.TELNYX)
    assert d.carrier == Carrier.TELNYX and "which holds the" in d.reason
    with pytest.raises(RouteRefused, match="EU/EEA number"):
        route(example("DE"), purpose, Policy(), ALL_UP, NOW, holder=Carrier.TWILIO)
    d = route(example("DE"), purpose, Policy(), ALL_UP, NOW, holder=Carrier.SINCH)
    assert (d.carrier, d.region) == (Carrier.SINCH, "eu")
    if purpose == Purpose.OUTBOUND:
        with pytest.raises(RouteRefused, match="unavailable"):
            route(example("US"), purpose, Policy(), TWILIO_DOWN, NOW, holder=Carrier.TWILIO)
    else:  # the call arrived: the carrier works, whatever its API did a minute ago
        assert (
            route(example("US"), purpose, Policy(), TWILIO_DOWN, NOW, holder=Carrier.TWILIO).carrier
            == Carrier.TWILIO
        )
    unconfigured = Health(frozenset({Carrier.SINCH, Carrier.TELNYX}))
    with pytest.raises(RouteRefused, match="unavailable"):
        route(example("US"), purpose, Policy(), unconfigured, NOW, holder=Carrier.TWILIO)
    with pytest.raises(ValueError, match="holding"):
        route(example("US"), purpose, Policy(), ALL_UP, NOW)


@pytest.mark.parametrize("raw", ["12345", "+999123456", "+1", "not a number", ""])
def test_invalid_numbers(raw: str) -> None:
    with pytest.raises(InvalidNumber):
        country_of(raw)


def test_decision_metadata() -> None:
    d = Decision(Carrier.SINCH, "eu", "FR", "EU/EEA number (FR): EU carrier only")
    assert d.as_metadata() == {
        "carrier": "sinch",
        "region": "eu",
        "country": "FR",
        "reason": d.reason,
    }


# Random digits behind the calling code of an EU member state (or any code at all): whatever the
# number turns out to be, if it belongs to a residency country it never reaches a US carrier.
calling_codes = st.one_of(
    st.sampled_from(sorted(EU27)).map(phonenumbers.country_code_for_region),
    st.integers(min_value=1, max_value=999),
)
random_numbers = st.builds(
    lambda cc, rest: f"+{cc}{rest}", calling_codes, st.from_regex(r"[0-9]{4,12}", fullmatch=True)
)
# A real number of each member state with its last digits varied: mostly valid EU numbers.
eu_like = st.builds(
    lambda region, tail: example(region)[:-4] + tail,
    st.sampled_from(sorted(EU27 | {"IS", "LI", "NO"})),
    st.from_regex(r"[0-9]{4}", fullmatch=True),
)
numbers = st.one_of(eu_like, random_numbers)
health_states = st.builds(
    Health,
    available=st.frozensets(st.sampled_from(list(Carrier))),
    down_until=st.dictionaries(st.sampled_from(list(Carrier)), st.floats(NOW - 100, NOW + 100)),
)


@settings(max_examples=1000, deadline=None)
@given(
    number=numbers,
    health=health_states,
    purpose=st.sampled_from(list(Purpose)),
    caller=st.sampled_from(list(Carrier)),
    extra=st.frozensets(st.sampled_from(["IS", "LI", "NO"])),
)
def test_no_eu_number_is_ever_given_to_a_us_carrier(number, health, purpose, caller, extra) -> None:  # type: ignore[no-untyped-def]
    policy = Policy(residency_countries=EU27 | extra)
    try:
        d = route(number, purpose, policy, health, NOW, holder=caller)
    except (RouteRefused, InvalidNumber) as e:
        event(type(e).__name__)
        return  # failing closed is always allowed
    assert d.country == country_of(number)
    event(f"{d.region} -> {d.carrier}")
    if policy.resident(d.country):  # a member state, or a territory of one (RE is France)
        assert d.carrier not in US_CARRIERS and d.region == "eu"
    if d.region == "eu":
        assert d.carrier not in US_CARRIERS
    else:
        assert not policy.resident(d.country)


@pytest.mark.parametrize(("number", "country"), [("+15555550100", "US"), ("+33999999999", "FR")])
def test_numbers_of_no_known_range_take_the_main_country_of_their_code(
    number: str, country: str
) -> None:
    assert country_of(number) == country
    if country == "FR":  # fail closed: an unknown EU range is still EU
        assert route(number, Purpose.PROVISION, Policy(), ALL_UP, NOW).carrier == Carrier.SINCH
