"""The embedded llama.cpp server with the real SmolLM2 model, and the one client."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import AsyncOpenAI

from llm import EmbeddedLLMServer, LLMEndpoint, LLMUnavailable, free_port
from llm.client import probe


async def test_embedded_server_starts_streams_and_stops(gguf: Path, tmp_path: Path) -> None:
    server = EmbeddedLLMServer(gguf, "smollm2", tmp_path / "llm.log")
    endpoint = server.start()
    try:
        assert endpoint.base_url.startswith("http://127.0.0.1:")
        assert "smollm2" in await probe(endpoint)
        client = AsyncOpenAI(base_url=endpoint.v1, api_key="not-needed")
        stream = await client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=16,
            stream=True,
        )
        chunks = [
            c.choices[0].delta.content
            async for c in stream
            if c.choices and c.choices[0].delta.content
        ]
        assert len(chunks) > 1 and "".join(chunks).strip()  # streamed, token by token
    finally:
        server.stop()
    with pytest.raises(LLMUnavailable):
        await probe(endpoint, limit_s=1)


async def test_probe_of_a_dead_endpoint_is_a_clear_error() -> None:
    with pytest.raises(LLMUnavailable, match="did not answer"):
        await probe(LLMEndpoint(f"http://127.0.0.1:{free_port()}", "x"), limit_s=1)


def test_a_broken_model_file_fails_start_with_the_log_path(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf")
    server = EmbeddedLLMServer(bad, "x", tmp_path / "llm.log")
    with pytest.raises(LLMUnavailable, match="llm.log"):
        server.start(timeout=30)


async def test_answers_are_cut_after_whole_sentences_and_the_server_stops(
    gguf: Path, tmp_path: Path
) -> None:
    """The phone client keeps two whole sentences; the server stops writing the rest."""
    import asyncio
    import re

    from llm.client import SentenceCappedStream

    server = EmbeddedLLMServer(gguf, "smollm2", tmp_path / "llm.log")
    endpoint = server.start()
    client = AsyncOpenAI(base_url=endpoint.v1, api_key="not-needed")
    try:
        cut = 0
        for topic in ("bread", "the weather", "bicycles", "the sea"):
            stream = SentenceCappedStream(
                await client.chat.completions.create(
                    model=endpoint.model,
                    messages=[{"role": "user", "content": f"Tell me a long story about {topic}."}],
                    max_tokens=200,
                    temperature=0,
                    stream=True,
                ),
                sentences=2,
            )
            text = "".join(
                [
                    c.choices[0].delta.content
                    async for c in stream
                    if c.choices and c.choices[0].delta.content
                ]
            )
            await stream.close()
            if stream.cut:
                cut += 1
                # Two sentences, ending with the second one's punctuation.
                assert len(re.findall(r"[.!?](?=\s)", text)) == 1, text
                assert re.search(r"[.!?][\"')\]]*$", text.strip()), text
        assert cut >= 2  # a long story runs past two sentences
        # llama.cpp's server noticed each closed stream and stopped generating.
        for _ in range(50):
            if (tmp_path / "llm.log").read_text().count("Disconnected from client") >= cut:
                break
            await asyncio.sleep(0.1)
        assert (tmp_path / "llm.log").read_text().count("Disconnected from client") >= cut
    finally:
        server.stop()


async def test_pipecat_s_developer_messages_reach_the_embedded_server_as_the_user_s(
    gguf: Path, tmp_path: Path
) -> None:
    """pipecat adds a "developer" message after a turn it could not transcribe; llama.cpp's
    server answers 500 to that role, which ended the call with an apology."""
    from pipecat.frames.frames import ErrorFrame, LLMMessagesAppendFrame, LLMTextFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.tests.utils import SleepFrame, run_test
    from pipecat.turns.empty_user_turn import DEFAULT_EMPTY_USER_TURN_INTERRUPTED_PROMPT

    from llm.client import create_llm_service

    server = EmbeddedLLMServer(gguf, "smollm2", tmp_path / "llm.log")
    endpoint = server.start()
    try:
        llm = create_llm_service(
            endpoint, system="You are a receptionist.", max_tokens=24, temperature=0.0
        )
        pair = LLMContextAggregatorPair(LLMContext())
        messages = [
            {"role": "user", "content": "Hello."},
            {"role": "developer", "content": DEFAULT_EMPTY_USER_TURN_INTERRUPTED_PROMPT},
        ]
        down, _ = await run_test(
            Pipeline([pair.user(), llm]),
            frames_to_send=[LLMMessagesAppendFrame(messages, run_llm=True), SleepFrame(sleep=3.0)],
        )
    finally:
        server.stop()
    assert not [f for f in down if isinstance(f, ErrorFrame)]
    assert "".join(f.text for f in down if isinstance(f, LLMTextFrame)).strip()
