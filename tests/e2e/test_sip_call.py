"""End to end over SIP: SIPp as the customer's PBX calls a SIP account of the running platform.

The platform (the shared scripted server, its SIP stack on a loopback port) registers the
account at a SIPp registrar, then SIPp INVITEs the account with an
SDP whose media port is this test's own UDP socket (it records the platform's RTP) and plays
the caller's question as a PCMU pcap (tests/sip_helpers.py). The real speech models hear and
speak; the scripted LLM answers. In a first call the caller presses 9 (the objection to the
recording, as RFC 4733 events) and hangs up while the agent is answering; a second call after it runs to the agent's answer, and the agent hangs up (BYE).
"""

from __future__ import annotations

import asyncio
import audioop
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.state import CallState
from carriers.sip.codec import PCMU, RtpMalformed, decode, parse_rtp
from routing import Agent, Directory
from tests.conftest import LiveServer, call_store
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.helpers import auth, hear, new_tenant, pause, say, until
from tests.sip_helpers import (
    REGISTRAR_PASSWORD,
    REGISTRAR_USERNAME,
    SippRegistrar,
    free_udp_port,
    read_pcap,
    rtp_packets,
    write_pcap,
)
from voice.announcement import announcement_for
from voice.engines import PHONE_RATE, synthesize

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) missing"),
]
SIPP = Path(__file__).resolve().parents[1] / "fixtures" / "sipp"
SCENARIO = SIPP / "invite_uac.xml"
QUESTION = "What time do you open on Saturday?"
ANSWER = "We open at nine on Saturday morning."
#: A 20 ms packet louder than this is speech (G.711 silence decodes to a few units).
LOUD_RMS = 300


@pytest.fixture
def registrar(tmp_path: Path) -> Iterator[SippRegistrar]:
    r = SippRegistrar(tmp_path)
    yield r
    r.stop()


class RtpRecorder:
    """The SDP's media address: this test's UDP socket, recording the platform's RTP."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_udp_port(even=True)))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.packets: list[bytes] = []

    def drain(self) -> None:
        while True:
            try:
                self.packets.append(self.sock.recv(2048))
            except BlockingIOError:
                return

    def audio(self) -> list[bytes]:
        """The 20 ms frames received, as 16-bit PCM, in order."""
        frames = []
        for data in self.packets:
            try:
                packet = parse_rtp(data)
            except RtpMalformed:
                continue
            if packet.payload_type == PCMU:
                frames.append(decode(packet.payload, PCMU))
        return frames

    def close(self) -> None:
        self.sock.close()


async def place_call(
    sip_port: int, account_id: str, pcap: Path, wait_ms: int, work: Path
) -> tuple[int, RtpRecorder]:
    """SIPp calls ``account_id``, plays ``pcap`` and hangs up ``wait_ms`` after it starts."""
    scenario = work / f"invite-{wait_ms}.xml"
    scenario.write_text(SCENARIO.read_text().replace("@WAIT_MS@", str(wait_ms)))
    rtp = RtpRecorder()
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(scenario), f"127.0.0.1:{sip_port}", "-i", "127.0.0.1",
        "-p", str(free_udp_port()), "-mi", "127.0.0.1", "-mp", str(free_udp_port(even=True)),
        "-s", account_id, "-key", "pcap", str(pcap), "-key", "rtpport", str(rtp.port),
        "-m", "1", "-timeout", "120s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(work / "sipp-errors.log"),
        "-trace_msg", "-message_file", str(work / f"sipp-messages-{wait_ms}.log"),
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    done = asyncio.create_task(proc.wait())
    try:
        async with asyncio.timeout(150):
            while not done.done():
                rtp.drain()
                await asyncio.sleep(0.01)
        rtp.drain()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, rtp


def bye_received(work: Path, wait_ms: int) -> bool:
    """Whether SIPp received a BYE (the platform hung up) in the call that waited ``wait_ms``."""
    log = (work / f"sipp-messages-{wait_ms}.log").read_text(errors="replace")
    blocks = log.split("message received")[1:]
    return any(b.split(":", 1)[1].lstrip().startswith("BYE ") for b in blocks)


def sipp_errors(work: Path) -> str:
    log = work / "sipp-errors.log"
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no SIPp error log)"


async def the_call(server: LiveServer, admin: str, known: set[str]) -> dict[str, Any]:
    """The tenant's call not in ``known``, once there is one."""

    async def new() -> dict[str, Any] | None:
        async with httpx.AsyncClient(base_url=server.url) as c:
            items = (await c.get("/v1/calls", headers=auth(admin))).json()["items"]
        fresh = [i for i in items if i["call_id"] not in known]
        return fresh[0] if fresh else None

    found: dict[str, Any] = await until(new, 30)
    return found


