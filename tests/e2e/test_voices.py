"""End to end: two agents with different voices in simultaneous calls on one platform.

An English agent speaks with Piper (en_US-joe-medium), a French one with espeak-ng's French;
both callers call at once. Each hears its own agent's language and voice, and the process
has loaded each voice once (its log says which voices it loaded, and when).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from carriers.simulation import trim_silence
from carriers.twilio.simulator import TwilioSimulator
from routing import Agent, Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, call_store
from tests.e2e.test_french_call import BOULANGERIE, QUESTION, announced, found
from tests.helpers import BAKERY, hear, hear_in, plain, say_in, wait_closed, words
from voice.phrasebook import phrases
from voice.voices import PHONE_RATE, speak, synthesize

pytestmark = pytest.mark.slow

ENGLISH, FRENCH = "en_US-joe-medium", "espeak-ng-fr"


def loaded(server: LiveServer) -> list[str]:
    """The voices the platform's log says it loaded, in order (a voice each time it loaded)."""
    out = []
    for line in server.log.read_text(errors="replace").splitlines():
        if '"voice loaded"' in line:
            out.append(json.loads(line)["voice"])
    return out


async def test_two_voices_speak_in_simultaneous_calls(
    live_server: LiveServer, live_redis: Redis, voice, voices, whisper
) -> None:  # type: ignore[no-untyped-def]
    d = Directory(live_redis)
    await d.add_agent(Agent(name="bakery", prompt=BAKERY, voice=ENGLISH))
    await d.add_agent(Agent(name="boulangerie", prompt=BOULANGERIE, language="fr", voice=FRENCH))
    await d.add_number("+15555550100", "bakery")
    await d.add_number("+15555550200", "boulangerie")
    store = call_store(live_server, live_redis)
    english = trim_silence(
        await asyncio.to_thread(synthesize, voice, "What time do you open on Saturday?", PHONE_RATE)
    )
    french = await asyncio.to_thread(say_in, "fr", QUESTION)

    def sim(to: str) -> TwilioSimulator:
        return TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=to)

    en, fr = await asyncio.gather(
        sim("+15555550100").run([("question", english)]),
        sim("+15555550200").run([("question", french)]),
    )
    for result in (en, fr):
        await wait_closed(store, result.call_id)

    def first(result, line: bytes) -> bytes:  # type: ignore[no-untyped-def]
        """What the caller heard before asking (the audio is on the call's timeline)."""
        asked = int((result.turns[0].speech_end - result.started_at) * PHONE_RATE) * 2
        return bytes(result.agent_audio[: max(asked - len(line), 0)])

    # The English caller hears English from Piper; the French caller French from espeak-ng.
    heard_en = await asyncio.to_thread(hear, whisper, await announced(store, en))
    assert {"assistant", "recorded"} <= words(heard_en), heard_en
    heard_fr = plain(await asyncio.to_thread(hear_in, whisper, "fr", await announced(store, fr)))
    assert "artificiel" in heard_fr, heard_fr
    fr_first = first(fr, french)
    greeting = await asyncio.to_thread(speak, voices.get(FRENCH), phrases("fr").say.greeting)
    assert found(fr_first, greeting) > 0.8  # espeak-ng's own audio of the French greeting
    assert found(first(en, english), greeting) < 0.5  # which the English caller never heard

    # Each call's words are its own: the question in its language, transcribed in it.
    said_en = " ".join(
        t.text for t in await store.transcript(en.call_id) if t.role == "caller"
    ).lower()
    said_fr = plain(
        " ".join(t.text for t in await store.transcript(fr.call_id) if t.role == "caller")
    )
    assert "saturday" in said_en and "samedi" not in said_en, said_en
    assert "samedi" in said_fr and "saturday" not in said_fr, said_fr
    record_en, record_fr = await store.get(en.call_id), await store.get(fr.call_id)
    assert record_en is not None and record_en.language == "en"
    assert record_fr is not None and record_fr.language == "fr"

    # One process, both voices loaded, each once (shared by every call that speaks with it).
    voices_loaded = loaded(live_server)
    assert {ENGLISH, FRENCH} <= set(voices_loaded), voices_loaded
    assert voices_loaded.count(ENGLISH) == 1 and voices_loaded.count(FRENCH) == 1, voices_loaded
