"""Prometheus metrics of the call pipeline (served at ``/metrics`` by the API)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIVE_CALLS = Gauge("bonmoniq_active_calls", "Calls whose media session runs in this process.")
CALLS = Counter(
    "bonmoniq_calls_total", "Media sessions run to their end, by how they ended.", ["outcome"]
)

EARLY_TRANSCRIPTS = Counter(
    "bonmoniq_early_transcripts_total",
    "Transcriptions started when the caller paused: used (the pause was the end of speech) "
    "or discarded (the caller went on).",
    ["outcome"],
)
SPECULATIVE_ANSWERS = Counter(
    "bonmoniq_speculative_answers_total",
    "Answers started inside the pause window: kept (the turn ended on that transcript) or "
    "withdrawn (the caller went on, or the transcript changed).",
    ["outcome"],
)

GAVE_WAY = Counter(
    "bonmoniq_tts_gave_way_total",
    "Synthesis of the rest of an answer that waited for work a caller was waiting for "
    "(a Whisper decode, an answer's first chunk) to finish first.",
)
GAVE_WAY_SECONDS = Counter(
    "bonmoniq_tts_gave_way_seconds_total",
    "Seconds the synthesis of the rest of answers waited for work callers were waiting for.",
)

#: The marks of a caller's turn, in the order they happen; each stage ends at its mark.
STAGES = (
    "vad",  # the caller's end of speech -> the VAD declares it (its stop_secs hangover)
    "stt",  # -> the transcript
    "turn_end",  # -> the turn strategy hands the turn to the LLM (user_speech_timeout)
    "llm_first_token",  # -> the LLM's first token
    "first_sentence",  # -> the first complete sentence reaches the TTS
    "tts_first_audio",  # -> the TTS's first audio
    "transport",  # -> the output transport starts sending it to the caller
)
STAGE_SECONDS = Histogram(
    "bonmoniq_pipeline_stage_seconds",
    "Each caller turn timed inside the pipeline, stage by stage: vad (end of speech to the "
    "VAD's end of turn), stt (to the transcript), turn_end (to the turn handed to the LLM), "
    "llm_first_token, first_sentence (to the first complete sentence reaching the TTS), "
    "tts_first_audio, transport (to the first agent audio sent); response is the sum: the "
    "caller's end of speech, as the VAD saw it, to the agent's first audio.",
    ["stage"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0),
)


class TurnTimeline:
    """The marks of the caller's current turn, observed as stage latencies once answered.

    A turn starts when the VAD reports the end of the caller's speech (a later report starts it
    again: the caller went on talking); each mark keeps its first time; the agent's first audio
    sent closes it. A stage whose mark never came (a phrase from the cache has no LLM token) is
    folded into the next one.
    """

    def __init__(self) -> None:
        """No turn under way."""
        self._marks: dict[str, float] = {}

    def speech_ended(self, vad_at: float, hangover_s: float) -> None:
        """The VAD declared the end of speech at ``vad_at``, ``hangover_s`` after it ended.

        The same report seen again (observers see a frame at every hop) changes nothing.
        """
        if self._marks.get("vad") != vad_at:
            self._marks = {"speech_end": vad_at - hangover_s, "vad": vad_at}

    def mark(self, stage: str, at: float) -> None:
        """``stage`` ended at ``at`` (ignored outside a turn, and after its first time)."""
        if self._marks and stage not in self._marks:
            self._marks[stage] = at

    def awaits(self, stage: str) -> bool:
        """Whether a caller's turn is under way and ``stage`` has not ended yet in it."""
        return bool(self._marks) and stage not in self._marks

    def answered(self, at: float) -> dict[str, float] | None:
        """The agent's first audio went out at ``at``: the turn's stages, observed; or ``None``."""
        if not self._marks:
            return None
        marks, self._marks = {**self._marks, "transport": at}, {}
        out: dict[str, float] = {}
        previous = marks["speech_end"]
        for stage in STAGES:
            if stage in marks and marks[stage] >= previous:
                out[stage] = marks[stage] - previous
                previous = marks[stage]
        out["response"] = at - marks["speech_end"]
        for stage, seconds in out.items():
            STAGE_SECONDS.labels(stage).observe(seconds)
        return out