async def final_state(server: LiveServer, admin: str, call_id: str) -> str:
    async def final() -> str | None:
        async with httpx.AsyncClient(base_url=server.url) as c:
            state = str((await c.get(f"/v1/calls/{call_id}", headers=auth(admin))).json()["state"])
        return state if CallState(state).is_final else None

    state: str = await until(final, 60)
    return state


async def test_a_pbx_call_is_answered_heard_and_ended(
    scripted_server: LiveServer,
    scripted_redis: Redis,
    scripted_llm: ScriptedLLM,
    registrar: SippRegistrar,
    voice: Any,
    whisper: Any,
    tmp_path: Path,
) -> None:
    server, sip_port = scripted_server, scripted_server.sip_port
    await until(registrar.listening, 10)
    tenant, admin = await new_tenant(server, "pbx-owner")
    agent = await Directory(scripted_redis).add_agent(
        Agent(
            name="desk",
            prompt="You answer the bakery's phone.",
            tenant=tenant,
            recording=True,
            tools=("end_call",),
        )
    )
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post(
            "/v1/sip-accounts",
            json={"name": "office pbx", "provider": "pbx", "registrar": "127.0.0.1",
                  "port": registrar.port, "username": REGISTRAR_USERNAME, "password": REGISTRAR_PASSWORD,
                  "agent_id": agent.agent_id, "expires_s": 120},
            headers=auth(admin),
        )  # fmt: skip
        assert r.status_code == 201, r.text
        account_id = r.json()["account_id"]

        async def registered() -> bool:
            got = await c.get(f"/v1/sip-accounts/{account_id}", headers=auth(admin))
            return bool(got.json()["registration"]["state"] == "registered")

        await until(registered, 30)

    # The caller speaks once the announcement has played (speech during it is not taken).
    announcement = announcement_for("", "en", None)
    lead = len(synthesize(voice, announcement, PHONE_RATE)) / (2 * PHONE_RATE) + 2.0
    question = say(voice, QUESTION)
    spoken_ms = int(1000 * (lead + len(question) / (2 * PHONE_RATE) + 0.5))
    # (the platform may ask ahead on an early transcription: each request gets the same reply)
    scripted_llm.script(lambda _body: Reply.say(ANSWER))

    # 1. The caller presses 9 (RFC 4733, SIPp's own pcap) after the question, then hangs up
    # while the agent answers: the objection reached the call, which ends completed.
    keyed = tmp_path / "question-then-9.pcap"
    voice_packets = rtp_packets(pause(lead) + question + pause(0.5), PCMU)
    write_pcap(keyed, voice_packets + read_pcap(Path("/usr/share/sip-tester/dtmf_2833_9.pcap")))
    rc, _ = await place_call(sip_port, account_id, keyed, spoken_ms + 1500, tmp_path)
    assert rc == 0, sipp_errors(tmp_path)
    first = await the_call(server, admin, set())
    assert await final_state(server, admin, first["call_id"]) == "completed"
    events = await call_store(server, scripted_redis).events(first["call_id"])
    assert [e.data for e in events if e.type == CallEventType.RECORDING_OBJECTED] == [
        {"how": "dtmf"}
    ]

    # 2. A second call after it: heard, answered, and the agent hangs up (end_call): our BYE.
    pcap = tmp_path / "question.pcap"
    write_pcap(pcap, voice_packets)
    scripted_llm.script(lambda _body: Reply.call("end_call", ANSWER))
    wait_ms = spoken_ms + 90_000  # SIPp's own hang-up: only if the platform never sent BYE
    rc, rtp = await place_call(sip_port, account_id, pcap, wait_ms, tmp_path)
    assert rc == 0, sipp_errors(tmp_path)
    second = await the_call(server, admin, {first["call_id"]})
    assert second["carrier"] == "sip"
    assert await final_state(server, admin, second["call_id"]) == "completed"
    assert bye_received(tmp_path, wait_ms)
    assert not bye_received(tmp_path, spoken_ms + 1500)  # the first call: the caller's BYE

    turns = await call_store(server, scripted_redis).transcript(second["call_id"])
    said = " ".join(t.text.lower() for t in turns if t.role == "caller")
    assert "saturday" in said and "open" in said, said
    assert any("nine" in t.text.lower() for t in turns if t.role == "agent"), turns

    frames = rtp.audio()
    loud = [i for i, f in enumerate(frames) if audioop.rms(f, 2) > LOUD_RMS]
    assert loud, "the platform's RTP was silent"
    # The first audio the caller hears is the announcement.
    opening = b"".join(frames[loud[0] : loud[0] + 250])  # its first 5 s
    heard = hear(whisper, opening).lower()
    assert "ai" in heard.replace(".", " ").split() or "record" in heard, heard

    # Refusals are SIP answers: an unknown account 404, an offer without G.711 488,
    g729 = ("18", "a=rtpmap:18 G729/8000")
    assert await refused(sip_port, "sip_unknown", g729, 404, tmp_path) == 0
    assert await refused(sip_port, account_id, g729, 488, tmp_path) == 0
    # so is a media address that is not an IPv4 address (a host name), before any answer
    named = "c=IN IP4 pbx.example.net"
    pcmu = ("0", "a=rtpmap:0 PCMU/8000")
    assert await refused(sip_port, account_id, pcmu, 488, tmp_path, connection=named) == 0
    async with httpx.AsyncClient(base_url=server.url) as c:
        items = (await c.get("/v1/calls", headers=auth(admin))).json()["items"]
    assert len(items) == 2  # a refused offer is not a call

    # A PBX refreshing the session (re-INVITE, as session timers and hold do) gets 200 with
    # the call's answer and the call goes on to the PBX's BYE.
    reinvite = (SIPP / "invite_reinvite.xml").read_text()
    assert await sipp(sip_port, account_id, reinvite, "reinvite", tmp_path) == 0


