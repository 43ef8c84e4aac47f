"""``bonmoniq call``: drive the Twilio simulator and report what happened."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from app.local_redis import LocalRedis
from app.runtime import DEMO_NUMBER
from app.settings import Settings
from carriers.base import Carrier
from carriers.registry import load_carriers
from carriers.simulation import read_wav, trim_silence
from carriers.sinch.kit import DEV_API_PORT as DEV_SINCH_API_PORT
from carriers.sinch.simulator import SinchSimulator
from carriers.telnyx.kit import DEV_API_PORT as DEV_TELNYX_API_PORT
from carriers.telnyx.simulator import TelnyxSimulator
from carriers.twilio.kit import TwilioKit
from carriers.twilio.simulator import TwilioSimulator
from models import Role, profile_models, verify_model
from voice.engines import PHONE_RATE, load_voice, synthesize

DEFAULT_QUESTION = "What time do you open on Saturday?"


def utterances_for(
    settings: Settings, sentences: list[str], wavs: list[Any]
) -> list[tuple[str, bytes]]:
    """8 kHz PCM of each WAV file and of each sentence (spoken by the local Piper voice)."""
    out = [(str(w), trim_silence(read_wav(w))) for w in wavs]
    if sentences:
        spec = profile_models("cpu")[Role.TTS]
        voice = load_voice(verify_model(spec, settings.models_cache))
        out += [(s, trim_silence(synthesize(voice, s, PHONE_RATE))) for s in sentences]
    return out


async def _report(settings: Settings, call_id: str) -> dict[str, Any] | None:
    """The platform's record of the call, read from its Redis once the media has closed."""
    from app.commands import call_report
    from app.core import build_platform, open_store, readable_objects

    url = settings.store.url
    if not url and not settings.store.sentinels:
        local = LocalRedis(settings.var_dir)
        if not local.answers():
            return None
        url = local.url
    client = open_store(settings, url)
    try:
        core = build_platform(settings, client, objects=readable_objects(settings, client))
        deadline = time.monotonic() + 10
        while True:
            report = await call_report(core, call_id)
            closed = report and any(e["type"] == "media_closed" for e in report["events"])
            if closed or time.monotonic() > deadline:
                return report
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


def simulator_for(settings: Settings, carrier: str, to: str, from_: str, url: str | None) -> Any:
    """The simulator of ``carrier``, with the account's secrets it needs to sign as the carrier.

    Telnyx signs with a private key no real account hands out: its simulator works with the
    local development accounts only (and plays the Telnyx and Sinch REST APIs on loopback).
    """
    carriers = load_carriers(settings.carriers, settings.var_dir)
    if carrier == "twilio":
        twilio = carriers.find(Carrier.TWILIO, TwilioKit)
        if twilio is None:
            raise ValueError("Twilio is not configured")
        sid, token = twilio.account.account_sid, twilio.account.auth_token
        return TwilioSimulator(settings.public_url, sid, token, to=to, from_=from_, base_url=url)
    if carriers.dev is None:
        raise ValueError(
            f"the {carrier} simulator needs the local development accounts (no carrier configured)"
        )
    if carrier == "telnyx":
        x = carriers.dev["telnyx"]
        keys = (x["private_key"], x["api_key"])
        return TelnyxSimulator(settings.public_url, *keys, DEV_TELNYX_API_PORT, to=to, from_=from_)
    s = carriers.dev["sinch"]
    app = (s["app_key"], s["app_secret"])
    caller = from_.lstrip("+")  # Sinch writes numbers without the plus
    return SinchSimulator(settings.public_url, *app, DEV_SINCH_API_PORT, to=to, from_=caller)


async def simulate(settings: Settings, args: argparse.Namespace) -> int:
    """Place the call, write the agent's audio, print transcript and per-turn latency."""
    sentences = list(args.say) or ([] if args.wav else [DEFAULT_QUESTION])
    utterances = await asyncio.to_thread(utterances_for, settings, sentences, list(args.wav))
    sim = simulator_for(settings, args.carrier, args.to or DEMO_NUMBER, args.from_, args.url)
    result = await sim.run(utterances, barge_in_after=args.barge_in)
    result.write_wav(args.out)
    report = await _report(settings, result.call_id)
    turns = [{"said": t.label, "latency_s": t.latency_s} for t in result.turns]
    if args.json:
        print(
            json.dumps(
                {
                    "call_id": result.call_id,
                    "call_sid": result.call_sid,
                    "turns": turns,
                    "audio": str(args.out),
                    "clears": result.clears,
                    "transcript": report["transcript"] if report else None,
                },
                indent=2,
            )
        )
        return 0
    print(f"call {result.call_id} ({result.call_sid}); agent audio written to {args.out}")
    if report:
        for t in report["transcript"] or []:
            print(f"  [{t['role']:6}] {t['text']}")
    else:
        print("  (transcript not available: the platform's Redis is not reachable from here)")
    for i, t in enumerate(turns, 1):
        shown = f"{t['latency_s']:.2f} s" if t["latency_s"] is not None else "no answer"
        print(f"  turn {i}: end of speech -> first agent audio: {shown}")
    return 0
