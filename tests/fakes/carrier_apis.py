"""Fakes of the carriers' REST APIs (httpx MockTransport): each checks the exact request the
carrier documents and answers with the documented response shape. They record what they saw."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import httpx


@dataclass
class FakeApi:
    """A recording MockTransport; ``routes`` maps (method, path regex) to a handler."""

    expected_auth: str
    seen: list[httpx.Request] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.headers.get("authorization") != self.expected_auth:
            return httpx.Response(401, json={"error": "unauthorized"})
        for (method, pattern), handler in self.routes().items():
            m = re.fullmatch(pattern, request.url.path)
            if m and request.method == method:
                return handler(request, *m.groups())
        return httpx.Response(404, json={"error": f"no route {request.method} {request.url.path}"})

    def routes(self) -> dict[tuple[str, str], object]:  # pragma: no cover - overridden
        raise NotImplementedError


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def form(request: httpx.Request) -> dict[str, list[str]]:
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    return parse_qs(request.content.decode())


def dial_of(twiml: str) -> tuple[str, str | None]:
    """The number and whisper URL of a transfer's ``<Response><Dial><Number url>``."""
    root = ElementTree.fromstring(twiml)
    assert root.tag == "Response" and [c.tag for c in root] == ["Dial"]
    numbers = list(root[0])
    assert [n.tag for n in numbers] == ["Number"] and not (root[0].text or "").strip()
    number, url = (numbers[0].text or "").strip(), numbers[0].get("url")
    assert re.fullmatch(r"\+[1-9]\d{6,14}", number)
    assert url is None or url.startswith(("https://", "http://"))
    return number, url


class FakeTwilio(FakeApi):
    def __init__(self, sid: str, token: str) -> None:
        super().__init__(basic(sid, token))
        self.sid = sid
        #: (CallSid, number, whisper URL or None) of each transfer asked.
        self.transfers: list[tuple[str, str, str | None]] = []
        #: The form of each outbound call placed.
        self.dials: list[dict[str, list[str]]] = []

    def routes(self):  # type: ignore[no-untyped-def]
        root = rf"/2010-04-01/Accounts/{self.sid}"

        def update_call(req: httpx.Request, call_sid: str) -> httpx.Response:
            f = form(req)
            assert f.get("Status") == ["completed"] or "Twiml" in f
            if "Twiml" in f:  # Modify a call in progress: <Dial><Number [url]>
                assert all(v.isdigit() and 0 < int(v) <= 14400 for v in f.get("TimeLimit", []))
                number, url = dial_of(f["Twiml"][0])
                self.transfers.append((call_sid, number, url))
                return httpx.Response(200, json={"sid": call_sid, "status": "in-progress"})
            return httpx.Response(200, json={"sid": call_sid, "status": "completed"})

        def create_call(req: httpx.Request) -> httpx.Response:
            f = form(req)
            assert {"To", "From", "Url"} <= set(f)
            # TimeLimit: a positive number of seconds, at most Twilio's 4 hours.
            assert all(v.isdigit() and 0 < int(v) <= 14400 for v in f.get("TimeLimit", []))
            # Answering Machine Detection (Call resource, create): documented values only; the
            # asynchronous mode needs its callback URL.
            if "MachineDetection" in f:
                assert f["MachineDetection"] in (["Enable"], ["DetectMessageEnd"])
                assert f.get("AsyncAmd") == ["true"]
                assert f["AsyncAmdStatusCallback"][0].startswith(("https://", "http://"))
                assert f.get("AsyncAmdStatusCallbackMethod", ["POST"]) == ["POST"]
            else:
                assert not {k for k in f if k.startswith("AsyncAmd")}
            self.dials.append(f)
            return httpx.Response(201, json={"sid": "CA" + "f" * 32, "status": "queued"})

        def available(req: httpx.Request, cc: str) -> httpx.Response:
            assert req.url.params["VoiceEnabled"] == "true"
            area = req.url.params.get("AreaCode", "415")
            return httpx.Response(
                200,
                json={
                    "available_phone_numbers": [
                        {
                            "friendly_name": f"({area}) 555-0101",
                            "phone_number": f"+1{area}5550101",
                            "locality": "San Francisco",
                            "iso_country": cc,
                            "capabilities": {"voice": True, "SMS": True, "MMS": False},
                        }
                    ],
                    "uri": req.url.path,
                },
            )

        def buy(req: httpx.Request) -> httpx.Response:
            f = form(req)
            assert f["VoiceMethod"] == ["POST"] and f["VoiceUrl"][0].endswith(
                "/webhooks/twilio/voice"
            )
            return httpx.Response(
                201, json={"sid": "PN" + "1" * 32, "phone_number": f["PhoneNumber"][0]}
            )

        def release(req: httpx.Request, pn: str) -> httpx.Response:
            return httpx.Response(204)

        return {
            ("POST", rf"{root}/Calls/(CA\w+)\.json"): update_call,
            ("POST", rf"{root}/Calls\.json"): create_call,
            ("GET", rf"{root}/AvailablePhoneNumbers/([A-Z]{{2}})/Local\.json"): available,
            ("POST", rf"{root}/IncomingPhoneNumbers\.json"): buy,
            ("DELETE", rf"{root}/IncomingPhoneNumbers/(PN\w+)\.json"): release,
        }


