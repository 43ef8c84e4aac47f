"""Prometheus metrics of the call pipeline (served at ``/metrics`` by the API)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIVE_CALLS = Gauge("bonmoniq_active_calls", "Calls whose media session runs in this process.")
CALLS = Counter("bonmoniq_calls_total", "Media sessions run to their end, by how they ended.",
                ["outcome"])  # fmt: skip
STAGE_SECONDS = Histogram(
    "bonmoniq_pipeline_stage_seconds",
    "Pipeline stage latencies: stt (transcription), stt_ttfb (end of speech to transcript), "
    "llm_ttfb (first token), tts_ttfb (first audio), response (caller's end of speech, as the "
    "VAD saw it, to the agent's first audio).",
    ["stage"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0),
)
