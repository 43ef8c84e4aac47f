"""Territories of EU/EEA member states with region codes of their own: the table against ISO 3166-2
(pycountry), and every territory and its non-EU neighbours routed with their correct outcome."""

from __future__ import annotations

import phonenumbers
import pycountry
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from carriers.base import Carrier
from routing.errors import InvalidNumber, RouteRefused
from routing.policy import (
    EEA_EXTRA,
    EU27,
    US_CARRIERS,
    Health,
    Policy,
    Purpose,
    choose,
    country_of,
    route,
)
from routing.territories import member_state, territories
from tests.helpers import EU_TERRITORIES, valid_in

NOW = 1_800_000_000.0
ALL_UP = Health()
#: Neighbours and territories outside the EU/EEA, whatever state they belong to or border.
OUTSIDE = sorted(
    {
        "MC",
        "GI",
        "JE",
        "GG",
        "IM",
        "BL",
        "FO",
        "GL",
        "SJ",
        "PM",
        "NC",
        "PF",
        "WF",
        "AW",
        "CW",
        "SX",
        "BQ",
        "AD",
        "SM",
        "VA",
        "CH",
        "GB",
        "TR",
        "MA",
    }
)
#: Regions that share a calling code with an EU/EEA state but are independent states.
INDEPENDENT = {"VA"}
#: ISO 3166-2 types of the subdivisions that are overseas or non-European parts of a state.
OVERSEAS_TYPES = ("Overseas", "Country", "Special municipality", "Arctic region")
#: Overseas subdivisions without numbers of their own in the numbering plan.
NO_NUMBERS = {"FR-TF"}
TYPES = [
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.VOIP,
    PhoneNumberType.TOLL_FREE,
]


def examples(region: str) -> list[str]:
    """Example numbers of every type the numbering plan has for ``region``."""
    out = []
    for t in TYPES:
        n = phonenumbers.example_number_for_type(region, t)
        if n is not None:
            out.append(phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164))
    assert out, region
    return sorted(set(out))


def test_the_table_matches_iso_3166_2_in_pycountry() -> None:
    table = territories()
    for code, t in table.items():
        assert pycountry.countries.get(alpha_2=code) is not None, code
        assert code in phonenumbers.SUPPORTED_REGIONS, code
        assert t.state in EU27 | EEA_EXTRA, code
        for sub in t.subdivisions:
            found = pycountry.subdivisions.get(code=sub)
            assert found is not None and found.country_code == t.state, (code, sub)
    assert {c for c, t in table.items() if t.inside} == set(EU_TERRITORIES)
    assert all(table[c].state == s for c, s in EU_TERRITORIES.items())


def test_every_overseas_part_of_an_eu_or_eea_state_is_in_the_table() -> None:
    listed = {s for t in territories().values() for s in t.subdivisions}
    for state in sorted(EU27 | EEA_EXTRA):
        for sub in pycountry.subdivisions.get(country_code=state) or []:
            if sub.type.startswith(OVERSEAS_TYPES) and sub.code not in NO_NUMBERS:
                assert sub.code in listed, (sub.code, sub.name, sub.type)
    # Regions that dial through a member state's calling code (+358 18 Åland, +47 79 Svalbard).
    codes = {phonenumbers.country_code_for_region(s) for s in EU27 | EEA_EXTRA}
    for region in sorted(phonenumbers.SUPPORTED_REGIONS - EU27 - EEA_EXTRA):
        if phonenumbers.country_code_for_region(region) in codes:
            assert region in territories() or region in INDEPENDENT, region


@pytest.mark.parametrize("region", sorted(EU_TERRITORIES))
def test_eu_territories_are_their_member_state(region: str) -> None:
    assert member_state(region) == EU_TERRITORIES[region]
    for number in examples(region):
        # Ranges may be shared: Åland's mobiles are Finnish ones, Saint-Martin's are also
        # Guadeloupe's and Saint-Barthélemy's; the numbering plan names the first of them.
        assert region in valid_in(number)
        country = country_of(number)
        d = route(number, Purpose.PROVISION, Policy(), ALL_UP, NOW)
        assert (d.carrier, d.region, d.country) == (Carrier.SINCH, "eu", country), number
        if country == region:
            assert f"part of {EU_TERRITORIES[region]}" in d.reason
        with pytest.raises(RouteRefused, match="refused rather than routed through a US carrier"):
            route(number, Purpose.PROVISION, Policy(), Health(frozenset(US_CARRIERS)), NOW)
        for purpose in (Purpose.INBOUND, Purpose.OUTBOUND):
            for holder in US_CARRIERS:
                with pytest.raises(RouteRefused, match="EU/EEA number"):
                    route(number, purpose, Policy(), ALL_UP, NOW, holder=holder)
            d = route(number, purpose, Policy(), ALL_UP, NOW, holder=Carrier.SINCH)
            assert (d.carrier, d.region) == (Carrier.SINCH, "eu")
    # Searching numbers of the territory asks the EU carrier only.
    assert choose(region, region, Policy(), ALL_UP, NOW).carrier == Carrier.SINCH
    with pytest.raises(RouteRefused):
        choose(region, region, Policy(), Health(frozenset(US_CARRIERS)), NOW)


