"""X-Twilio-Signature: every vector of shared/docs/carriers.md, cross-checked with twilio-python."""

from __future__ import annotations

import hashlib

import pytest
from twilio.request_validator import RequestValidator

from carriers.twilio.signature import (
    compute_signature,
    signing_string,
    verify_request,
    verify_websocket,
)

TOKEN = "12345"
FORM = "application/x-www-form-urlencoded"
PARAMS_1 = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]
PARAMS_2 = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675309"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
]
REPEATED = [
    ("Sid", "CA123"),
    ("SidAccount", "AC123"),
    ("Digits", "5678"),
    ("Digits", "1234"),
    ("Digits", "1234"),
]
JSON_BODY = b'{"property": "value", "boolean": true}'
JSON_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"

# (url, params, expected) straight from shared/docs/carriers.md section 1.
VECTORS = [
    ("https://example.com/myapp.php?foo=1&bar=2", PARAMS_1, "L/OH5YylLD5NRKLltdqwSvS0BnU="),
    ("https://mycompany.com/myapp.php?foo=1&bar=2", PARAMS_2, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ("https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS_2, "kvajT1Ptam85bY51eRf/AJRuM3w="),
    ("http://mycompany.com:80/myapp.php?foo=1&bar=2", PARAMS_2, "0ZXoZLH/DfblKGATFgpif+LLRf4="),
    ("https://mycompany.com/myapp.php?foo=1&bar=2", REPEATED, "IK+Dwps556ElfBT0I3Rgjkr1wJU="),
]


class _MultiDict(dict):  # type: ignore[type-arg]
    """The getall() shape twilio-python reads repeated form fields through (as Flask's)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self._pairs = pairs

    def getall(self, name: str) -> list[str]:
        return [v for n, v in self._pairs if n == name]


def _form(params: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(params).encode()


def test_signing_string_of_the_first_vector() -> None:
    assert signing_string(VECTORS[0][0], PARAMS_1) == (
        "https://example.com/myapp.php?foo=1&bar=2CallSidCA1234567890ABCDECaller+14158675310"
        "Digits1234From+14158675310To+18005551212"
    )


@pytest.mark.parametrize(("url", "params", "expected"), VECTORS)
def test_vectors_compute(url: str, params: list[tuple[str, str]], expected: str) -> None:
    assert compute_signature(url, params, TOKEN) == expected


@pytest.mark.parametrize(("url", "params", "expected"), VECTORS)
def test_vectors_verify_and_twilio_agrees(
    url: str, params: list[tuple[str, str]], expected: str
) -> None:
    headers = {"x-twilio-signature": expected, "content-type": FORM}
    assert verify_request(url, _form(params), headers, TOKEN)
    # twilio-python's own validator reaches the same verdict on the same input.
    assert RequestValidator(TOKEN).validate(url, _MultiDict(params), expected)
    assert RequestValidator(TOKEN).compute_signature(url, _MultiDict(params)) == expected


def test_port_variants_verify_either_way() -> None:
    # Signed without the port, delivered with it (and the reverse): both accepted.
    without = "https://mycompany.com/myapp.php?foo=1&bar=2"
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    for url, sig in (
        (with_port, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        (without, "kvajT1Ptam85bY51eRf/AJRuM3w="),
    ):
        assert verify_request(
            url, _form(PARAMS_2), {"x-twilio-signature": sig, "content-type": FORM}, TOKEN
        )


def test_json_body_sha256_vector() -> None:
    url = f"https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={JSON_HASH}"
    assert hashlib.sha256(JSON_BODY).hexdigest() == JSON_HASH
    assert compute_signature(url, [], TOKEN) == "a9nBmqA0ju/hNViExpshrM61xv4="
    headers = {
        "x-twilio-signature": "a9nBmqA0ju/hNViExpshrM61xv4=",
        "content-type": "application/json",
    }
    assert verify_request(url, JSON_BODY, headers, TOKEN)
    assert RequestValidator(TOKEN).validate(url, JSON_BODY.decode(), "a9nBmqA0ju/hNViExpshrM61xv4=")
    # The body is covered through its hash: a changed body fails although the URL signature holds.
    tampered = verify_request(url, JSON_BODY.replace(b"true", b"false"), headers, TOKEN)
    assert not tampered and "bodySHA256" in tampered.reason


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        (lambda u, p, s, t: (u, p, "", t), "missing"),
        (lambda u, p, s, t: (u, p, s, "54321"), "does not match"),
        (lambda u, p, s, t: (u.replace("example.com", "evil.example"), p, s, t), "does not match"),
        (lambda u, p, s, t: (u, p[:-1], s, t), "does not match"),
        (lambda u, p, s, t: (u, [*p[:-1], ("To", "+18005551213")], s, t), "does not match"),
    ],
    ids=["missing", "wrong-token", "other-url", "dropped-param", "changed-param"],
)
def test_forgeries_are_refused(mutation, reason: str) -> None:  # type: ignore[no-untyped-def]
    url, params, sig = VECTORS[0]
    u, p, s, t = mutation(url, params, sig, TOKEN)
    verdict = verify_request(u, _form(p), {"x-twilio-signature": s, "content-type": FORM}, t)
    assert not verdict
    assert reason in verdict.reason


def test_websocket_upgrade_signature_with_or_without_trailing_slash() -> None:
    url = "wss://voice.example.com/media/twilio"
    sig = compute_signature(url, [], TOKEN)
    assert verify_websocket(url, {"x-twilio-signature": sig}, TOKEN)
    assert verify_websocket(url + "/", {"x-twilio-signature": sig}, TOKEN)
    assert not verify_websocket(
        "wss://other.example.com/media/twilio", {"x-twilio-signature": sig}, TOKEN
    )
    assert not verify_websocket(url, {}, TOKEN)
    assert RequestValidator(TOKEN).validate(url, {}, sig)
