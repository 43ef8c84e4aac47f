"""What every phone agent is told, may do and says without its LLM."""

from __future__ import annotations

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

from routing.directory import Agent
from voice.engines import PHONE_RATE, Engines

FAREWELL = "Thank you for calling. Goodbye."
APOLOGY = "I'm sorry, I'm having technical trouble and have to end this call. Goodbye."
NOT_RECORDED = "Understood. This call is no longer recorded."
TIME_UP = "We have reached the time limit for this call. Thank you for calling. Goodbye."
HOLD = "Please hold while I transfer you."
TRANSFER_SORRY = "I'm sorry, I can't transfer your call right now."
TRANSFER_FAILED = "I'm sorry, the transfer did not go through. Please call again later. Goodbye."
#: Said while an HTTP tool runs (voice/tools.py), and when an answer after a failed one is empty.
FILLER = "One moment, please."
TOOL_TROUBLE = "I'm sorry, I couldn't get that information just now."
#: Servers with tool calling (vLLM with a tool parser) let the model hang up; servers without
#: it (the embedded llama.cpp server) ignore the list, and the closing phrase still works.
END_CALL_TOOLS = ToolsSchema(
    standard_tools=[
        FunctionSchema(
            name="end_call",
            description="Hang up once the caller has said goodbye or needs nothing more.",
            properties={},
            required=[],
        ),
        FunctionSchema(
            name="stop_recording",
            description="The caller refuses to be recorded: stop and delete the recording.",
            properties={},
            required=[],
        ),
    ]
)


def system_prompt(agent: Agent) -> str:
    """The agent's prompt plus what every phone agent needs to know."""
    return (
        f"{agent.prompt.strip()}\n\nYou are speaking on the phone: answer in one or two short, "
        "plain sentences, with no lists, markup or emojis. When the caller is done, say goodbye."
    )


def fixed_phrases(agent: Agent) -> tuple[str, ...]:
    """What an agent may say without its LLM: announcement, greeting, farewell, apologies."""
    return tuple(
        t.strip()
        for t in (
            agent.announcement,
            agent.greeting,
            FAREWELL,
            APOLOGY,
            NOT_RECORDED,
            TIME_UP,
            *((HOLD, TRANSFER_SORRY, TRANSFER_FAILED) if agent.transfer_number else ()),
            *((FILLER, TOOL_TROUBLE) if agent.http_tools else ()),
        )
    )


async def prepare_phrases(engines: Engines, agent: Agent) -> None:
    """Synthesize an agent's fixed phrases into the cache (once per process)."""
    for text in fixed_phrases(agent):
        await engines.phrase(text, PHONE_RATE)
