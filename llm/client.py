"""The one OpenAI-compatible streaming client, for vLLM and the embedded server alike."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pipecat.frames.frames import LLMTextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.llm import OpenAILLMService

from llm.endpoint import LLMEndpoint
from llm.errors import LLMUnavailable
from llm.scheduler import sentence_ends

log = logging.getLogger(__name__)


class SentenceCappedStream:
    """A streamed chat completion cut after ``sentences`` complete sentences (0: never cut).

    A phone answer is one or two sentences (the system prompt says so), but small models run
    on to ``max_tokens`` and stop mid-sentence, which the caller then hears. Cutting the
    stream at a sentence end closes the HTTP response, and the server (llama.cpp's checks
    for a disconnected client after every token; vLLM aborts the request) stops generating:
    a single LLM server is free sooner for the next call's turn.

    Tool calls pass untouched and are never cut: once one has begun, the stream runs to its
    end. When the request offered tools (``tools``), the cap stops the text only: the stream
    is read on for tool calls that follow the words ("Sure. Let me check that." then a call).
    Each call's chunks are held until the call is complete; a call whose arguments are
    not JSON (a model cut at ``max_tokens``) is dropped and named in :attr:`dropped` (its
    arguments are never logged: they hold what the caller said).
    """

    def __init__(self, stream: Any, sentences: int, tools: bool = False) -> None:
        """Pass on ``stream``'s chunks until ``sentences`` sentences are complete."""
        self._stream = stream
        self._sentences = sentences
        self._tools = tools
        self.cut = False
        #: The answer's text as passed on.
        self.text = ""
        #: Names of the tool calls passed on, and of those dropped as malformed.
        self.tool_calls: list[str] = []
        self.dropped: list[str] = []

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        ended = 0
        capped = False  # the text is complete; only tool calls may follow
        held: list[Any] = []  # the chunks of the tool call being streamed
        async for chunk in self._stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            calls = getattr(delta, "tool_calls", None) if delta is not None else None
            if calls:
                if held and calls[0].index != held[0].choices[0].delta.tool_calls[0].index:
                    for out in self._complete(held):
                        yield out
                    held = []
                held.append(chunk)
                continue
            for out in self._complete(held):
                yield out
            held = []
            content = (delta.content or "") if delta is not None else ""
            if capped:
                if not content:  # the finish reason, the usage
                    yield chunk
                continue
            calling = bool(self.tool_calls or self.dropped)
            if (
                content
                and not calling
                and self._sentences > 0
                and sentence_ends(self.text, content)
            ):
                ended += 1
                if ended >= self._sentences:
                    self.cut = True
                    if not self._tools:
                        return
                    capped = True
                    continue
            self.text += content
            yield chunk
        for out in self._complete(held):
            yield out

    def _complete(self, held: list[Any]) -> list[Any]:
        """A whole tool call's chunks: passed on if its arguments are JSON, else dropped."""
        if not held:
            return []
        name, arguments = "", ""
        for chunk in held:
            function = chunk.choices[0].delta.tool_calls[0].function
            if function is not None:
                name += function.name or ""
                arguments += function.arguments or ""
        try:
            if arguments:
                json.loads(arguments)
        except ValueError:
            log.warning("tool call with malformed arguments dropped", extra={"tool": name})
            self.dropped.append(name)
            return []
        # Calls after a dropped one keep pipecat's count of calls in step.
        for chunk in held:
            call = chunk.choices[0].delta.tool_calls[0]
            call.index = len(self.tool_calls)
        self.tool_calls.append(name)
        return held

    async def close(self) -> None:
        """Close the response: the server stops writing the rest of the answer."""
        await self._stream.close()


class PhoneLLMService(OpenAILLMService):
    """pipecat's OpenAI-compatible service, its answers cut after ``max_sentences``.

    An answer owed to the caller (after a tool's result marked with :meth:`owe_answer`, or
    when the model's only tool call was malformed) that comes back without a word is replaced
    by ``unanswered``: the caller never waits on silence.
    """

    #: pipecat adds "developer" messages (after a turn with no transcript, for one); llama.cpp's
    #: server refuses that role and vLLM's chat templates may: they are sent as "user".
    supports_developer_role = False

    def __init__(self, *, max_sentences: int = 0, unanswered: str = "", **kwargs: Any) -> None:
        """As :class:`OpenAILLMService`; ``max_sentences`` 0 leaves answers whole."""
        super().__init__(**kwargs)
        self._max_sentences = max_sentences
        self._unanswered = unanswered
        self._owed: set[str] = set()
        self._stream: SentenceCappedStream | None = None

    def set_unanswered(self, text: str) -> None:
        """What is said from now on instead of an owed answer that came back empty."""
        self._unanswered = text

    def owe_answer(self, tool_call_id: str) -> None:
        """The answer that follows this tool call's result must say something."""
        self._owed.add(tool_call_id)

    async def get_chat_completions(self, context: LLMContext) -> Any:
        """The streamed completion, cut after ``max_sentences`` sentences.

        When the context offers tools only the text is cut: tool calls may follow it.
        """
        stream = await super().get_chat_completions(context)
        tools = bool(getattr(context.tools, "standard_tools", None))
        self._stream = SentenceCappedStream(stream, self._max_sentences, tools=tools)
        return self._stream

    def _answer_owed(self, context: LLMContext) -> bool:
        messages = context.get_messages()
        last: Any = messages[-1] if messages else None
        if not isinstance(last, dict) or last.get("role") != "tool":
            return False
        call_id = last.get("tool_call_id")
        if call_id not in self._owed:
            return False
        self._owed.discard(call_id)
        return True

    async def _process_context(self, context: LLMContext) -> None:
        """Run the completion; an owed answer without words gets ``unanswered``."""
        owed = self._answer_owed(context)
        self._stream = None
        await super()._process_context(context)
        stream = self._stream
        if stream is None or not self._unanswered or stream.text.strip() or stream.tool_calls:
            return
        if owed or stream.dropped:
            await self.push_frame(LLMTextFrame(self._unanswered))


def create_llm_service(
    endpoint: LLMEndpoint,
    *,
    system: str,
    max_tokens: int,
    temperature: float,
    max_sentences: int = 0,
    unanswered: str = "",
) -> PhoneLLMService:
    """A streaming chat-completions service for one call's pipeline, with its system prompt.

    ``unanswered`` is said when an answer owed after a tool comes back empty.
    """
    return PhoneLLMService(
        max_sentences=max_sentences,
        unanswered=unanswered,
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
