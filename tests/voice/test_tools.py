"""Tool calls in a call, against the scripted OpenAI-compatible server (vLLM's stream shapes).

The client (llm/client.py) passes streamed tool calls whole and drops malformed ones; in a
pipeline with pipecat's aggregators, an HTTP tool's call says the filler, runs through the
tool runner, hands the result to the model and records a ``tool_called`` event; a failed
tool's empty answer becomes a polite sentence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from openai import AsyncOpenAI
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from calls.events import CallEventType
from llm.client import SentenceCappedStream, create_llm_service
from llm.endpoint import LLMEndpoint
from routing.directory import Agent, DigitCollection, HttpTool
from tests.fakes.scripted_llm import Reply, ScriptedLLM, ToolCall
from voice.prompt import FILLER, TOOL_TROUBLE
from voice.tools import InCallTools, context_tools

ORDER_TOOL = HttpTool(
    name="find_order",
    description="Look up an order by its number.",
    url="https://orders.example.com/lookup",
    parameters={
        "type": "object",
        "properties": {"order": {"type": "string", "maxLength": 12}},
        "required": ["order"],
        "additionalProperties": False,
    },
)
AGENT = Agent(
    name="shop", prompt="You answer for a shop.", http_tools=(ORDER_TOOL,), dtmf=DigitCollection()
)


async def streamed(
    llm: ScriptedLLM, reply: Reply, sentences: int, tools: bool = False
) -> SentenceCappedStream:
    llm.script(reply)
    client = AsyncOpenAI(base_url=llm.url, api_key="not-needed")
    return SentenceCappedStream(
        await client.chat.completions.create(
            model=llm.model,
            messages=[{"role": "user", "content": "Where is my order?"}],
            tools=[{"type": "function", "function": ORDER_TOOL.to_dict() | {"url": None}}],
            stream=True,
        ),
        sentences=sentences,
        tools=tools,
    )


async def test_a_streamed_tool_call_passes_whole_after_the_sentences_before_it(
    scripted_llm: ScriptedLLM,
) -> None:
    reply = Reply("One moment.", (ToolCall("find_order", {"order": "48152"}),))
    stream = await streamed(scripted_llm, reply, sentences=1)
    calls = [
        c.choices[0].delta.tool_calls[0]
        async for c in stream
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert not stream.cut
    assert calls[0].id == reply.tool_calls[0].id and calls[0].function.name == "find_order"
    assert "".join(c.function.arguments or "" for c in calls) == '{"order": "48152"}'
    assert stream.text == "One moment." and stream.tool_calls == ["find_order"]


async def test_the_sentence_cap_stops_the_text_but_not_a_tool_call_that_follows(
    scripted_llm: ScriptedLLM,
) -> None:
    reply = Reply("Sure. Let me check that for you.", (ToolCall("find_order", {"order": "48152"}),))
    stream = await streamed(scripted_llm, reply, sentences=1, tools=True)
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert stream.cut and text == stream.text == "Sure."
    assert calls and stream.tool_calls == ["find_order"]
    # Without tools offered the stream is closed at the cap.
    plain = await streamed(scripted_llm, Reply("Sure. Let me check that."), sentences=1)
    assert [c async for c in plain] and plain.cut and plain.text == "Sure."


async def test_a_tool_call_with_malformed_arguments_is_dropped_without_logging_them(
    scripted_llm: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    cut_short = ToolCall("find_order", '{"order": "93027')  # a model stopped at max_tokens
    whole = ToolCall("find_order", {"order": "11"})
    with caplog.at_level(logging.INFO):
        stream = await streamed(scripted_llm, Reply(tool_calls=(cut_short, whole)), sentences=2)
        calls = [
            c.choices[0].delta.tool_calls[0]
            async for c in stream
            if c.choices and c.choices[0].delta.tool_calls
        ]
    # The second call is passed on as the first (pipecat counts calls by index).
    assert {c.index for c in calls} == {0} and calls[0].id == whole.id
    assert stream.dropped == ["find_order"] and stream.tool_calls == ["find_order"]
    assert "93027" not in caplog.text


@dataclass(frozen=True)
class Outcome:
    status: str
    result: str
    duration_s: float = 0.01


class Runner:
    """A stand-in for integrations/tools.ToolRunner at its Protocol: fixed outcomes."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.arguments: list[Mapping[str, Any]] = []

    async def run(
        self, tenant: str, call_id: str, tool: HttpTool, arguments: Mapping[str, Any]
    ) -> Outcome:
        self.arguments.append(dict(arguments))
        return self.outcome


