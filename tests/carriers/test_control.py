"""Call control and numbers of each carrier against fakes of their documented REST APIs."""

from __future__ import annotations

import json

import pytest

from carriers.base import RentedNumber
from carriers.errors import CarrierApiError
from carriers.sinch.control import SinchAccount, SinchControl
from carriers.telnyx.control import TelnyxAccount, TelnyxControl
from carriers.twilio.control import TwilioAccount, TwilioControl
from tests.fakes.carrier_apis import FakeSinch, FakeTelnyx, FakeTwilio, form

SID, TOKEN = "AC" + "a" * 32, "token"
VOICE = "https://voice.example.com/webhooks/twilio/voice"


async def test_twilio_calls_and_numbers() -> None:
    fake = FakeTwilio(SID, TOKEN)
    t = TwilioControl(TwilioAccount(SID, TOKEN), transport=fake.transport())
    await t.hang_up("CA" + "1" * 32)
    await t.transfer("CA" + "1" * 32, "+15555550111")
    assert form(fake.seen[-1])["Twiml"] == [
        "<Response><Dial><Number>+15555550111</Number></Dial></Response>"
    ]
    # The caller's talk with the person is not cut at the limit the call was placed with.
    assert form(fake.seen[-1])["TimeLimit"] == ["14400"]
    assert (await t.place_call("+15555550100", "+15555550199", VOICE, VOICE)).startswith("CA")
    found = await t.search("us", area_code="415")
    assert found[0].number == "+14155550101" and found[0].carrier == "twilio"
    rented = await t.rent(found[0].number, VOICE, VOICE)
    assert rented.carrier_id.startswith("PN")
    await t.release(rented)
    assert [r.method for r in fake.seen] == ["POST", "POST", "POST", "GET", "POST", "DELETE"]


async def test_twilio_wrong_credentials_is_a_clear_error() -> None:
    fake = FakeTwilio(SID, TOKEN)
    t = TwilioControl(TwilioAccount(SID, "wrong"), transport=fake.transport())
    with pytest.raises(CarrierApiError, match="401"):
        await t.hang_up("CA" + "1" * 32)


async def test_telnyx_call_control_and_numbers() -> None:
    fake = FakeTelnyx("KEY123")
    t = TelnyxControl(TelnyxAccount("KEY123", "pub", "conn-1"), transport=fake.transport())
    await t.answer("v3:abc", "wss://voice.example.com/media/telnyx", {"call_id": "call_1"})
    await t.answer("v3:abc", "wss://voice.example.com/media/telnyx", {"call_id": "call_1"})
    (_, _, first), (_, _, again) = fake.commands
    assert first["command_id"] == again["command_id"]  # a retried answer is the same command
    await t.hang_up("v3:abc")
    await t.transfer("v3:abc", "+15555550111")
    assert [c[1] for c in fake.commands] == ["answer", "answer", "hangup", "transfer"]
    assert len({c[2]["command_id"] for c in fake.commands[2:]}) == 2
    assert (
        await t.place_call("+15555550100", "+15555550199", "wss://x/media/telnyx", {}) == "v3:out"
    )
    found = await t.search("US", contains="555")
    assert found[0].number == "+13125550142" and found[0].locality == "Chicago"
    rented = await t.rent(found[0].number, "", "")
    assert rented.carrier_id == "ord-1"
    await t.release(rented)


async def test_sinch_calls_and_numbers() -> None:
    fake = FakeSinch("appkey", "c2VjcmV0", "proj-1", "kid", "ksecret")
    s = SinchControl(
        SinchAccount("appkey", "c2VjcmV0", "proj-1", "kid", "ksecret"), transport=fake.transport()
    )
    await s.hang_up("call-1")
    await s.transfer("call-1", "+33185001111")
    assert [p[1]["action"]["name"] for p in fake.patches] == ["hangup", "connectPstn"]
    assert (
        await s.place_call("+33185001234", "+33185009999", "wss://x/media/sinch", {"call_id": "c"})
        == "out-1"
    )
    found = await s.search("fr")
    assert found[0].number == "+33185001234" and found[0].country == "FR"
    rented = await s.rent(found[0].number, "", "")
    assert rented == RentedNumber("sinch", "+33185001234", "+33185001234")
    await s.release(rented)
    numbers_calls = [r for r in fake.seen if r.url.host == "numbers.api.sinch.com"]
    assert [r.url.path.rsplit("/", 1)[-1] for r in numbers_calls] == [
        "availableNumbers",
        "+33185001234:rent",
        "+33185001234:release",
    ]
    assert json.loads(numbers_calls[1].content)["voiceConfiguration"]["appId"] == "appkey"


async def test_unreachable_api_is_a_carrier_error() -> None:
    import httpx

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route to host")

    t = TelnyxControl(TelnyxAccount("k", "p", "c"), transport=httpx.MockTransport(down))
    with pytest.raises(CarrierApiError, match="unreachable"):
        await t.hang_up("v3:x")
