"""Voice-to-voice latency of one platform over three channels: Twilio, SIP and WebRTC.

One ``bonmoniq serve --demo`` (its own Redis and embedded LLM, its SIP stack on loopback)
answers the same questions (``bench/call_latency.QUESTIONS``, the same 8 kHz Piper audio) on
one agent (a tenant's, with the demo prompt): one uncounted warm-up call, then ``ROUNDS``
rounds of one call per channel, the channels taking turns:

- ``twilio``: the Twilio simulator (carriers/twilio/simulator.py), mu-law over Media Streams.
- ``sip``: the agent's SIP account registered at a SIPp registrar; a Python UAC (aiosipua,
  UDP, from the registrar's address) sends the INVITE, PCMU RTP both ways, then BYE.
- ``webrtc``: an aiortc peer that gets a token, posts its offer (ICE gathered) and sends the
  questions as 48 kHz audio frames of 20 ms (Opus on the wire), hearing the agent's track.

Every channel's caller is the same :class:`carriers.simulation.Conversation` (the channel only
changes the wire), so a turn's latency is measured identically everywhere: from the end of the
question (its last 20 ms frame handed to the channel, plus those 20 ms, on the caller's
real-time clock) to the first piece of agent audio received after it (a 20 ms RTP packet or
WebRTC frame, a 40 ms Media Streams message) whose RMS, as 16-bit PCM at 8 kHz, is above
``carriers.simulation.SPEECH_RMS``. The platform's CPU time is counted over the calls
and its resident memory after each, for the serve process with its children.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import httpx

from bench.call_latency import QUESTIONS
from bench.processes import cpu_s, rss_mb
from bench.voice import ACCOUNT_SID, AUTH_TOKEN, System, start_ours

REPO = Path(__file__).resolve().parents[1]
CHANNELS = ("twilio", "sip", "webrtc")
#: The channels run; BONMONIQ_BENCH_CHANNELS=sip,webrtc runs fewer.
WANTED = tuple(os.environ.get("BONMONIQ_BENCH_CHANNELS", ",".join(CHANNELS)).split(","))
OPERATOR_TOKEN = "bench-channels-operator"
#: The number the Twilio channel calls (attached to the bench tenant's agent).
NUMBER = "+15555550177"
#: SIPp as a registrar (digest user and password of its scenario).
REGISTRAR_SCENARIO = REPO / "tests" / "fixtures" / "sipp" / "registrar.xml"
REGISTRAR_USERNAME, REGISTRAR_PASSWORD = "1001", "sip-pw-4f6e6365"
#: Calls per channel (the channels take turns, one call each per round).
ROUNDS = int(os.environ.get("BONMONIQ_BENCH_ROUNDS", "2"))
WEBRTC_RATE = 48000
#: How long a caller waits for the greeting or an answer, and the quiet that ends one.
GREETING_TIMEOUT_S = REPLY_TIMEOUT_S = 60.0
QUIET_S = 1.5

Lines = list[tuple[str, bytes]]


class Datagrams:
    """What a :class:`carriers.simulation.Conversation` talks over: packets out, packets in.

    ``send`` hands one message to the channel; iterating yields what the platform sent until
    :meth:`end` (the platform hung up) or :meth:`close` (the caller did).
    """

    def __init__(self, send: Callable[[bytes], Awaitable[None] | None]) -> None:
        """Messages go out through ``send``."""
        self._send = send
        self._in: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    async def send(self, message: str | bytes) -> None:
        if not self.closed:
            sent = self._send(message if isinstance(message, bytes) else message.encode())
            if sent is not None:
                await sent

    def received(self, message: bytes) -> None:
        """A message from the platform."""
        self._in.put_nowait(message)

    def end(self) -> None:
        """The platform ended the call: iteration stops."""
        self._in.put_nowait(None)

    async def close(self) -> None:
        self.closed = True
        self.end()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (message := await self._in.get()) is not None:
            yield message


async def converse(line: Datagrams, wire: Any, call_id: str, lines: Lines) -> Any:
    """Hold the Twilio simulator's conversation (same clock, timing, waits) over ``line``."""
    from carriers.simulation import Conversation, SimulationResult

    result = SimulationResult("", call_id, "")
    conversation = Conversation(cast(Any, line), wire, result)  # a socket-like line
    await conversation.converse(list(lines), GREETING_TIMEOUT_S, REPLY_TIMEOUT_S, QUIET_S, ())
    return result


