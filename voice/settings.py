"""Settings of a call's pipeline: voice activity, end of turn, call length, phrase cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from carriers.base import HANGUP_GRACE_S

if TYPE_CHECKING:
    from pipecat.audio.vad.vad_analyzer import VADParams

#: The longest call the platform may allow: the carriers' own maximum (4 hours) less the grace
#: they are given after the platform's closing phrase.
CALL_MAX_LIMIT_S = 4 * 3600 - HANGUP_GRACE_S
#: MB of synthesized fixed phrases kept per process by default (``BONMONIQ_PHRASE_CACHE_MB``).
PHRASE_CACHE_MB = 64


class CallSettings(BaseSettings):
    """``BONMONIQ_VAD_*``, ``BONMONIQ_TURN_TIMEOUT_SECS``, call lengths, the phrase cache."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_", extra="ignore")

    # End of turn (BENCHMARKS.md): the VAD declares silence after vad_stop_secs; the turn ends
    # turn_timeout_secs later, a wait that runs while Whisper transcribes, so a caller may pause
    # mid-sentence without being answered.
    vad_stop_secs: float = 0.25
    turn_timeout_secs: float = 0.35
    # Start of speech: short, so one-word answers ("Yes.", "Bye.") are heard (BENCHMARKS.md).
    vad_start_secs: float = 0.1
    vad_min_volume: float = 0.5
    early_stt: bool = Field(
        default=True,
        description="Transcribe when the caller pauses, not after the VAD's stop_secs "
        "(voice/services.py).",
    )
    speculate: bool = Field(
        default=True,
        description="Start the answer inside the pause window, hold it until the window "
        "closes (voice/turns.py).",
    )
    call_max_seconds: int = Field(
        default=900,
        ge=1,
        le=CALL_MAX_LIMIT_S,
        description="The platform ends a call (closing phrase, then hang-up at the carrier) "
        "after this long; carriers that take a limit get it plus 30 s as their own (the "
        "carriers' maximum is 4 hours, so at most 14370).",
    )
    inbound_call_max_seconds: int | None = Field(
        default=None,
        ge=1,
        le=CALL_MAX_LIMIT_S,
        description="The same for inbound calls. Unset: BONMONIQ_CALL_MAX_SECONDS.",
    )
    phrase_cache_mb: int = Field(
        default=PHRASE_CACHE_MB,
        ge=0,
        description="MB of synthesized fixed phrases (announcements, greetings) kept per "
        "process, the least recently used dropped first; a dropped phrase is synthesized again "
        "when next needed (0: none kept, each call synthesizes its phrases).",
    )

    def max_seconds_of(self, direction: str) -> int:
        """The maximum length of a call going ``direction`` ("inbound" or "outbound")."""
        if direction == "inbound" and self.inbound_call_max_seconds is not None:
            return self.inbound_call_max_seconds
        return self.call_max_seconds

    def vad_params(self) -> VADParams:
        """The VAD's thresholds (pipecat's confidence 0.7; start, stop and volume tuned).

        pipecat's defaults (start after 0.2 s of speech at volume 0.6) miss short answers: its
        volume is measured over a 0.4 s window and smoothed, so a short "Yes." or "No." is loud
        enough for too short a time. BENCHMARKS.md has the measurement.
        """
        # pipecat logs a banner when first imported: settings are read before logging is set.
        from pipecat.audio.vad.vad_analyzer import VADParams

        return VADParams(
            start_secs=self.vad_start_secs,
            stop_secs=self.vad_stop_secs,
            min_volume=self.vad_min_volume,
        )
