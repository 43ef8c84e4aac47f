"""Run every benchmark and print one JSON document (BENCHMARKS.md explains the figures)."""

from __future__ import annotations

import asyncio
import json
import sys

from bench import call_latency, encryption, stt_window, voice


def main() -> int:
    results = {
        "encryption": encryption.run(),
        "stt_window": stt_window.run(),
        "voice": asyncio.run(voice.run()),
        "call_latency": asyncio.run(call_latency.run()),
    }
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