# --- SIP ---


def free_udp_port() -> int:
    """An even UDP port free on 127.0.0.1 now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port % 2 == 0:
            return port
    raise RuntimeError("no free UDP port")


class SipWire:
    """20 ms of PCM as one PCMU RTP packet, and the platform's packets back as PCM."""

    def __init__(self) -> None:
        self.seq = 0

    def encode(self, pcm: bytes) -> bytes:
        from carriers.sip.codec import FRAME_SAMPLES, PCMU, RtpPacket, build_rtp, encode

        packet = RtpPacket(
            PCMU, self.seq, self.seq * FRAME_SAMPLES, 0xBE4C, self.seq == 0, encode(pcm, PCMU)
        )
        self.seq += 1
        return build_rtp(packet)

    def decode(self, raw: str | bytes) -> Any:
        from carriers.simulation import Heard
        from carriers.sip.codec import G711, RtpMalformed, decode, parse_rtp

        try:
            packet = parse_rtp(raw if isinstance(raw, bytes) else raw.encode())
        except RtpMalformed:
            return Heard()
        if packet.payload_type not in G711:
            return Heard()
        return Heard(audio=decode(packet.payload, packet.payload_type))

    def stop(self) -> None:
        return None  # the caller's BYE ends the call (after the conversation)

    def key(self, digit: str) -> bytes:
        raise NotImplementedError("the bench presses no keys")


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, line: Datagrams) -> None:
        self.line = line

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.line.received(data)


def sip_transport() -> Any:
    """aiosipua's UDP transport on a free loopback port, bound so it works on Python 3.11.

    (aiosipua's own protocol asserts a type the selector loop's transport is not of in 3.11.)
    """
    from aiosipua.transport import UdpSipTransport

    class Transport(UdpSipTransport):
        async def start(self) -> None:
            loop = asyncio.get_running_loop()
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _Sip(self), local_addr=self.local_addr
            )
            self._udp_transport = cast(asyncio.DatagramTransport, udp)

    transport = Transport()
    transport.local_addr = ("127.0.0.1", free_udp_port())
    return transport


class _Sip(asyncio.DatagramProtocol):
    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._dispatch(data, (str(addr[0]), int(addr[1])))