@pytest.mark.parametrize("region", OUTSIDE)
def test_neighbours_outside_the_eu_follow_the_operator_policy(region: str) -> None:
    assert member_state(region) == region
    eu = EU27 | set(EU_TERRITORIES)
    for number in examples(region):
        if valid_in(number) & eu:
            # A range the numbering plan shares with an EU region (Italian mobiles of the
            # Vatican, Saint-Barthélemy's numbers, also Guadeloupe's or Saint-Martin's).
            assert route(number, Purpose.PROVISION, Policy(), ALL_UP, NOW).carrier == (
                Carrier.SINCH
            )
            continue
        d = route(number, Purpose.PROVISION, Policy(), ALL_UP, NOW)
        assert (d.carrier, d.region) == (Carrier.TWILIO, "international"), number
        for purpose in (Purpose.INBOUND, Purpose.OUTBOUND):
            d = route(number, purpose, Policy(), ALL_UP, NOW, holder=Carrier.TELNYX)
            assert (d.carrier, d.region) == (Carrier.TELNYX, "international")
    assert choose(region, region, Policy(), ALL_UP, NOW).carrier == Carrier.TWILIO


@pytest.mark.parametrize(
    "region", ["MC", "GI", "JE", "FO", "GL", "GG", "IM", "AD", "SM", "CH", "GB", "PM", "NC"]
)
def test_non_eu_neighbours_numbers_are_international(region: str) -> None:
    for number in examples(region):
        assert not valid_in(number) & (EU27 | set(EU_TERRITORIES)), number
        assert route(number, Purpose.PROVISION, Policy(), ALL_UP, NOW).carrier == Carrier.TWILIO


def test_saint_barthelemy_numbers_are_indistinguishable_from_eu_ones_so_eu_carrier_only() -> None:
    # Saint-Barthélemy left the EU in 2012, but every range the numbering plan gives it is also
    # a range of Guadeloupe or Saint-Martin (EU): such a number is treated as EU (fail closed).
    for number in ["+590590271234", "+590590281234", "+590690001234", "+590590871234"]:
        assert "BL" in valid_in(number) and valid_in(number) & {"GP", "MF"}
        d = route(number, Purpose.PROVISION, Policy(), ALL_UP, NOW)
        assert d.carrier == Carrier.SINCH and d.region == "eu", number
        for holder in US_CARRIERS:
            with pytest.raises(RouteRefused, match="EU/EEA number"):
                route(number, Purpose.OUTBOUND, Policy(), ALL_UP, NOW, holder=holder)
    d = route("+590590271234", Purpose.PROVISION, Policy(), ALL_UP, NOW)
    assert d.country == "BL" and "range shared with MF, part of FR" in d.reason
    assert member_state("BL") == "BL" and not territories()["BL"].inside


def test_svalbard_is_outside_the_eea_unless_the_operator_adds_it() -> None:
    svalbard = "+4779123456"  # +47 79: Svalbard's own range (its mobiles are Norway's)
    assert valid_in(svalbard) == {"SJ"}
    with_norway = Policy.from_dict({"add_residency_countries": ["NO"]})
    assert route(svalbard, Purpose.PROVISION, with_norway, ALL_UP, NOW).carrier == Carrier.TWILIO
    assert route(examples("NO")[0], Purpose.PROVISION, with_norway, ALL_UP, NOW).carrier == (
        Carrier.SINCH
    )
    both = Policy.from_dict({"add_residency_countries": ["NO", "SJ"]})
    assert route(svalbard, Purpose.PROVISION, both, ALL_UP, NOW).carrier == Carrier.SINCH


# The property: numbers of every EU/EEA state, every territory and the neighbours, valid ones
# (example numbers with their last digits varied) and random digits behind their calling codes.
# The oracle is the numbering plan's own region (or the main region of the calling code) against
# the hand-written sets above, not the table under test.
REGIONS = sorted(set(EU27 | EEA_EXTRA) | set(EU_TERRITORIES) | set(OUTSIDE))
varied = st.builds(
    lambda number, tail: number[: -len(tail)] + tail,
    st.sampled_from([n for r in REGIONS for n in examples(r)]),
    st.from_regex(r"[0-9]{1,4}", fullmatch=True),
)
random_digits = st.builds(
    lambda region, rest: f"+{phonenumbers.country_code_for_region(region)}{rest}",
    st.sampled_from(REGIONS),
    st.from_regex(r"[0-9]{4,12}", fullmatch=True),
)
health_states = st.builds(
    Health,
    available=st.frozensets(st.sampled_from(list(Carrier))),
    down_until=st.dictionaries(st.sampled_from(list(Carrier)), st.floats(NOW - 100, NOW + 100)),
)


@settings(max_examples=1500, deadline=None)
@given(
    number=st.one_of(varied, random_digits),
    health=health_states,
    purpose=st.sampled_from(list(Purpose)),
    holder=st.sampled_from(list(Carrier)),
    extra=st.frozensets(st.sampled_from(sorted(EEA_EXTRA))),
)
def test_no_eu_number_of_any_territory_reaches_a_us_carrier(  # type: ignore[no-untyped-def]
    number, health, purpose, holder, extra
) -> None:
    policy = Policy(residency_countries=EU27 | extra)
    eu = set(EU27 | extra) | set(EU_TERRITORIES)
    try:
        d = route(number, purpose, policy, health, NOW, holder=holder)
    except (RouteRefused, InvalidNumber) as e:
        event(type(e).__name__)
        return  # failing closed is always allowed
    regions = valid_in(number)
    event(f"{'eu' if regions & eu else 'other'} -> {d.carrier}")
    if regions & eu:
        assert d.carrier not in US_CARRIERS and d.region == "eu", (number, regions)
    else:
        assert d.region == "international", (number, regions)
