"""Fixtures of the voice tests: the process-wide speech engines on the real models."""

from __future__ import annotations

import onnxruntime
import pytest

from voice.engines import Engines, silero_model_path


@pytest.fixture(scope="module")
def engines(voices, whisper) -> Engines:  # type: ignore[no-untyped-def]
    """Whisper, Piper and Silero as a call uses them (no LLM: these tests ask none)."""
    silero = onnxruntime.InferenceSession(
        str(silero_model_path()), providers=["CPUExecutionProvider"]
    )
    return Engines(whisper, voices, silero, llm=None)  # type: ignore[arg-type]