class FakeTelnyx(FakeApi):
    def __init__(self, api_key: str) -> None:
        super().__init__(f"Bearer {api_key}")
        self.commands: list[tuple[str, str, dict]] = []  # type: ignore[type-arg]

    def routes(self):  # type: ignore[no-untyped-def]
        def action(req: httpx.Request, ccid: str, name: str) -> httpx.Response:
            body = json.loads(req.content)
            assert req.headers["content-type"] == "application/json" and body.get("command_id")
            if name == "answer":
                assert (
                    body["stream_bidirectional_mode"] == "rtp"
                    and body["stream_bidirectional_codec"] == "PCMU"
                )
                assert body["stream_url"].startswith(("ws://", "wss://"))
                base64.b64decode(body["client_state"], validate=True)
            if name == "transfer":  # actions/transfer: to (required), audio_url, timeout_secs
                assert re.fullmatch(r"\+[1-9]\d{6,14}", body["to"])
                assert set(body) <= {
                    "to",
                    "from",
                    "audio_url",
                    "timeout_secs",
                    "time_limit_secs",
                    "client_state",
                    "command_id",
                }
                assert body.get("audio_url", "https://x.wav").endswith(".wav")
                assert 5 <= body.get("timeout_secs", 30) <= 600
                assert 30 <= body.get("time_limit_secs", 14400) <= 14400
                base64.b64decode(body.get("client_state", ""), validate=True)
            if name == "reject":  # the documented causes
                assert body["cause"] in ("CALL_REJECTED", "USER_BUSY")
            self.commands.append((ccid, name, body))
            return httpx.Response(200, json={"data": {"result": "ok"}})

        def dial(req: httpx.Request) -> httpx.Response:
            body = json.loads(req.content)
            assert {"connection_id", "to", "from"} <= set(body)
            limit = body.get("time_limit_secs", 14400)  # Telnyx's default and maximum
            assert isinstance(limit, int) and 0 < limit <= 14400
            amd = body.get("answering_machine_detection", "disabled")
            assert amd in (
                "disabled",
                "detect",
                "detect_beep",
                "detect_words",
                "greeting_end",
                "premium",
            ), amd
            self.commands.append(("", "dial", body))
            return httpx.Response(
                200,
                json={
                    "data": {
                        "call_control_id": "v3:out",
                        "call_leg_id": "l",
                        "call_session_id": "s",
                        "record_type": "call",
                    }
                },
            )

        def available(req: httpx.Request) -> httpx.Response:
            assert req.url.params["filter[features]"] == "voice"
            cc = req.url.params["filter[country_code]"]
            return httpx.Response(
                200,
                json={
                    "data": [
                        {
                            "record_type": "available_phone_number",
                            "phone_number": "+13125550142",
                            "region_information": [
                                {"region_name": "Chicago", "region_type": "rate_center"}
                            ],
                            "features": [{"name": "voice"}],
                            "cost_information": {"currency": "USD"},
                        }
                    ],
                    "metadata": {"total_results": 1},
                    "url": cc,
                },
            )

        def order(req: httpx.Request) -> httpx.Response:
            body = json.loads(req.content)
            assert body["connection_id"] and body["phone_numbers"][0]["phone_number"].startswith(
                "+"
            )
            return httpx.Response(
                200,
                json={
                    "data": {
                        "id": "ord-1",
                        "record_type": "number_order",
                        "status": "pending",
                        "phone_numbers": body["phone_numbers"],
                    }
                },
            )

        def release(req: httpx.Request, number: str) -> httpx.Response:
            return httpx.Response(200, json={"data": {"phone_number": number}})

        return {
            ("POST", r"/v2/calls/([^/]+)/actions/(answer|hangup|transfer|reject)"): action,
            ("POST", r"/v2/calls"): dial,
            ("GET", r"/v2/available_phone_numbers"): available,
            ("POST", r"/v2/number_orders"): order,
            ("DELETE", r"/v2/phone_numbers/([^/]+)"): release,
        }


