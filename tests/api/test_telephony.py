"""Numbers and outbound calls through the router, against fakes of the carriers' REST APIs."""

from __future__ import annotations

import base64
import json

import pytest

from calls.events import CallEventType
from carriers.base import Carrier
from carriers.errors import CarrierUnavailable
from carriers.registry import Carriers
from carriers.sinch.control import SinchAccount
from carriers.sinch.kit import SinchKit
from carriers.twilio.control import TwilioAccount
from carriers.twilio.kit import TwilioKit
from routing.errors import RouteRefused
from routing.policy import Health
from tests.conftest import WORLD_PUBLIC_URL as PUBLIC
from tests.conftest import WORLD_SID as SID
from tests.conftest import WORLD_TOKEN as TOKEN
from tests.fakes.carrier_apis import form


async def test_search_goes_to_the_carrier_the_policy_picks(world) -> None:  # type: ignore[no-untyped-def]
    telephony, fakes, _ = world
    decision, found = await telephony.search("FR")
    assert decision.carrier == Carrier.SINCH and found[0].number.startswith("+33")
    decision, found = await telephony.search("US", area_code="212")
    assert decision.carrier == Carrier.TWILIO and found[0].number == "+12125550101"
    decision, found = await telephony.search("CA")
    assert decision.carrier == Carrier.TELNYX and found[0].carrier == "telnyx"


async def test_eu_search_with_sinch_down_is_refused_not_rerouted(world) -> None:  # type: ignore[no-untyped-def]
    telephony, fakes, health = world
    health["value"] = Health(frozenset({Carrier.TWILIO, Carrier.TELNYX}))
    with pytest.raises(RouteRefused, match="refused rather than routed through a US carrier"):
        await telephony.search("DE")
    assert not fakes[Carrier.TWILIO].seen and not fakes[Carrier.TELNYX].seen


async def test_rent_points_the_number_at_the_platform_and_records_the_decision(world) -> None:  # type: ignore[no-untyped-def]
    telephony, fakes, _ = world
    decision, rented, route = await telephony.rent(
        "+33185001234", await telephony.directory.get_agent("bakery")
    )
    assert (decision.carrier, rented.carrier, route.carrier) == (Carrier.SINCH, "sinch", "sinch")
    decision, rented, route = await telephony.rent(
        "+12125550101", await telephony.directory.get_agent("bakery")
    )
    assert decision.carrier == Carrier.TWILIO and rented.carrier_id.startswith("PN")
    buy = form(fakes[Carrier.TWILIO].seen[-1])
    assert buy["VoiceUrl"] == [f"{PUBLIC}/webhooks/twilio/voice"] and buy["StatusCallback"] == [
        f"{PUBLIC}/webhooks/twilio/status"
    ]
    raw = await telephony.directory.redis.hgetall("number:+12125550101")
    assert raw["carrier"] == "twilio" and raw["routing_region"] == "international"
    released = await telephony.release("+12125550101")
    assert released is not None and fakes[Carrier.TWILIO].seen[-1].method == "DELETE"
    assert await telephony.directory.lookup("+12125550101") is None


async def test_outbound_leaves_through_the_holder_subject_to_residency(world) -> None:  # type: ignore[no-untyped-def]
    telephony, fakes, health = world
    await telephony.rent(
        "+12125550101", await telephony.directory.get_agent("bakery")
    )  # held by Twilio
    await telephony.rent(
        "+33185001234", await telephony.directory.get_agent("bakery")
    )  # held by Sinch
    with pytest.raises(RouteRefused, match="EU/EEA number"):
        await telephony.place_call("+12125550101", "+33612345678")  # EU destination via Twilio
    placed = await telephony.place_call("+12125550101", "+14155550199")
    assert placed.decision.carrier == Carrier.TWILIO and placed.carrier_call_id.startswith("CA")
    dial = form(fakes[Carrier.TWILIO].seen[-1])
    assert dial["Url"] == [f"{PUBLIC}/webhooks/twilio/outbound?call_id={placed.call_id}"]
    record = await telephony.calls.get(placed.call_id)
    assert record is not None and (record.direction, record.state, record.carrier_call_id) == (
        "outbound",
        "queued",
        placed.carrier_call_id,
    )
    assert record.routing is not None and record.routing["carrier"] == "twilio"
    assert [e.type for e in await telephony.calls.events(placed.call_id)] == [
        CallEventType.OUTBOUND
    ]
    eu = await telephony.place_call("+33185001234", "+33612345678")
    assert eu.decision.carrier == Carrier.SINCH and eu.decision.region == "eu"
    callout = json.loads(fakes[Carrier.SINCH].seen[-1].content)
    ice = json.loads(callout["customCallout"]["ice"])
    assert ice["action"]["destination"]["endpoint"] == "wss://voice.example.eu/media/sinch"
    assert ice["action"]["callHeaders"] == [{"key": "call_id", "value": eu.call_id}]


async def test_outbound_through_telnyx_carries_the_call_id(world) -> None:  # type: ignore[no-untyped-def]
    telephony, fakes, _ = world
    await telephony.directory.add_number(
        "+13125550142", "bakery", holding={"carrier": "telnyx", "carrier_id": "x"}
    )
    placed = await telephony.place_call("+13125550142", "+14155550199")
    body = json.loads(fakes[Carrier.TELNYX].seen[-1].content)
    assert (
        body["connection_id"] == "conn-9"
        and body["stream_url"] == "wss://voice.example.eu/media/telnyx"
    )
    assert json.loads(base64.b64decode(body["client_state"])) == {"call_id": placed.call_id}


async def test_numbers_not_ours_and_unconfigured_carriers(world) -> None:  # type: ignore[no-untyped-def]
    telephony, _, _ = world
    with pytest.raises(RouteRefused, match="not one of your numbers"):
        await telephony.place_call("+19995550100", "+14155550199")
    await telephony.directory.add_number("+12125550999", "bakery")  # added by hand
    with pytest.raises(RouteRefused, match="not rented"):
        await telephony.place_call("+12125550999", "+14155550199")
    telephony.numbers.carriers = Carriers()
    with pytest.raises(CarrierUnavailable):
        await telephony.search("US")


async def test_a_failing_carrier_api_is_marked_down_and_search_fails_over(world) -> None:  # type: ignore[no-untyped-def]
    import httpx

    telephony, fakes, health = world
    down: dict[Carrier, float] = {}

    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"message": "Service Unavailable"})

    numbers = telephony.numbers
    numbers.carriers = Carriers(
        [
            numbers.carriers.kit(Carrier.TELNYX),
            TwilioKit(TwilioAccount(SID, TOKEN), transport=httpx.MockTransport(failing)),
            SinchKit(
                SinchAccount("app", "c2VjcmV0", "proj", "kid", "ks"),
                transport=httpx.MockTransport(failing),
            ),
        ]
    )
    numbers.health = lambda now: Health(down_until=dict(down))
    numbers.mark_down = down.__setitem__
    decision, found = await telephony.search("US")
    assert decision.carrier == Carrier.TELNYX and "failover from twilio" in decision.reason
    assert Carrier.TWILIO in down and found[0].carrier == "telnyx"
    # An EU search whose only carrier fails is refused: it never falls over to a US carrier.
    with pytest.raises(RouteRefused, match="refused rather than routed through a US carrier"):
        await telephony.search("FR")
    assert Carrier.SINCH in down and not fakes[Carrier.TWILIO].seen
