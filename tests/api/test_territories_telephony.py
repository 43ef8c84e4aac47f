"""Number rental and outbound calls for numbers of the EU's territories (Réunion, Åland...) and their
non-EU neighbours, through Telephony against fakes of the carriers' REST APIs and a real Redis:
no EU number is ever searched, rented or dialled through a US carrier."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType

from calls.events import CallEventType
from calls.store import CallStore
from carriers.base import Carrier
from routing import Agent, Directory
from routing.errors import DestinationRefused, RouteRefused
from routing.policy import US_CARRIERS
from tenancy.limits import Limits
from tests.conftest import telnyx_sim
from tests.helpers import EU_TERRITORIES, valid_in

NEIGHBOURS = ["MC", "GI", "JE", "FO", "GL", "SJ", "PM", "AW", "CH"]
US_HELD = "+12125550101"  # rented from Twilio in each test
EU_HELD = "+33185001234"  # rented from Sinch


def numbers_of(region: str) -> list[str]:
    out = set()
    for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.VOIP):
        n = phonenumbers.example_number_for_type(region, kind)
        if n is not None:
            out.add(phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164))
    return sorted(out)


def seen_by_us_carriers(fakes, number: str) -> bool:  # type: ignore[no-untyped-def]
    digits = number.lstrip("+")
    return any(
        digits in (str(r.url) + r.content.decode(errors="replace"))
        for c in US_CARRIERS
        for r in fakes[c].seen
    )


@pytest.mark.parametrize("region", sorted(EU_TERRITORIES))
async def test_eu_territory_numbers_are_rented_and_dialled_through_sinch_only(  # type: ignore[no-untyped-def]
    world,
    region: str,
) -> None:
    telephony, fakes, _ = world
    agent = await telephony.directory.get_agent("bakery")
    await telephony.rent(US_HELD, agent)
    await telephony.rent(EU_HELD, agent)
    decision, _ = await telephony.search(region)
    assert decision.carrier == Carrier.SINCH
    for number in numbers_of(region):
        decision, rented, route = await telephony.rent(number, agent)
        assert (decision.carrier, rented.carrier, route.carrier) == (
            Carrier.SINCH,
            "sinch",
            "sinch",
        )
        with pytest.raises(RouteRefused, match="EU/EEA number"):
            await telephony.place_call(US_HELD, number)
        placed = await telephony.place_call(EU_HELD, number)
        assert placed.decision.carrier == Carrier.SINCH and placed.decision.region == "eu"
        # Its own calls out leave through Sinch too.
        placed = await telephony.place_call(number, "+33612345678")
        assert placed.decision.carrier == Carrier.SINCH
        assert not seen_by_us_carriers(fakes, number), number


async def test_a_territory_number_left_on_a_us_carrier_cannot_call_out(world) -> None:  # type: ignore[no-untyped-def]
    # A Réunion number rented through Twilio before Réunion counted as France.
    telephony, fakes, _ = world
    reunion = numbers_of("RE")[0]
    await telephony.directory.add_number(
        reunion, "bakery", holding={"carrier": "twilio", "carrier_id": "PN1"}
    )
    with pytest.raises(RouteRefused, match="EU/EEA number"):
        await telephony.place_call(reunion, "+14155550199")
    assert not fakes[Carrier.TWILIO].seen


@pytest.mark.parametrize("region", NEIGHBOURS)
async def test_neighbours_follow_the_operator_policy(world, region: str) -> None:  # type: ignore[no-untyped-def]
    telephony, fakes, _ = world
    agent = await telephony.directory.get_agent("bakery")
    await telephony.rent(US_HELD, agent)
    eu = {"FR", "FI", "DK", "NL", "ES", "IT", "NO"} | set(EU_TERRITORIES)
    own = [n for n in numbers_of(region) if not valid_in(n) & eu]
    assert own, f"no number of {region} outside EU ranges"  # shared ones: the routing tests
    for number in own:
        decision, rented, _ = await telephony.rent(number, agent)
        assert decision.carrier == Carrier.TWILIO and rented.carrier == "twilio", number
        placed = await telephony.place_call(US_HELD, number)
        assert placed.decision.carrier == Carrier.TWILIO and placed.decision.region == (
            "international"
        )


async def test_restricted_destinations_are_refused_unless_the_limits_allow_them(world) -> None:  # type: ignore[no-untyped-def]
    telephony, fakes, _ = world
    await telephony.rent(US_HELD, await telephony.directory.get_agent("bakery"))
    dials = len(fakes[Carrier.TWILIO].seen)
    for number in ("+19002345678", "+881612345678", "+18765551234"):
        with pytest.raises(DestinationRefused):
            await telephony.place_call(US_HELD, number)
        with pytest.raises(DestinationRefused):
            await telephony.place_call(US_HELD, number, limits=Limits(10, 10, 1000))
    assert len(fakes[Carrier.TWILIO].seen) == dials  # nothing dialled
    allowed = Limits(10, 10, 1000, frozenset({"premium_rate"}))
    placed = await telephony.place_call(US_HELD, "+19002345678", limits=allowed)
    record = await telephony.calls.get(placed.call_id)
    assert record is not None and record.routing is not None
    assert record.routing["destination"] == "premium_rate"
    with pytest.raises(DestinationRefused):
        await telephony.place_call(US_HELD, "+881612345678", limits=allowed)


@pytest.mark.parametrize("number", ["+262262161234", "+358181234567", "+590590271234"])
async def test_inbound_to_a_territory_number_on_a_us_carrier_is_refused(
    live_server, live_redis, number: str
) -> None:  # type: ignore[no-untyped-def]
    # Réunion, Åland, and a +590 range shared by Saint-Martin (EU) and Saint-Barthélemy.
    d = Directory(live_redis)
    await d.add_agent(Agent(name="desk", prompt="p"))
    await d.add_number(number, "desk")
    sim = telnyx_sim(live_server, number)
    async with sim.api:
        r = await sim.deliver(sim.envelope("call.initiated", state="parked"))
        assert r.status_code == 200
        action, _ = await sim.api.next_for(sim.ccid, 5)
    assert action == "hangup"
    call_id = (await live_redis.zrange("calls", 0, -1))[0]
    events = await CallStore(live_redis).events(call_id)
    assert events[0].type == CallEventType.REJECTED
    assert "may only be carried by sinch" in events[0].data["reason"]