async def converse(
    scripted_llm: ScriptedLLM, runner: Runner, after_tool: Reply
) -> tuple[list[Any], list[tuple[Any, dict[str, Any]]]]:
    """One question to a model that calls ``find_order``; what came out, and the events."""

    def script(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return after_tool
        return Reply.call("find_order", order="48152")

    scripted_llm.script(script)
    events: list[tuple[Any, dict[str, Any]]] = []

    async def event(kind: Any, **data: Any) -> None:
        events.append((kind, data))

    llm = create_llm_service(
        LLMEndpoint(scripted_llm.url.removesuffix("/v1"), scripted_llm.model),
        system="You answer for a shop.",
        max_tokens=60,
        temperature=0.0,
        max_sentences=2,
        unanswered=TOOL_TROUBLE,
    )
    InCallTools(AGENT, "t1", "call-1", runner, event).register(llm)
    pair = LLMContextAggregatorPair(LLMContext(tools=context_tools(AGENT, can_transfer=False)))
    question = {"role": "user", "content": "Where is my order 48152?"}
    tap = Tap()
    await run_test(
        Pipeline([pair.user(), llm, tap, pair.assistant()]),
        frames_to_send=[LLMMessagesAppendFrame([question], run_llm=True), SleepFrame(sleep=2.0)],
    )
    return tap.frames, events


class Tap(FrameProcessor):
    """Keeps what the LLM service pushes toward the TTS (the assistant aggregator eats text)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)


def spoken(frames: list[Any]) -> list[str]:
    """What went to the TTS, in order: fixed phrases and the model's text."""
    out: list[str] = []
    for f in frames:
        if isinstance(f, TTSSpeakFrame):
            out.append(f.text)
        elif isinstance(f, LLMTextFrame):
            out.append(f.text)
    return out


async def test_an_http_tool_call_says_the_filler_and_its_result_goes_back_to_the_model(
    scripted_llm: ScriptedLLM,
) -> None:
    runner = Runner(Outcome("ok", '{"status": "shipped", "eta": "Tuesday"}'))
    down, events = await converse(scripted_llm, runner, Reply.say("Your order ships on Tuesday."))
    said = spoken(down)
    assert said[0] == FILLER and "".join(said[1:]).strip() == "Your order ships on Tuesday."
    assert runner.arguments == [{"order": "48152"}]
    first, second = scripted_llm.chat_requests()
    # The model saw the built-ins, the keypad tool and the HTTP tool with its whole schema.
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(offered) == {"end_call", "stop_recording", "collect_digits", "find_order"}
    assert offered["find_order"]["parameters"] == ORDER_TOOL.parameters
    # Its second request carries the call and the endpoint's answer.
    call = next(m for m in second["messages"] if m.get("tool_calls"))["tool_calls"][0]
    result = second["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == call["id"]
    assert "shipped" in result["content"] and "Tuesday" in result["content"]
    assert events == [
        (
            CallEventType.TOOL_CALLED,
            {"name": "find_order", "duration_s": events[0][1]["duration_s"], "status": "ok"},
        )
    ]


async def test_a_failed_tool_gives_the_model_the_reason_and_the_caller_a_polite_sentence(
    scripted_llm: ScriptedLLM,
) -> None:
    runner = Runner(Outcome("timeout", "the endpoint did not answer within 2.0 s"))
    down, events = await converse(scripted_llm, runner, Reply.say(""))  # the model says nothing
    said = spoken(down)
    assert said == [FILLER, TOOL_TROUBLE]
    reason = scripted_llm.chat_requests()[-1]["messages"][-1]["content"]
    assert "timeout" in reason and "did not answer" in reason
    assert [(k, d["status"]) for k, d in events] == [(CallEventType.TOOL_CALLED, "timeout")]


class SlowRunner(Runner):
    """An endpoint that has not answered yet when the call cancels the tool."""

    async def run(
        self, tenant: str, call_id: str, tool: HttpTool, arguments: Mapping[str, Any]
    ) -> Outcome:
        await asyncio.sleep(30)
        return self.outcome


async def test_a_tool_cancelled_by_the_call_is_recorded_as_cancelled_not_timeout(
    scripted_llm: ScriptedLLM,
) -> None:
    scripted_llm.script(lambda body: Reply.call("find_order", order="48152"))
    events: list[tuple[Any, dict[str, Any]]] = []

    async def event(kind: Any, **data: Any) -> None:
        events.append((kind, data))

    llm = create_llm_service(
        LLMEndpoint(scripted_llm.url.removesuffix("/v1"), scripted_llm.model),
        system="You answer for a shop.",
        max_tokens=60,
        temperature=0.0,
    )
    InCallTools(AGENT, "t1", "call-1", SlowRunner(Outcome("ok", "{}")), event).register(llm)
    pair = LLMContextAggregatorPair(LLMContext(tools=context_tools(AGENT, can_transfer=False)))
    question = {"role": "user", "content": "Where is my order 48152?"}
    await run_test(
        Pipeline([pair.user(), llm, pair.assistant()]),
        frames_to_send=[
            LLMMessagesAppendFrame([question], run_llm=True),
            SleepFrame(sleep=1.0),
            InterruptionFrame(),
            SleepFrame(sleep=0.5),
        ],
    )
    assert [(k, d["status"]) for k, d in events] == [(CallEventType.TOOL_CALLED, "cancelled")]


def test_end_call_is_offered_only_when_the_agent_lists_it_and_stop_recording_always() -> None:
    def names(agent: Agent) -> set[str]:
        return {t.name for t in context_tools(agent, can_transfer=False).standard_tools}

    quiet = Agent(name="no-hangup", prompt="p", tools=())
    assert names(quiet) == {"stop_recording"}
    assert names(Agent(name="plain", prompt="p")) == {"end_call", "stop_recording"}
