"""End to end in French: a French agent on real models, callers speaking espeak-ng's French.

The agent speaks with espeak-ng's French voice; the callers' lines (tests/helpers.say_in) are
worded apart from the phrase tables (voice/lang/fr.toml), except for the closing and refusal
phrases under test. A caller's line has no comma: espeak-ng pauses there long enough for the
VAD to end the turn. What the caller heard is checked by Whisper told French (the
announcement) and, for fixed phrases, by finding the French voice's own audio of the phrase in it
(Whisper base does not follow espeak-ng's "C'est noté", nor its farewell wherever it falls).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from redis.asyncio import Redis

from calls.events import CallEventType
from calls.store import CallStore
from carriers.simulation import SimulationResult, trim_silence
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, call_store, encrypted_store
from tests.helpers import hear_in, pause, plain, say_in, wait_closed
from voice.announcement import default_announcement
from voice.phrasebook import phrases
from voice.voices import PHONE_RATE, speak

pytestmark = pytest.mark.slow

NUMBER = "+15555550100"
#: The agent's own announcement: France's default one (CNIL's guidance), which says it is
#: recorded twice.
CNIL = default_announcement("fr", "FR")
VOICE = "espeak-ng-fr"
BOULANGERIE = (
    "Tu es Sam, à l'accueil de la boulangerie Rosa. Elle ouvre à 7 heures du lundi au samedi."
)
SAY = phrases("fr").say
#: The caller's question: none of its words is in the phrase tables.
QUESTION = "À quelle heure ouvrez-vous le samedi matin ?"
#: Its key words: Whisper base may garble one of them.
QUESTION_WORDS = ("heure", "ouvr", "samedi", "matin")
#: The caller's goodbye, in espeak-ng's voice variant m1 at pitch 40: Whisper base hears this
#: line wherever the VAD's windows fall (with the callers' variant m5, "au revoir" comes out
#: "au droit", "aujourd'hui" or "au hauteoir" in some alignments, or the line is dropped as
#: silence, whatever the pitch).
GOODBYE = "Merci au revoir."
GOODBYE_VOICE = ("-v", "fr+m1", "-p", "40")


async def french_bakery(client: Redis) -> None:
    d = Directory(client)
    await d.add_agent(
        Agent(
            name="boulangerie",
            prompt=BOULANGERIE,
            language="fr",
            voice=VOICE,
            recording=True,
            announcement=CNIL,
        )
    )
    await d.add_number(NUMBER, "boulangerie")


def unbroken(pcm: bytes) -> bytes:
    """``pcm`` (what the caller heard) without its runs of digital silence of 0.1 s or more.

    The simulator writes a pause on the line (between turns, or when the platform's audio comes
    late) as zeros; within a phrase, espeak-ng's pauses never come out of G.711 as that long a
    run of zeros, so each phrase is left in one piece, as the platform sent it.
    """
    samples = np.frombuffer(pcm, dtype=np.int16)
    edges = np.diff(np.concatenate(([0], (samples == 0).astype(np.int8), [0])))
    keep = np.ones(samples.size, dtype=bool)
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if end - start >= PHONE_RATE // 10:
            keep[start:end] = False
    return samples[keep].tobytes()


def found(haystack: bytes, needle: bytes) -> float:
    """How closely some stretch of ``haystack`` matches ``needle`` (both 8 kHz PCM) without its
    leading and trailing silence: the best normalized cross-correlation, 1.0 for the same audio."""
    h = np.frombuffer(haystack, dtype=np.int16).astype(np.float64)
    n = np.frombuffer(trim_silence(needle), dtype=np.int16).astype(np.float64)
    if not n.size or h.size < n.size:
        return 0.0
    size = 1 << int(np.ceil(np.log2(h.size + n.size)))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(n, size)), size)
    corr = corr[: h.size - n.size + 1]
    energy = np.concatenate(([0.0], np.cumsum(h**2)))
    window = np.sqrt(np.maximum(energy[n.size :] - energy[: -n.size], 1e-9))
    return float(np.max(corr / (window * np.linalg.norm(n))))


async def announced(store: CallStore, result: SimulationResult) -> bytes:
    """The announcement as the caller heard it: from the call's first sound, for its duration,
    then 0.3 s of silence (the same audio on every run, however late some of it came)."""
    events = await store.events(result.call_id)
    started = next(e for e in events if e.type == CallEventType.ANNOUNCEMENT_STARTED)
    pcm = np.frombuffer(unbroken(bytes(result.agent_audio)), dtype=np.int16)
    begin = int(np.argmax(np.abs(pcm) > 500))
    end = begin + int(float(started.data["duration_s"]) * PHONE_RATE)
    return pcm[begin:end].tobytes() + pause(0.3)


async def test_a_french_caller_hears_french_is_understood_and_says_goodbye(
    live_server: LiveServer, live_redis: Redis, voices, whisper
) -> None:  # type: ignore[no-untyped-def]
    await french_bakery(live_redis)
    store = call_store(live_server, live_redis)
    goodbye = await asyncio.to_thread(say_in, "fr", GOODBYE, *GOODBYE_VOICE)
    lines = [
        ("question", await asyncio.to_thread(say_in, "fr", QUESTION)),
        # Said again while the call goes on, as a caller does when not heard: Whisper base
        # drops some of espeak-ng's lines as silence, depending on where the VAD's windows fall.
        *[("goodbye", goodbye)] * 3,
        ("never said", await asyncio.to_thread(say_in, "fr", "Vous êtes toujours là ?")),
    ]
    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
    result = await sim.run(lines)
    await wait_closed(store, result.call_id)
    record = await store.get(result.call_id)
    assert record is not None and record.language == "fr", record

    # Whisper heard the question in French: its key words are in the stored transcript.
    transcript = await store.transcript(result.call_id)
    caller = [plain(t.text) for t in transcript if t.role == "caller"]
    assert caller and sum(w in caller[0] for w in QUESTION_WORDS) >= 2, transcript

    # What the caller heard first: the announcement in French.
    heard = plain(await asyncio.to_thread(hear_in, whisper, "fr", await announced(store, result)))
    assert "enregistr" in heard and "intelligence artificielle" in heard, heard

    # "Au revoir" ends the call: the platform says its French farewell, then hangs up.
    labels = [t.label for t in result.turns]
    assert result.closed_by_platform and labels[-1] == "goodbye", labels
    assert "never said" not in labels, labels
    events = await store.events(result.call_id)
    hangup = [e.data for e in events if e.type == CallEventType.HANGUP_REQUESTED]
    assert hangup and hangup[0] == {"by": "caller", "reason": "closing phrase"}, hangup
    assert "revoir" in caller[-1], transcript
    assert transcript[-1].role == "agent" and transcript[-1].text == SAY.farewell, transcript
    said_bye = int((result.turns[-1].speech_end - result.started_at) * PHONE_RATE) * 2
    after = unbroken(bytes(result.agent_audio[said_bye:]))
    farewell = await asyncio.to_thread(speak, voices.get(VOICE), SAY.farewell)
    assert found(after, farewell) > 0.8


async def test_a_french_objection_stops_the_recording(
    live_server: LiveServer, live_redis: Redis, voices, whisper
) -> None:  # type: ignore[no-untyped-def]
    await french_bakery(live_redis)
    store = call_store(live_server, live_redis)
    objects = encrypted_store(live_server, live_redis)
    refusal = await asyncio.to_thread(say_in, "fr", "Je ne veux pas être enregistré.")
    again = await asyncio.to_thread(say_in, "fr", "Je ne voudrais pas être enregistré.")
    sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
    # The caller insists: Whisper base mishears some of espeak-ng's lines ("Je ne me parais pas
    # d'enregistrer"), depending on where the VAD's windows fall.
    lines = [("refusal", refusal), ("refusal", again), ("refusal", refusal)]
    result = await sim.run(lines, quiet_after_reply=2.0)
    await wait_closed(store, result.call_id)

    events = await store.events(result.call_id)
    kinds = [e.type for e in events]
    objected = [e.data for e in events if e.type == CallEventType.RECORDING_OBJECTED]
    assert objected and objected[0]["how"] == "spoken", (
        kinds,
        await store.transcript(result.call_id),
        live_server.tail(),
    )
    assert await objects.of_call(result.call_id) == []  # recording and transcript deleted
    assert not list((live_server.log.parent / "objects").rglob(f"*{result.call_id}*/*"))

    # The caller is told, in French, that the call is no longer recorded.
    said = int((result.turns[0].speech_end - result.started_at) * PHONE_RATE) * 2
    after = unbroken(bytes(result.agent_audio[said:]))
    not_recorded = await asyncio.to_thread(speak, voices.get(VOICE), SAY.not_recorded)
    assert found(after, not_recorded) > 0.8
