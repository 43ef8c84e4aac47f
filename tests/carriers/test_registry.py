"""The carriers' registry: kits from settings, development accounts, partial settings refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carriers.base import Carrier, Kit, PublicUrls
from carriers.errors import CarrierUnavailable
from carriers.registry import DEV_SECRETS, Carriers, load_carriers
from carriers.settings import CarrierSettings, TwilioSettings
from carriers.sinch.kit import DEV_API_PORT as SINCH_DEV_PORT
from carriers.sinch.kit import SinchKit
from carriers.telnyx.kit import DEV_API_PORT as TELNYX_DEV_PORT
from carriers.telnyx.kit import TelnyxKit
from carriers.twilio.kit import TwilioKit
from tests.fakes.carrier_apis import fake_carriers, form


class Public:
    """:class:`PublicUrls` of https://voice.example.eu."""

    def public(self, path: str) -> str:
        return f"https://voice.example.eu{path}"

    def public_ws(self, path: str) -> str:
        return f"wss://voice.example.eu{path}"


def test_without_settings_the_development_accounts_are_created_once(tmp_path: Path) -> None:
    first = load_carriers(CarrierSettings(), tmp_path)
    assert set(first) == set(Carrier) and first.dev is not None
    stored = tmp_path / DEV_SECRETS
    assert stored.stat().st_mode & 0o777 == 0o600
    assert json.loads(stored.read_text()) == first.dev
    again = load_carriers(CarrierSettings(), tmp_path)
    assert again.dev == first.dev
    telnyx = again.of(Carrier.TELNYX, TelnyxKit)
    assert telnyx.account.api_base == f"http://127.0.0.1:{TELNYX_DEV_PORT}/v2"
    sinch = again.of(Carrier.SINCH, SinchKit)
    assert sinch.account.voice_base == f"http://127.0.0.1:{SINCH_DEV_PORT}"
    assert (
        again.of(Carrier.TWILIO, TwilioKit).account.auth_token == first.dev["twilio"]["auth_token"]
    )


def test_only_the_configured_carriers_have_kits(tmp_path: Path) -> None:
    settings = CarrierSettings(twilio=TwilioSettings(account_sid="AC1", auth_token="tok"))
    carriers = load_carriers(settings, tmp_path)
    assert list(carriers) == [Carrier.TWILIO] and carriers.dev is None
    assert not (tmp_path / DEV_SECRETS).exists()
    assert carriers.find(Carrier.SINCH, SinchKit) is None
    with pytest.raises(CarrierUnavailable, match="BONMONIQ_SINCH_"):
        carriers.kit(Carrier.SINCH)


def test_partial_credentials_are_refused(tmp_path: Path) -> None:
    settings = CarrierSettings(twilio=TwilioSettings(account_sid="AC1"))
    with pytest.raises(ValueError, match="partly configured: also set BONMONIQ_TWILIO_AUTH_TOKEN"):
        load_carriers(settings, tmp_path)


async def test_each_kit_dials_with_its_own_paths() -> None:
    fakes, kits = fake_carriers("AC" + "d" * 32, "tok")
    urls: PublicUrls = Public()
    for carrier in Carrier:
        kit: Kit = kits.kit(carrier)
        assert kit.carrier == carrier and kit.paths.media == f"/media/{carrier}"
        assert kit.paths.voice.startswith(f"/webhooks/{carrier}")
        await kit.dial(urls, "+13125550142", "+14155550199", "call_1", 930)
    twilio = form(fakes[Carrier.TWILIO].seen[-1])
    assert twilio["Url"] == ["https://voice.example.eu/webhooks/twilio/outbound?call_id=call_1"]
    assert twilio["StatusCallback"] == ["https://voice.example.eu/webhooks/twilio/status"]
    telnyx = json.loads(fakes[Carrier.TELNYX].seen[-1].content)
    assert telnyx["stream_url"] == "wss://voice.example.eu/media/telnyx"
    sinch = json.loads(json.loads(fakes[Carrier.SINCH].seen[-1].content)["customCallout"]["ice"])
    assert sinch["action"]["destination"]["endpoint"] == "wss://voice.example.eu/media/sinch"


def test_an_empty_registry_has_no_carrier() -> None:
    assert len(Carriers()) == 0 and Carriers().find(Carrier.TWILIO, TwilioKit) is None
