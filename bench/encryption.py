"""Encryption throughput: recording segments sealed by recordings/ next to raw AES-256-GCM.

Both run in this process on the same data: ``ours`` is the STREAM sealer (per-segment nonce,
identity and header as associated data, length prefix), ``ours_stored`` adds the local storage
backend's append (one write per segment to a file under a temporary directory), ``raw`` is the
``cryptography`` package's AES-GCM alone with a fresh nonce per segment. The ratio says what the
format costs over the primitive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recordings.crypto import Identity, Sealer, new_key
from recordings.storage import LocalStorage

SEGMENT = 32000  # one second of 8 kHz 16-bit stereo: what a recording seals at a time
TOTAL_MB = 256


def _raw(key: bytes, data: bytes, n: int) -> float:
    aead = AESGCM(key)
    t0 = time.perf_counter()
    for _ in range(n):
        aead.encrypt(os.urandom(12), data, b"")
    return time.perf_counter() - t0


def _ours(key: bytes, data: bytes, n: int) -> float:
    sealer = Sealer(key, Identity("ten_bench", "call_bench", "recording"))
    t0 = time.perf_counter()
    for _ in range(n - 1):
        sealer.seal(data)
    sealer.seal(data, last=True)
    return time.perf_counter() - t0


async def _stored(key: bytes, data: bytes, n: int, root: Path) -> float:
    storage = LocalStorage(root)
    sealer = Sealer(key, Identity("ten_bench", "call_bench", "recording"))
    t0 = time.perf_counter()
    out = await storage.create("bench/object.bmqe")
    await out.append(sealer.header)
    for _ in range(n - 1):
        await out.append(sealer.seal(data))
    await out.append(sealer.seal(data, last=True))
    await out.finalize()
    return time.perf_counter() - t0


def machine() -> dict[str, Any]:
    """The CPU model and core count."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count()}


def run() -> dict[str, Any]:
    key, data = new_key(), os.urandom(SEGMENT)
    n = TOTAL_MB * 1_000_000 // SEGMENT
    mb = n * SEGMENT / 1e6
    raw = min(_raw(key, data, n) for _ in range(3))
    ours = min(_ours(key, data, n) for _ in range(3))
    with tempfile.TemporaryDirectory() as tmp:
        stored = min(asyncio.run(_stored(key, data, n, Path(tmp) / str(i))) for i in range(3))
    return {
        "segment_bytes": SEGMENT,
        "megabytes": round(mb, 1),
        "raw_aes256gcm_mb_s": round(mb / raw, 1),
        "ours_mb_s": round(mb / ours, 1),
        "ours_stored_mb_s": round(mb / stored, 1),
        "ratio_ours_raw": round(raw / ours, 3),
        "ratio_stored_raw": round(raw / stored, 3),
        "realtime_recordings_per_core": int(mb / ours * 1e6 / (8000 * 2 * 2)),
        "machine": machine(),
    }