class FakeSinch(FakeApi):
    """Voice (app key/secret) and Numbers (project key) share one transport; auth per host."""

    def __init__(
        self, app_key: str, app_secret: str, project: str, key_id: str, key_secret: str
    ) -> None:
        super().__init__(basic(app_key, app_secret))
        self.numbers_auth = basic(key_id, key_secret)
        self.project = project
        self.patches: list[tuple[str, dict]] = []  # type: ignore[type-arg]
        self.callouts: list[dict] = []  # type: ignore[type-arg]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "numbers.api.sinch.com":
            saved, self.expected_auth = self.expected_auth, self.numbers_auth
            try:
                return super().handle(request)
            finally:
                self.expected_auth = saved
        return super().handle(request)

    def routes(self):  # type: ignore[no-untyped-def]
        proj = rf"/v1/projects/{self.project}"

        def patch(req: httpx.Request, call_id: str) -> httpx.Response:
            svaml = json.loads(req.content)
            assert svaml["action"]["name"] in ("hangup", "connectPstn")
            if svaml["action"]["name"] == "connectPstn":  # SVAML connectPstn: number (E.164)
                assert re.fullmatch(r"\+[1-9]\d{6,14}", svaml["action"]["number"])
                assert set(svaml["action"]) <= {"name", "number", "cli", "maxDuration"}
            self.patches.append((call_id, svaml))
            return httpx.Response(204)

        def callout(req: httpx.Request) -> httpx.Response:
            body = json.loads(req.content)
            assert body["method"] == "customCallout"
            action = json.loads(body["customCallout"]["ice"])["action"]
            assert action["name"] == "connectStream"
            assert 0 < action.get("maxDuration", 14400) <= 14400  # Sinch's documented maximum
            if "amd" in action:  # AMD v2: {"enabled": bool, "async": bool} on the ICE action
                assert set(action["amd"]) <= {"enabled", "async"}
                assert all(isinstance(v, bool) for v in action["amd"].values())
            self.callouts.append(body)
            return httpx.Response(200, json={"callId": "out-1"})

        def available(req: httpx.Request) -> httpx.Response:
            assert req.url.params["type"] == "LOCAL" and req.url.params["capabilities"] == "VOICE"
            region = req.url.params["regionCode"]
            return httpx.Response(
                200,
                json={
                    "availableNumbers": [
                        {
                            "phoneNumber": "+33185001234",
                            "regionCode": region,
                            "type": "LOCAL",
                            "capability": ["VOICE"],
                            "setupPrice": {"currencyCode": "EUR", "amount": "0"},
                            "monthlyPrice": {"currencyCode": "EUR", "amount": "1"},
                        }
                    ]
                },
            )

        def rent(req: httpx.Request, number: str) -> httpx.Response:
            body = json.loads(req.content)
            assert (
                body["voiceConfiguration"]["type"] == "RTC" and body["voiceConfiguration"]["appId"]
            )
            return httpx.Response(
                200,
                json={
                    "phoneNumber": number,
                    "projectId": self.project,
                    "regionCode": "FR",
                    "type": "LOCAL",
                    "voiceConfiguration": body["voiceConfiguration"],
                },
            )

        def release(req: httpx.Request, number: str) -> httpx.Response:
            return httpx.Response(200, json={"phoneNumber": number, "projectId": self.project})

        return {
            ("PATCH", r"/calling/v1/calls/id/([^/]+)"): patch,
            ("POST", r"/calling/v1/callouts"): callout,
            ("GET", rf"{proj}/availableNumbers"): available,
            ("POST", rf"{proj}/availableNumbers/(\+\d+):rent"): rent,
            ("POST", rf"{proj}/activeNumbers/(\+\d+):release"): release,
        }


#: A Telnyx account's webhook-signing public key (base64 Ed25519; its webhooks are not signed here).
TELNYX_PUBLIC_KEY = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def fake_carriers(sid: str, token: str) -> tuple[dict[Any, FakeApi], Any]:
    """The three carriers' REST fakes, and the carriers' kits talking to them (a registry)."""
    from carriers.base import Carrier
    from carriers.registry import Carriers
    from carriers.sinch.control import SinchAccount
    from carriers.sinch.kit import SinchKit
    from carriers.telnyx.control import TelnyxAccount
    from carriers.telnyx.kit import TelnyxKit
    from carriers.twilio.control import TwilioAccount
    from carriers.twilio.kit import TwilioKit

    twilio, telnyx = FakeTwilio(sid, token), FakeTelnyx("KEY1")
    sinch = FakeSinch("app", "c2VjcmV0", "proj", "kid", "ks")
    fakes: dict[Any, FakeApi] = {
        Carrier.TWILIO: twilio,
        Carrier.TELNYX: telnyx,
        Carrier.SINCH: sinch,
    }
    kits = Carriers(
        [
            TwilioKit(TwilioAccount(sid, token), transport=twilio.transport()),
            TelnyxKit(
                TelnyxAccount("KEY1", TELNYX_PUBLIC_KEY, "conn-9"), transport=telnyx.transport()
            ),
            SinchKit(
                SinchAccount("app", "c2VjcmV0", "proj", "kid", "ks"), transport=sinch.transport()
            ),
        ]
    )
    return fakes, kits
