"""Who a data subject is, as the parties' digests name them: phone numbers and IP addresses."""

from __future__ import annotations

import os

from recordings.subjects import e164, ip_party, subject_ref

KEY = os.urandom(32)


def test_an_address_is_its_canonical_form_and_never_read_as_a_number() -> None:
    assert ip_party("203.0.113.7") == "203.0.113.7"
    assert ip_party(" ::FFFF:203.0.113.7 ") == "203.0.113.7"  # IPv4-mapped: one person
    assert ip_party("2001:DB8:0:0::1") == "2001:db8::1"
    assert ip_party("+33612345678") is None and ip_party("") is None
    # Dots are not separators of an address: two addresses stay two subjects.
    assert e164("1.23.4.5") != e164("12.3.4.5")
    assert subject_ref(KEY, "t", "1.23.4.5") != subject_ref(KEY, "t", "12.3.4.5")
    assert subject_ref(KEY, "t", "::ffff:10.0.0.1") == subject_ref(KEY, "t", "10.0.0.1")


def test_numbers_are_still_one_subject_however_written() -> None:
    same = {e164(n) for n in ("+33612345678", "33612345678", "0033 6 12 34 56 78")}
    assert same == {"+33612345678"}
