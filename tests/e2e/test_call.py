"""End to end: simulated Twilio calls into a running platform on the real models and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import numpy as np
import pytest
import websockets
from redis.asyncio import Redis

from calls.events import CallEventType, order_violations
from calls.store import CallStore
from carriers.simulation import SimulationResult, trim_silence
from carriers.twilio.signature import compute_signature
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, call_store
from tests.helpers import BAKERY, hear, scrape, wait_closed, words
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow

GARAGE = "You are Alex at a bicycle repair shop. You repair brakes, gears and flat tyres."


async def bakery(client: Redis, server: LiveServer, prompt: str = BAKERY) -> CallStore:
    """The bakery agent on +15555550100; the call store of the same Redis."""
    d = Directory(client)
    await d.add_agent(Agent(name="bakery", prompt=prompt))
    await d.add_number("+15555550100", "bakery")
    return call_store(server, client)


async def place(server: LiveServer, voice, to: str, sentences: list[str], **kw) -> SimulationResult:  # type: ignore[no-untyped-def]
    sim = TwilioSimulator(server.url, ACCOUNT_SID, AUTH_TOKEN, to=to)
    lines = [
        (s, trim_silence(await asyncio.to_thread(synthesize, voice, s, PHONE_RATE)))
        for s in sentences
    ]
    return await sim.run(lines, **kw)


async def test_a_caller_asks_and_the_agent_answers(
    live_server: LiveServer, live_redis: Redis, voice, whisper
) -> None:  # type: ignore[no-untyped-def]
    store = await bakery(live_redis, live_server)

    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
    line = trim_silence(synthesize(voice, "What time do you open on Saturday?", PHONE_RATE))
    result = await sim.run([("question", line)])
    await wait_closed(store, result.call_id)

    # The question's key words, as Whisper heard them, are in the stored transcript.
    transcript = await store.transcript(result.call_id)
    caller = [t.text for t in transcript if t.role == "caller"]
    assert caller and {"open", "saturday"} <= words(caller[0]), transcript
    agent_turns = [t for t in transcript if t.role == "agent"]
    assert len(agent_turns) >= 2, transcript  # greeting, then the answer
    assert transcript.index(agent_turns[-1]) > transcript.index(
        next(t for t in transcript if t.role == "caller")
    )

    # The reply is real audio, heard by the caller after their question.
    turn = result.turns[0]
    assert turn.latency_s is not None and turn.latency_s > 0
    reply = bytes(result.agent_audio)
    rms = np.sqrt(np.mean(np.frombuffer(reply, dtype=np.int16).astype(np.float64) ** 2))
    assert rms > 300

    # Events in order; the announcement played before any agent turn.
    events = await store.events(result.call_id)
    assert order_violations(events) == []
    kinds = [e.type for e in events]
    for stage in (
        CallEventType.INBOUND,
        CallEventType.MEDIA_CONNECTED,
        CallEventType.ANNOUNCEMENT_STARTED,
        CallEventType.ANNOUNCEMENT_PLAYED,
        CallEventType.CALLER_TURN,
        CallEventType.MEDIA_CLOSED,
    ):
        assert stage in kinds, kinds
    assert kinds.index(CallEventType.ANNOUNCEMENT_PLAYED) < kinds.index(CallEventType.AGENT_TURN)

    # What the caller heard first is the AI disclosure and the recording notice.
    # (The recording is on the call's timeline: everything before the question was asked.)
    before_question = int((turn.speech_end - result.started_at - 3.0) * PHONE_RATE) * 2
    heard_first = hear(whisper, reply[:before_question]).lower()
    assert {"ai", "recorded"} <= words(heard_first), heard_first
    assert heard_first.index("recorded") < heard_first.index("help"), heard_first  # then greeting

    # Status callbacks: applied once each, in progress order whatever the arrival order.
    assert (await sim.status("in-progress", 1)).status_code == 204
    assert (await sim.status("completed", 3)).status_code == 204
    assert (await sim.status("completed", 3)).status_code == 204  # Twilio retried
    assert (await sim.status("ringing", 0)).status_code == 204  # late, out of order
    record = await store.get(result.call_id)
    assert record is not None and record.state == "completed"
    statuses = [
        e.data["status"]
        for e in await store.events(result.call_id)
        if e.type == CallEventType.STATUS
    ]
    assert sorted(statuses) == ["completed", "in-progress", "ringing"]

    # The pipeline's stage latencies of this call are on /metrics, and no call is left active.
    families = await scrape(live_server)
    from voice.metrics import STAGES

    for stage in (*STAGES, "response"):
        assert families[f'bonmoniq_pipeline_stage_seconds_count{{stage="{stage}"}}'] >= 1, stage
        assert families[f'bonmoniq_pipeline_stage_seconds_sum{{stage="{stage}"}}'] > 0, stage
    # The stages partition each turn: together they are the response time.
    total = sum(families[f'bonmoniq_pipeline_stage_seconds_sum{{stage="{s}"}}'] for s in STAGES)
    assert abs(total - families['bonmoniq_pipeline_stage_seconds_sum{stage="response"}']) < 1e-3
    assert families["bonmoniq_active_calls"] == 0
    assert families['bonmoniq_webhooks_total{carrier="twilio",result="accepted"}'] >= 4


async def test_two_simultaneous_calls_do_not_share_state(
    live_server: LiveServer, live_redis: Redis, voice
) -> None:  # type: ignore[no-untyped-def]
    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY))
    await d.add_agent(Agent(name="garage", prompt=GARAGE, greeting="Bike shop, how can I help?"))
    await d.add_number("+15555550100", "bakery")
    await d.add_number("+15555550200", "garage")
    store = call_store(live_server, live_redis)

    a, b = await asyncio.gather(
        place(live_server, voice, "+15555550100", ["Do you sell birthday cakes?"]),
        place(live_server, voice, "+15555550200", ["Can you repair my bicycle brakes?"]),
    )
    for r in (a, b):
        await wait_closed(store, r.call_id)
    assert a.call_id != b.call_id
    ta, tb = await store.transcript(a.call_id), await store.transcript(b.call_id)
    caller_a = " ".join(t.text for t in ta if t.role == "caller")
    caller_b = " ".join(t.text for t in tb if t.role == "caller")
    assert "cakes" in words(caller_a) or "cake" in words(caller_a), ta
    assert "brakes" in words(caller_b) or "bicycle" in words(caller_b), tb
    assert not ({"brakes", "bicycle"} & words(caller_a)) and not (
        {"cake", "cakes"} & words(caller_b)
    )
    # Each call got its own agent's greeting, and an answer.
    assert ta[0].role == "agent" and "help you today" in ta[0].text
    assert tb[0].role == "agent" and tb[0].text.startswith("Bike shop")
    assert a.turns[0].latency_s is not None and b.turns[0].latency_s is not None
    assert (await store.get(a.call_id)).agent_name == "bakery"  # type: ignore[union-attr]
    assert (await store.get(b.call_id)).agent_name == "garage"  # type: ignore[union-attr]


async def test_malformed_media_is_dropped_and_the_call_goes_on(
    live_server: LiveServer, live_redis: Redis, voice
) -> None:  # type: ignore[no-untyped-def]
    store = await bakery(live_redis, live_server)
    bad = (
        "{not json",
        json.dumps({"event": "dance"}),
        json.dumps({"event": "media", "streamSid": "MZunknown", "media": {"payload": "AAAA"}}),
        json.dumps({"event": "media", "streamSid": "X", "media": {"payload": "@@@"}}),
    )
    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
    bad = tuple(m.replace('"X"', json.dumps(sim.stream_sid)) for m in bad)
    line = trim_silence(synthesize(voice, "Can I order a birthday cake for Friday?", PHONE_RATE))
    result, refused = await asyncio.gather(sim.run([("q", line)], inject=bad), barrage(live_server))
    assert refused == {403, 1007}
    await wait_closed(store, result.call_id)
    events = await store.events(result.call_id)
    rejected = [e.data["reason"] for e in events if e.type == CallEventType.MEDIA_REJECTED]
    assert len(rejected) == 4, rejected
    assert any("not JSON" in r for r in rejected) and any("base64" in r for r in rejected)
    heard = " ".join(t.text for t in await store.transcript(result.call_id) if t.role == "caller")
    assert {"birthday", "cake", "friday"} & words(heard), heard
    assert result.turns[0].latency_s is not None


async def barrage(server: LiveServer, rounds: int = 10) -> set[int]:
    """Forged webhooks and broken stream starts while a real call is on; the codes seen."""
    seen: set[int] = set()
    ws_url = server.url.replace("http", "ws") + "/media/twilio"
    signed = {"X-Twilio-Signature": compute_signature(ws_url, [], AUTH_TOKEN)}
    async with httpx.AsyncClient() as c:
        for _ in range(rounds):
            r = await c.post(
                server.url + "/webhooks/twilio/voice",
                data={"CallSid": "CA1"},
                headers={"X-Twilio-Signature": "x"},
            )
            seen.add(r.status_code)
            async with websockets.connect(ws_url, additional_headers=signed) as ws:
                await ws.send("{broken")
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.recv()
                seen.add(ws.close_code or 0)
            await asyncio.sleep(0.5)
    return seen


async def test_caller_goodbye_ends_the_call(
    live_server: LiveServer, live_redis: Redis, voice
) -> None:  # type: ignore[no-untyped-def]
    store = await bakery(live_redis, live_server)
    result = await place(live_server, voice, "+15555550100", ["Goodbye.", "Are you still there?"])
    await wait_closed(store, result.call_id)
    assert result.closed_by_platform  # the platform hung up; the second line was never said
    assert len(result.turns) == 1
    events = await store.events(result.call_id)
    hangup = [e for e in events if e.type == CallEventType.HANGUP_REQUESTED]
    assert hangup and hangup[0].data["by"] == "caller"
    transcript = await store.transcript(result.call_id)
    assert transcript[-1].role == "agent" and "goodbye" in words(transcript[-1].text)


async def test_failing_llm_and_redis_never_crash_the_platform(tmp_path, voice) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import free_port, start_redis, start_server, stop_server

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    redis_proc, redis_url = start_redis(tmp_path)
    server = start_server(redis_url, tmp_path, ready="/healthz", BONMONIQ_LLM_URL=dead)
    client = Redis.from_url(server.redis_url, decode_responses=True)
    try:
        await client.flushdb()
        async with httpx.AsyncClient() as c:
            ready = await c.get(server.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
        store = await bakery(client, server)
        result = await place(server, voice, "+15555550100", ["What time do you open on Saturday?"])
        await wait_closed(store, result.call_id)
        assert result.closed_by_platform and result.turns[0].latency_s is not None  # it said sorry
        events = await store.events(result.call_id)
        assert any(e.type == CallEventType.ERROR for e in events)
        hangup = [e for e in events if e.type == CallEventType.HANGUP_REQUESTED]
        assert hangup and hangup[0].data["by"] == "platform"
        transcript = await store.transcript(result.call_id)
        assert "technical trouble" in transcript[-1].text
        assert server.proc.poll() is None  # the process is still serving

        # Redis goes away: carriers get a 503 problem (they retry), the process stays up.
        redis_proc.kill()
        redis_proc.wait()
        s = TwilioSimulator(server.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
        r = await s.post_signed("/webhooks/twilio/voice", s.voice_params())
        assert r.status_code == 503 and r.json()["code"] == "state_store_unavailable"
        async with httpx.AsyncClient() as c:
            assert (await c.get(server.url + "/healthz")).status_code == 200
            ready = await c.get(server.url + "/readyz")
        assert ready.status_code == 503 and "State store" in ready.json()["title"]
        assert server.proc.poll() is None
    finally:
        await client.aclose()
        stop_server(server)
        redis_proc.kill()


async def test_barge_in_clears_playback(live_server: LiveServer, live_redis: Redis, voice) -> None:  # type: ignore[no-untyped-def]
    store = await bakery(live_redis, live_server, BAKERY + " Describe every product at length.")
    result = await place(
        live_server,
        voice,
        "+15555550100",
        [
            "Tell me about all of your breads and cakes, please.",
            "Sorry, when do you open on Saturday?",
        ],
        barge_in_after=0.8,
    )
    await wait_closed(store, result.call_id)
    assert result.clears >= 1  # Twilio was told to drop the rest of the agent's answer
    events = await store.events(result.call_id)
    assert any(e.type == CallEventType.BARGE_IN for e in events)
    caller = " ".join(t.text for t in await store.transcript(result.call_id) if t.role == "caller")
    assert "saturday" in words(caller) or "open" in words(caller), caller
    assert result.turns[1].latency_s is not None


async def test_a_caller_who_pauses_is_answered_once_for_the_whole_question(tmp_path, voice) -> None:  # type: ignore[no-untyped-def]
    """Early transcription and the speculative answer never answer half a question.

    A window of 0.25 + 1.0 s (instead of 0.6 s) makes the race deterministic: the first line
    pauses 0.7 s mid-question, long enough for the VAD to end the speech, Whisper to hear
    "What time do you open" and the LLM to start answering it, short enough for the caller to
    go on inside the window; the second pauses 0.18 s, which the VAD takes for a pause only,
    whatever the alignment of its 32 ms windows over the audio (0.12 s is missed at about one
    alignment in five): an early transcription is started and thrown away.
    """
    from tests.conftest import start_redis, start_server, stop_server

    redis_proc, redis_url = start_redis(tmp_path)
    server = start_server(redis_url, tmp_path, BONMONIQ_TURN_TIMEOUT_SECS="1.0")
    client = Redis.from_url(server.redis_url, decode_responses=True)
    try:
        store = await bakery(client, server)

        def say(text: str) -> bytes:
            return trim_silence(synthesize(voice, text, PHONE_RATE))

        def pause(seconds: float) -> bytes:
            return bytes(int(PHONE_RATE * seconds) * 2)

        lines = [
            ("paused", say("What time do you open") + pause(0.7) + say("on Saturday?")),
            ("hesitant", say("Do you sell") + pause(0.18) + say("birthday cakes?")),
        ]
        sim = TwilioSimulator(server.url, ACCOUNT_SID, AUTH_TOKEN, to="+15555550100")
        result = await sim.run(lines)
        await wait_closed(store, result.call_id)

        # One caller turn per line, each the whole line; one answer to each, after it.
        transcript = await store.transcript(result.call_id)
        roles = [t.role for t in transcript]
        assert roles == ["agent", "caller", "agent", "caller", "agent"], transcript
        caller = [t.text for t in transcript if t.role == "caller"]
        assert {"open", "saturday"} <= words(caller[0]), caller
        assert {"sell", "birthday"} <= words(caller[1]), caller

        # Nothing of an answer reached the caller while a line was being said.
        for (_, pcm), turn in zip(lines, result.turns, strict=True):
            assert turn.latency_s is not None and turn.latency_s > 0
            end = int((turn.speech_end - result.started_at) * PHONE_RATE) * 2
            during = np.frombuffer(
                bytes(result.agent_audio[end - len(pcm) : end]), dtype=np.int16
            ).astype(np.float64)
            assert during.size == 0 or np.sqrt(np.mean(during**2)) < 100, turn.label

        families = await scrape(server)
        counts = {
            (name, outcome): families.get(f'bonmoniq_{name}_total{{outcome="{outcome}"}}', 0)
            for name, outcome in (
                ("speculative_answers", "kept"),
                ("speculative_answers", "withdrawn"),
                ("early_transcripts", "used"),
                ("early_transcripts", "discarded"),
            )
        }
        assert counts[("speculative_answers", "withdrawn")] >= 1, counts  # the 0.7 s pause
        assert counts[("speculative_answers", "kept")] >= 2, counts  # each question's end
        assert counts[("early_transcripts", "used")] >= 3, counts
        assert counts[("early_transcripts", "discarded")] >= 1, counts  # the 0.18 s pause
    finally:
        await client.aclose()
        stop_server(server)
        redis_proc.kill()
