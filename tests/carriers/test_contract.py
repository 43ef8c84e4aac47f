"""Every carrier implements the same contract (carriers/base.py), module for module."""

from __future__ import annotations

import base64
import datetime as dt
import importlib
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from carriers.base import CallControl, Provisioning, WebhookRequest, WebhookVerifier
from carriers.sinch.control import SinchAccount, SinchControl
from carriers.sinch.signature import SinchVerifier
from carriers.telnyx.control import TelnyxAccount, TelnyxControl
from carriers.telnyx.signature import TelnyxVerifier
from carriers.twilio.control import TwilioAccount, TwilioControl
from carriers.twilio.signature import TwilioVerifier

MODULES = ("signature", "webhook", "media", "control", "simulator", "kit")


@pytest.mark.parametrize("carrier", ["twilio", "telnyx", "sinch"])
def test_each_carrier_has_the_same_modules(carrier: str) -> None:
    for module in MODULES:
        importlib.import_module(f"carriers.{carrier}.{module}")


def test_controls_implement_call_control_and_provisioning() -> None:
    for control in (
        TwilioControl(TwilioAccount("AC1", "t")),
        TelnyxControl(TelnyxAccount("k", "p", "c")),
        SinchControl(SinchAccount("a", "s", "p", "k", "s")),
    ):
        assert isinstance(control, CallControl) and isinstance(control, Provisioning)


def test_verifiers_share_one_interface_and_pass_their_vendor_vectors() -> None:
    twilio = TwilioVerifier("12345")
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675310"), ("Digits", "1234"),
              ("From", "+14158675310"), ("To", "+18005551212")]  # fmt: skip
    req = WebhookRequest("POST", "https://example.com/myapp.php?foo=1&bar=2", urlencode(params).encode(),
                         {"X-Twilio-Signature": "L/OH5YylLD5NRKLltdqwSvS0BnU=",
                          "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert twilio.verify(req, 0.0)

    sinch = SinchVerifier("669E367E-6BBA-48AB-AF15-266871C28135", "BeIukql3pTKJ8RGL5zo0DA==")
    body = b'{"event":"ace","callid":"822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257","timestamp":"2014-09-24T10:59:41Z","version":1}'
    req = WebhookRequest("POST", "https://voice.example.eu/sinch/callback/ace", body, {
        "authorization": "application 669E367E-6BBA-48AB-AF15-266871C28135:Tg6fMyo8mj9pYfWQ9ssbx3Tc1BNC87IEygAfLbJqZb4=",
        "content-type": "application/json", "x-timestamp": "2014-09-24T10:59:41Z"})  # fmt: skip
    at = dt.datetime(2014, 9, 24, 11, 0, tzinfo=dt.UTC).timestamp()
    assert sinch.verify(req, at)
    assert not sinch.verify(req, at + 3600)  # stale an hour later

    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()
    telnyx = TelnyxVerifier(public)
    body = b'{"data":{}}'
    sig = base64.b64encode(key.sign(b"1800000000|" + body)).decode()
    req = WebhookRequest("POST", "https://x/webhooks/telnyx", body,
                         {"telnyx-signature-ed25519": sig, "telnyx-timestamp": "1800000000"})  # fmt: skip
    assert telnyx.verify(req, 1_800_000_010)
    for verifier in (twilio, sinch, telnyx):
        assert isinstance(verifier, WebhookVerifier)
