"""The one OpenAI-compatible streaming client, for vLLM and the embedded server alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.llm import OpenAILLMService

from llm.endpoint import LLMEndpoint
from llm.errors import LLMUnavailable
from llm.scheduler import sentence_ends


class SentenceCappedStream:
    """A streamed chat completion cut after ``sentences`` complete sentences.

    A phone answer is one or two sentences (the system prompt says so), but small models run
    on to ``max_tokens`` and stop mid-sentence, which the caller then hears. Cutting the
    stream at a sentence end closes the HTTP response, and the server (llama.cpp's checks
    for a disconnected client after every token; vLLM aborts the request) stops generating:
    a single LLM server is free sooner for the next call's turn.
    """

    def __init__(self, stream: Any, sentences: int) -> None:
        """Pass on ``stream``'s chunks until ``sentences`` sentences are complete."""
        self._stream = stream
        self._sentences = sentences
        self.cut = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        text = ""
        ended = 0
        async for chunk in self._stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            content = (delta.content or "") if delta is not None else ""
            if content and sentence_ends(text, content):
                ended += 1
                if ended >= self._sentences:
                    self.cut = True
                    return
            text += content
            yield chunk

    async def close(self) -> None:
        """Close the response: the server stops writing the rest of the answer."""
        await self._stream.close()


class PhoneLLMService(OpenAILLMService):
    """pipecat's OpenAI-compatible service, its answers cut after ``max_sentences``."""

    def __init__(self, *, max_sentences: int = 0, **kwargs: Any) -> None:
        """As :class:`OpenAILLMService`; ``max_sentences`` 0 leaves answers whole."""
        super().__init__(**kwargs)
        self._max_sentences = max_sentences

    async def get_chat_completions(self, context: LLMContext) -> Any:
        """The streamed completion, cut after ``max_sentences`` sentences."""
        stream = await super().get_chat_completions(context)
        if self._max_sentences <= 0:
            return stream
        return SentenceCappedStream(stream, self._max_sentences)


def create_llm_service(
    endpoint: LLMEndpoint,
    *,
    system: str,
    max_tokens: int,
    temperature: float,
    max_sentences: int = 0,
) -> OpenAILLMService:
    """A streaming chat-completions service for one call's pipeline, with its system prompt."""
    return PhoneLLMService(
        max_sentences=max_sentences,
        base_url=endpoint.v1,
        # The openai SDK insists on a key; self-hosted servers accept any.
        api_key=endpoint.api_key or "not-needed",
        settings=OpenAILLMService.Settings(
            model=endpoint.model,
            max_tokens=max_tokens,
            temperature=temperature,
            system_instruction=system,
        ),
        retry_timeout_secs=10.0,
    )


async def probe(endpoint: LLMEndpoint, limit_s: float = 3.0) -> list[str]:
    """Ask the server for its models; the model ids, or :class:`LLMUnavailable`."""
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        async with httpx.AsyncClient(timeout=limit_s) as client:
            r = await client.get(f"{endpoint.v1}/models", headers=headers)
            r.raise_for_status()
            return [m["id"] for m in r.json().get("data", [])]
    except (httpx.HTTPError, ValueError, KeyError) as e:
        raise LLMUnavailable(f"LLM server {endpoint.v1} did not answer: {e}") from e