class SippRegistrar:
    """SIPp answering REGISTERs (digest checked) on a free loopback port until stopped."""

    def __init__(self, work: Path) -> None:
        self.port = free_udp_port()
        self.proc = subprocess.Popen(
            ["sipp", "-sf", str(REGISTRAR_SCENARIO), "-i", "127.0.0.1", "-p", str(self.port),
             "-mp", str(free_udp_port()), "-key", "expires", "300", "-nostdin",
             "-timeout", "900s"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


async def sip_call(sip_port: int, account_id: str, lines: Lines) -> Any:
    """INVITE the account from 127.0.0.1, converse over PCMU RTP, then BYE."""
    from aiosipua.sdp_negotiate import build_sdp
    from aiosipua.uac import SipUAC
    from aiosipua.uas import SipUAS

    from carriers.sip.codec import PCMU

    loop = asyncio.get_running_loop()
    transport = sip_transport()
    uac = SipUAC(transport)
    uas = SipUAS(transport, uac=uac)
    rtp_port = free_udp_port()
    line: Datagrams | None = None
    uas.on_bye = lambda _call, _request: line.end() if line is not None else None
    await uas.start()
    try:
        offer = build_sdp("127.0.0.1", rtp_port, PCMU, "PCMU")
        call = uac.send_invite(
            "sip:bench@127.0.0.1",
            f"sip:{account_id}@127.0.0.1:{sip_port}",
            ("127.0.0.1", sip_port),
            offer,
        )
        await call.wait_answered(timeout=30)
        if call.sdp_answer is None or call.sdp_answer.rtp_address is None:
            raise RuntimeError("the platform's 200 has no media address")
        remote = call.sdp_answer.rtp_address
        rtp: asyncio.DatagramTransport | None = None

        def send(data: bytes) -> None:
            if rtp is not None:
                rtp.sendto(data, remote)

        line = Datagrams(send)
        rtp, _ = await loop.create_datagram_endpoint(
            lambda: _Rtp(cast(Datagrams, line)), local_addr=("127.0.0.1", rtp_port)
        )
        try:
            result = await converse(line, SipWire(), "", lines)
        finally:
            call.hangup(uac)  # BYE (nothing when the platform hung up first)
            await asyncio.sleep(0.5)  # its 200
            rtp.close()
    finally:
        await uas.stop()
    return result


async def sip_account(
    c: httpx.AsyncClient, key: str, agent_id: str, registrar: SippRegistrar
) -> str:
    """The agent's SIP account, once it is registered at ``registrar``."""
    r = await c.post(
        "/v1/sip-accounts",
        json={"name": "bench pbx", "provider": "pbx", "registrar": "127.0.0.1",
              "port": registrar.port, "username": REGISTRAR_USERNAME,
              "password": REGISTRAR_PASSWORD, "agent_id": agent_id, "expires_s": 300},
        headers=_auth(key),
    )  # fmt: skip
    r.raise_for_status()
    account_id = str(r.json()["account_id"])
    for _ in range(300):
        got = (await c.get(f"/v1/sip-accounts/{account_id}", headers=_auth(key))).json()
        if got["registration"]["state"] == "registered":
            return account_id
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the SIP account did not register: {got['registration']}")


# --- WebRTC ---


class WebRtcWire:
    """20 ms of 8 kHz PCM as 20 ms at 48 kHz for the audio track; the agent's back at 8 kHz."""

    def __init__(self) -> None:
        import av

        # libswresample keeps its state between frames and holds back only its filter's delay
        # (soxr's stream resampler holds back whole blocks, over 100 ms).
        self.up = av.AudioResampler(format="s16", layout="mono", rate=WEBRTC_RATE)
        self.pts = 0

    def encode(self, pcm: bytes) -> bytes:
        import av

        samples = len(pcm) // 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = 8000
        frame.pts, self.pts = self.pts, self.pts + samples
        out = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in self.up.resample(frame))
        if frame.pts == 0:  # the filter's delay, as silence ahead: one frame out per frame in
            out = out.rjust(samples * WEBRTC_RATE // 8000 * 2, b"\0")
        return out

    def decode(self, raw: str | bytes) -> Any:
        from carriers.simulation import Heard

        return Heard(audio=raw if isinstance(raw, bytes) else raw.encode())

    def stop(self) -> None:
        return None  # closing the peer connection ends the call

    def key(self, digit: str) -> bytes:
        raise NotImplementedError("the bench presses no keys")


def caller_track() -> Any:
    """A MediaStreamTrack of 20 ms 48 kHz mono frames, each sent when the caller's clock says."""
    import av
    from aiortc import MediaStreamTrack

    class CallerTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.frames: asyncio.Queue[bytes] = asyncio.Queue()
            self.pts = 0
            self.carry = b""

        async def recv(self) -> av.AudioFrame:
            step = WEBRTC_RATE // 50 * 2
            while len(self.carry) < step:  # frames of another length are re-cut
                self.carry += await self.frames.get()
            pcm, self.carry = self.carry[:step], self.carry[step:]
            frame = av.AudioFrame(format="s16", layout="mono", samples=step // 2)
            frame.planes[0].update(pcm)
            frame.sample_rate = WEBRTC_RATE
            frame.pts = self.pts
            frame.time_base = fractions.Fraction(1, WEBRTC_RATE)
            self.pts += step // 2
            return frame

    return CallerTrack()


async def webrtc_call(base: str, key: str, agent_id: str, lines: Lines) -> Any:
    """A token, the offer (ICE gathered), then the conversation over the peer connection."""
    import av
    from aiortc import MediaStreamError, RTCPeerConnection, RTCSessionDescription

    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.post(
            f"/v1/agents/{agent_id}/webrtc/tokens", json={"ttl_s": 600}, headers=_auth(key)
        )
        r.raise_for_status()
        token = r.json()["token"]
        pc = RTCPeerConnection()
        track = caller_track()
        line = Datagrams(track.frames.put)
        pc.addTrack(track)
        down = av.AudioResampler(format="s16", layout="mono", rate=8000)
        readers: list[asyncio.Task[None]] = []

        async def read(remote: Any) -> None:
            try:
                while True:
                    frame = await remote.recv()
                    for out in down.resample(frame):
                        line.received(bytes(out.planes[0])[: out.samples * 2])
            except MediaStreamError:
                line.end()

        pc.on("track", lambda remote: readers.append(asyncio.create_task(read(remote))))

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("closed", "failed"):
                line.end()

        try:
            await pc.setLocalDescription(await pc.createOffer())  # returns once ICE gathered
            body = {"sdp": pc.localDescription.sdp, "type": "offer"}
            r = await c.post(f"/v1/agents/{agent_id}/webrtc", json=body, headers=_auth(token))
            r.raise_for_status()
            answer = r.json()
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            return await converse(line, WebRtcWire(), answer["call_id"], lines)
        finally:
            await pc.close()
            for task in readers:
                task.cancel()


# --- the run ---


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _redis_url(system: System) -> str:
    args = [str(a) for a in cast(list[str], system.others[0].args)]
    return f"redis://127.0.0.1:{args[args.index('--port') + 1]}/0"


async def _tenant_agent(system: System) -> tuple[str, str]:
    """A tenant with the demo agent's prompt (its API key, the agent id), on NUMBER too."""
    from redis.asyncio import Redis

    from app.runtime import DEMO_PROMPT
    from routing import Directory

    async with httpx.AsyncClient(base_url=system.url, timeout=30) as c:
        r = await c.post(
            "/v1/operator/tenants", json={"name": "bench"}, headers=_auth(OPERATOR_TOKEN)
        )
        r.raise_for_status()
        tenant, key = str(r.json()["tenant_id"]), str(r.json()["api_key"])
        body = {"name": "bakery", "system_prompt": DEMO_PROMPT, "language": "en"}
        r = await c.post("/v1/agents", json=body, headers=_auth(key))
        r.raise_for_status()
        agent_id = str(r.json()["agent_id"])
    redis = Redis.from_url(_redis_url(system), decode_responses=True)
    try:
        directory = Directory(redis)
        await directory.attach(NUMBER, await directory.get_agent_by_id(agent_id, tenant))
    finally:
        await redis.aclose()
    return key, agent_id


async def _stored(base: str, key: str, known: set[str]) -> dict[str, Any]:
    """The tenant's newest call not in ``known``, once over: its channel, state, what was heard."""
    from bench.stt_window import normalise
    from calls.state import CallState

    async with httpx.AsyncClient(base_url=base, timeout=30, headers=_auth(key)) as c:
        for _ in range(150):
            fresh = [
                i for i in (await c.get("/v1/calls")).json()["items"] if i["call_id"] not in known
            ]
            if fresh and CallState(fresh[0]["state"]).is_final:
                break
            await asyncio.sleep(0.2)
        known.update(i["call_id"] for i in fresh)
        if not fresh:
            return {"carrier": None, "state": None, "heard": 0}
        call = fresh[0]
        turns = (await c.get(f"/v1/calls/{call['call_id']}/transcript")).json()["turns"]
    said = set(normalise(" ".join(t["text"] for t in turns if t["role"] == "caller")))
    heard = 0
    for question in QUESTIONS:
        words = [w for w in normalise(question) if len(w) > 3]
        heard += sum(w in said for w in words) * 2 >= len(words)
    return {"carrier": call["carrier"], "state": call["state"], "heard": heard}


class Tally:
    """One channel's calls added up."""

    def __init__(self) -> None:
        self.turns = 0
        self.latencies: list[float] = []
        self.call_s = self.cpu_s = self.rss_mb = self.caller_cpu_s = 0.0
        self.stored: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.first_audio: list[float] = []

    def add(self, result: Any, call_s: float, cpu: float, rss: float, caller: float) -> None:
        self.caller_cpu_s += caller
        self.turns += len(result.turns)
        self.latencies += [t.latency_s for t in result.turns if t.latency_s is not None]
        self.call_s += call_s
        self.cpu_s += cpu
        self.rss_mb = max(self.rss_mb, rss)
        if result.first_audio_at is not None:
            self.first_audio.append(round(result.first_audio_at - result.started_at, 3))

    def report(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "calls": len(self.stored),
            "turns": self.turns,
            "answered": len(lat),
            "latency_s": lat,
            "median_latency_s": round(statistics.median(lat), 3) if lat else None,
            "max_latency_s": max(lat) if lat else None,
            # The caller's media started -> the announcement's first audio received.
            "announcement_first_audio_s": self.first_audio,
            "carrier": sorted({str(s["carrier"]) for s in self.stored}),
            "call_states": [s["state"] for s in self.stored],
            "questions_heard": sum(s["heard"] for s in self.stored),
            "call_s": round(self.call_s, 1),
            "platform_cpu_s": round(self.cpu_s, 2),
            # Busy cores over the calls: the calls last differently (see BENCHMARKS.md).
            "platform_cores_busy": round(self.cpu_s / self.call_s, 3) if self.call_s else None,
            "platform_rss_mb": round(self.rss_mb, 1),
            # This bench process (the caller's side) over the same calls, on the same cores.
            "caller_cpu_s": round(self.caller_cpu_s, 2),
        } | ({"errors": self.errors} if self.errors else {})


async def run() -> dict[str, Any]:
    """One platform; the warm-up call, then ROUNDS rounds of one call per channel."""
    from carriers.simulation import trim_silence
    from carriers.twilio.simulator import TwilioSimulator
    from llm.server import free_port
    from models import Role, profile_models, verify_model
    from voice.engines import PHONE_RATE, load_voice, synthesize

    voice = load_voice(verify_model(profile_models("cpu")[Role.TTS], REPO / "var" / "models"))
    lines = [(q, trim_silence(synthesize(voice, q, PHONE_RATE))) for q in QUESTIONS]
    var = Path(tempfile.mkdtemp(prefix="bonmoniq-bench-"))
    sip_port = free_port()
    env = {
        "BONMONIQ_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "BONMONIQ_SIP_HOST": "127.0.0.1",
        "BONMONIQ_SIP_PORT": str(sip_port),
        "BONMONIQ_SIP_REGISTRAR_ALLOW": '["127.0.0.1"]',
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # start_ours passes this process's environment on
    registrar = SippRegistrar(var) if shutil.which("sipp") else None
    out: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    try:
        system = start_ours(var)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        key, agent_id = await _tenant_agent(system)

        async def twilio() -> Any:
            sim = TwilioSimulator(system.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
            result = await sim.run(
                lines,
                greeting_timeout=GREETING_TIMEOUT_S,
                reply_timeout=REPLY_TIMEOUT_S,
                quiet_after_reply=QUIET_S,
            )
            await sim.status("completed", 99)  # as Twilio does once the stream has ended
            return result

        wanted = [n for n in CHANNELS if n in WANTED]
        if registrar is None and "sip" in wanted:
            wanted.remove("sip")
            out["sip"] = {"skipped": "SIPp (sip-tester) missing"}
        account_id = ""
        if "sip" in wanted:
            async with httpx.AsyncClient(base_url=system.url, timeout=30) as c:
                account_id = await sip_account(c, key, agent_id, cast(SippRegistrar, registrar))
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "twilio": twilio,
            "sip": lambda: sip_call(sip_port, account_id, lines),
            "webrtc": lambda: webrtc_call(system.url, key, agent_id, lines),
        }
        warm = await twilio()  # models, prompt states and caches warm before any counted call
        out["warm_up_answered"] = sum(t.latency_s is not None for t in warm.turns)
        known: set[str] = set()
        await _stored(system.url, key, known)
        tallies = {name: Tally() for name in wanted}
        for _ in range(ROUNDS):  # the channels take turns: a drift of the machine hits all
            for name in wanted:
                cpu0, t0, caller0 = cpu_s(*system.pids), time.monotonic(), time.process_time()
                try:
                    result = await calls[name]()
                except Exception as e:  # one channel failing still reports the others
                    tallies[name].errors.append(f"{type(e).__name__}: {e}"[:300])
                    continue
                cpu, seconds = cpu_s(*system.pids) - cpu0, time.monotonic() - t0
                caller = time.process_time() - caller0
                tallies[name].add(result, seconds, cpu, rss_mb(*system.pids), caller)
                tallies[name].stored.append(await _stored(system.url, key, known))
        out["rounds"] = ROUNDS
        out |= {name: tally.report() for name, tally in tallies.items()}
    finally:
        system.stop()
        if registrar is not None:
            registrar.stop()
        shutil.rmtree(var, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
