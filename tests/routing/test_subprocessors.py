"""The sub-processor register: the DPA's list, in force 30 days after notice."""

from __future__ import annotations

import datetime as dt

import pytest

from routing.subprocessors import NOTICE_DAYS, Entry, NotOnRegister, Register

TODAY = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def test_the_register_matches_the_dpa_list() -> None:
    register = Register.load()
    names = {e.name for e in register.in_force(TODAY)}
    assert names == {
        "Cloudflare Inc.",
        "Cloudflare Web Analytics",
        "Stripe Technology Europe Limited",
        "Qonto / Olinda SAS",
        "Twilio Inc.",
        "Sinch AB",
        "Telnyx LLC / Telnyx Ireland Limited",
    }
    for carrier in ("twilio", "telnyx", "sinch"):
        assert register.allows(carrier, TODAY)
    assert register.last_updated(TODAY) == dt.date(2026, 6, 21)  # the DPA's last-updated date


def test_whatsapp_is_refused_today() -> None:
    register = Register.load()
    assert not register.allows("whatsapp", TODAY)
    with pytest.raises(NotOnRegister, match="Meta Platforms Ireland Limited is planned"):
        register.require("whatsapp", TODAY)
    assert "Meta" not in str(register.published(TODAY))


def meta(notice: dt.date) -> Entry:
    return Entry(
        name="Meta Platforms Ireland Limited",
        channel="whatsapp",
        service="WhatsApp Business",
        location="Ireland, EU, with onward transfers to the United States",
        safeguards="SCCs",
        added=notice,
        notice=notice,
    )


def test_whatsapp_accepted_once_added_with_notice_more_than_30_days_before_now() -> None:
    notice = (TODAY - dt.timedelta(days=NOTICE_DAYS + 1)).date()
    register = Register.load().with_entry(meta(notice), "2026-11-26")
    assert register.allows("whatsapp", TODAY)
    assert register.require("whatsapp", TODAY).name == "Meta Platforms Ireland Limited"
    published = register.published(TODAY)
    assert published["version"] == "2026-11-26"
    assert published["last_updated"] == (notice + dt.timedelta(days=NOTICE_DAYS)).isoformat()
    assert any(e["name"].startswith("Meta") for e in published["subprocessors"])


@pytest.mark.parametrize("days_ago", [0, 1, 29])
def test_an_entry_within_its_notice_period_is_not_in_force(days_ago: int) -> None:
    notice = (TODAY - dt.timedelta(days=days_ago)).date()
    register = Register.load().with_entry(meta(notice), "next")
    assert not register.allows("whatsapp", TODAY)
    with pytest.raises(NotOnRegister, match="in force from"):
        register.require("whatsapp", TODAY)
    assert register.allows("whatsapp", TODAY + dt.timedelta(days=NOTICE_DAYS - days_ago))


def test_unknown_channel_and_bad_entries() -> None:
    with pytest.raises(NotOnRegister, match="not on the register"):
        Register.load().require("pigeon", TODAY)
    with pytest.raises(ValueError, match="notice"):
        Entry(name="X", service="s", location="l", safeguards="g")
    with pytest.raises(ValueError, match="status"):
        Entry(name="X", service="s", location="l", safeguards="g", status="maybe")
