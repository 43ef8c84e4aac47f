"""End to end: an ``auto`` agent answers each caller in the caller's language, on real models.

Two calls to the same agent on a US number (the calls open in English): an English caller
(Piper) and a French one (espeak-ng). Each call's record has the language Whisper detected;
the French caller hears the announcement again, in French, before the answer.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import soxr
from redis.asyncio import Redis

from calls.events import CallEventType
from carriers.simulation import trim_silence
from carriers.twilio.simulator import TwilioSimulator
from routing import Directory
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, LiveServer, call_store
from tests.helpers import BAKERY, auth, new_tenant, say_in, wait_closed, words
from tests.voice.test_language_detection import FRENCH
from voice.engines import PHONE_RATE, synthesize

pytestmark = pytest.mark.slow

NUMBER = "+15555550100"
#: The French caller's lines (short, common words that Whisper base hears through 8 kHz).
LINES = ("Bonjour, je voudrais commander un gâteau pour samedi.", FRENCH)
#: Words of French's default announcement (voice/lang/fr.toml), as beginnings of words.
ANNOUNCED = ("intelligence", "artificiel", "système", "automatis", "personne", "enregistr")


def hear_in(whisper, language: str, pcm8k: bytes) -> str:  # type: ignore[no-untyped-def]
    """What Whisper, told the language, hears in 8 kHz PCM."""
    samples = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float32) / 32768
    audio = soxr.resample(samples, 8000, 16000)
    # The VAD filter: the caller's pauses between the agent's phrases are left out.
    segments, _ = whisper.transcribe(audio, language=language, vad_filter=True)
    return " ".join(s.text for s in segments)


async def test_an_auto_agent_answers_each_caller_in_their_language(
    live_server: LiveServer, live_redis: Redis, voice, whisper
) -> None:  # type: ignore[no-untyped-def]
    tenant, key = await new_tenant(live_server, "auto")
    api = httpx.AsyncClient(base_url=live_server.url, headers=auth(key))
    body = {"name": "bakery", "system_prompt": BAKERY, "language": "auto"}
    r = await api.post("/v1/agents", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["language"] == "auto"
    d = Directory(live_redis)
    await d.attach(NUMBER, await d.get_agent_by_id(r.json()["agent_id"], tenant))
    store = call_store(live_server, live_redis)

    english = trim_silence(
        await asyncio.to_thread(synthesize, voice, "What time do you open on Saturday?", PHONE_RATE)
    )
    # Whisper base may take espeak-ng's French through 8 kHz for silence: a second line then.
    french = [(f"fr{n}", await asyncio.to_thread(say_in, "fr", s)) for n, s in enumerate(LINES)]
    calls = {}
    for language, lines in (("en", [("en", english)]), ("fr", french)):
        sim = TwilioSimulator(live_server.url, ACCOUNT_SID, AUTH_TOKEN, to=NUMBER)
        calls[language] = await sim.run(lines, reply_timeout=20.0, quiet_after_reply=3.0)
        await wait_closed(store, calls[language].call_id)

    for language, result in calls.items():
        record = await store.get(result.call_id)
        events = await store.events(result.call_id)
        said = await store.transcript(result.call_id)
        assert record is not None and record.language == language, (
            language,
            [(e.type, e.data) for e in events],
            said,
        )
        detected = [e.data for e in events if e.type == CallEventType.LANGUAGE_DETECTED]
        assert [d["language"] for d in detected] == [language], detected
        assert 0 < detected[0]["probability"] <= 1
        assert set(detected[0]) == {"language", "probability"}  # no words in events

    # The calls API shows each call's language.
    for language, result in calls.items():
        r = await api.get(f"/v1/calls/{result.call_id}")
        assert r.status_code == 200 and r.json()["language"] == language, r.text
    listed = {i["call_id"]: i["language"] for i in (await api.get("/v1/calls")).json()["items"]}
    assert listed == {r.call_id: language for language, r in calls.items()}
    await api.aclose()

    # The English call opened in English and stayed so: no second announcement.
    en = calls["en"]
    transcript = await store.transcript(en.call_id)
    caller = [t.text for t in transcript if t.role == "caller"]
    assert caller and {"open", "saturday"} <= words(caller[0]), transcript

    # The French caller hears, after their first words, the announcement in French (espeak-ng's
    # French through 8 kHz: Whisper base hears some of its words, not all).
    fr = calls["fr"]
    asked = int((fr.turns[0].speech_end - fr.started_at) * PHONE_RATE) * 2
    heard = hear_in(whisper, "fr", bytes(fr.agent_audio[asked:])).lower()
    assert sum(word in heard for word in ANNOUNCED) >= 2, heard
    transcript = await store.transcript(fr.call_id)
    assert [t for t in transcript if t.role == "caller"], transcript