async def refused(
    sip_port: int,
    account_id: str,
    sdp: tuple[str, str],
    status: int,
    work: Path,
    connection: str = "c=IN IP4 [media_ip]",
) -> int:
    """SIPp's exit status for an INVITE that must get the final answer ``status``."""
    text = (SIPP / "invite_refused.xml").read_text()
    text = text.replace("c=IN IP4 [media_ip]", connection)
    for key, value in (("@STATUS@", str(status)), ("@FORMATS@", sdp[0]), ("@RTPMAP@", sdp[1])):
        text = text.replace(key, value)
    return await sipp(sip_port, account_id, text, f"refused-{status}", work)


async def sipp(sip_port: int, account_id: str, scenario: str, name: str, work: Path) -> int:
    """SIPp's exit status for ``scenario`` (its XML) calling ``account_id``, without media."""
    path = work / f"{name}.xml"
    path.write_text(scenario)
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(path), f"127.0.0.1:{sip_port}", "-i", "127.0.0.1",
        "-p", str(free_udp_port()), "-mi", "127.0.0.1", "-mp", str(free_udp_port(even=True)),
        "-s", account_id, "-key", "rtpport", str(free_udp_port(even=True)),
        "-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin",
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(60):
        return await proc.wait()


async def test_a_transfer_is_a_refer_to_the_pbx_then_our_bye(
    scripted_server: LiveServer,
    scripted_redis: Redis,
    scripted_llm: ScriptedLLM,
    registrar: SippRegistrar,
    tmp_path: Path,
) -> None:
    """SIPp is the PBX: it takes the REFER (202), reports the new call's outcome in a NOTIFY,
    then gets our BYE; once the person answered (2xx) and once the transfer failed (486)."""
    server, sip_port = scripted_server, scripted_server.sip_port
    await until(registrar.listening, 10)
    tenant, admin = await new_tenant(server, "pbx-transfers")
    desk = "+14155550123"
    agent = await Directory(scripted_redis).add_agent(
        Agent(name="desk", prompt="You answer the bakery's phone.", tenant=tenant,
              transfer_number=desk, tools=("end_call", "transfer"))
    )  # fmt: skip
    scripted_llm.script(lambda _body: Reply.say(ANSWER))
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post(
            "/v1/sip-accounts",
            json={"name": "office pbx", "provider": "pbx", "registrar": "127.0.0.1",
                  "port": registrar.port, "username": REGISTRAR_USERNAME,
                  "password": REGISTRAR_PASSWORD, "agent_id": agent.agent_id, "expires_s": 120},
            headers=auth(admin),
        )  # fmt: skip
        assert r.status_code == 201, r.text
        account_id = r.json()["account_id"]

        async def registered() -> bool:
            got = await c.get(f"/v1/sip-accounts/{account_id}", headers=auth(admin))
            return bool(got.json()["registration"]["state"] == "registered")

        await until(registered, 30)

    known: set[str] = set()
    for sipfrag, event in (("200 OK", "transferred"), ("486 Busy Here", "transfer_refused")):
        scenario = (SIPP / "refer_pbx.xml").read_text().replace("@SIPFRAG@", sipfrag)
        name = event.replace("_", "-")
        path = tmp_path / f"{name}.xml"
        path.write_text(scenario)
        messages = tmp_path / f"{name}-messages.log"
        proc = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(path), f"127.0.0.1:{sip_port}", "-i", "127.0.0.1",
            "-p", str(free_udp_port()), "-mi", "127.0.0.1", "-mp", str(free_udp_port(even=True)),
            "-s", account_id, "-key", "rtpport", str(free_udp_port(even=True)),
            "-m", "1", "-timeout", "120s", "-timeout_error", "-nostdin",
            "-trace_msg", "-message_file", str(messages),
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            call = await the_call(server, admin, known)
            known.add(call["call_id"])

            async def answered(call_id: str = call["call_id"]) -> bool:
                async with httpx.AsyncClient(base_url=server.url) as c:
                    got = await c.get(f"/v1/calls/{call_id}", headers=auth(admin))
                return bool(got.json()["state"] == "in-progress")

            await until(answered, 30)
            async with httpx.AsyncClient(base_url=server.url) as c:
                r = await c.post(f"/v1/calls/{call['call_id']}/transfer", headers=auth(admin))
            assert r.status_code == 202, r.text
            async with asyncio.timeout(150):
                rc = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log = messages.read_text(errors="replace")
        assert rc == 0, log[-3000:]
        assert f"Refer-To: <sip:{desk}@127.0.0.1>" in log
        assert await final_state(server, admin, call["call_id"]) == "completed"
        events = await call_store(server, scripted_redis).events(call["call_id"])
        kinds = [str(e.type) for e in events]
        assert event in kinds, kinds
        if event == "transfer_refused":
            refused = [e.data for e in events if e.type == CallEventType.TRANSFER_REFUSED]
            assert refused[0]["code"] == "carrier_failed", refused
