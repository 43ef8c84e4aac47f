"""Run the benchmarks and print one JSON document (BENCHMARKS.md explains the figures)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from bench import (
    call_latency,
    channels,
    cluster,
    encryption,
    lang_detect,
    sip_audio,
    stt_window,
    voice,
    voices,
)

#: Each benchmark by name, in the order ``python -m bench`` runs them.
BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "encryption": encryption.run,
    "stt_window": stt_window.run,
    "sip_audio": sip_audio.run,
    "lang_detect": lang_detect.run,
    "voices": voices.run,
    "voice": lambda: asyncio.run(voice.run()),
    "call_latency": lambda: asyncio.run(call_latency.run()),
    "channels": lambda: asyncio.run(channels.run()),
    "cluster": lambda: asyncio.run(cluster.run()),
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named on the command line (all of them by default)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"one of {', '.join(BENCHMARKS)} (default: all)"
    )
    names = parser.parse_args(argv).names or list(BENCHMARKS)
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"unknown benchmark {', '.join(unknown)}")
    results = {name: BENCHMARKS[name]() for name in names}
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
