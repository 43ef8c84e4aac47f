"""What every phone agent is told, may do and says without its LLM."""

from __future__ import annotations

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

from routing.directory import DEFAULT_GREETING, Agent
from voice.announcement import announcement_for, is_default
from voice.engines import PHONE_RATE, Engines
from voice.phrasebook import LANGUAGES, Say, base_language, phrases

#: The English phrases (other languages: :func:`said`, from the phrase tables).
_EN = phrases("en").say
FAREWELL = _EN.farewell
APOLOGY = _EN.apology
NOT_RECORDED = _EN.not_recorded
TIME_UP = _EN.time_up
HOLD = _EN.hold
TRANSFER_SORRY = _EN.transfer_sorry
TRANSFER_FAILED = _EN.transfer_failed
#: Said while an HTTP tool runs (voice/tools.py), and when an answer after a failed one is empty.
FILLER = _EN.filler
TOOL_TROUBLE = _EN.tool_trouble
#: The languages' names in English, for the model's instruction to answer in one.
LANGUAGE_NAMES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
    "nl": "Dutch", "pt": "Portuguese", "pl": "Polish", "sv": "Swedish", "da": "Danish",
    "fi": "Finnish",
}  # fmt: skip
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


def said(agent: Agent, language: str | None = None) -> Say:
    """What the platform says itself in ``language`` (default: ``agent``'s; English if no table).

    An ``auto`` agent's calls pass the call's language.
    """
    return phrases(language or agent.language).say


def default_greetings() -> set[str]:
    """Every language's default greeting (and the platform's English one)."""
    return {DEFAULT_GREETING, *(phrases(lang).say.greeting for lang in LANGUAGES)}


def default_greeting(language: str) -> str:
    """The greeting an agent in ``language`` gets when it sets none."""
    return phrases(language).say.greeting


def greeting(agent: Agent, language: str | None = None) -> str:
    """The agent's first words: its own, or the default greeting of ``language`` (the agent's)."""
    own = agent.greeting.strip()
    return said(agent, language).greeting if own in default_greetings() else own


def system_prompt(agent: Agent, language: str | None = None) -> str:
    """The agent's prompt plus what every phone agent needs to know, its language included.

    ``language``: the call's (default: the agent's). English calls are told nothing about
    language (English is every model's default); the others are told in English and in theirs.
    """
    base = (
        f"{agent.prompt.strip()}\n\nYou are speaking on the phone: answer in one or two short, "
        "plain sentences, with no lists, markup or emojis. When the caller is done, say goodbye."
    )
    code = base_language(language or agent.language)
    if code == "en" or code not in LANGUAGE_NAMES:
        return base
    return f"{base} Always answer in {LANGUAGE_NAMES[code]}. {said(agent, code).answer_in}"


def fixed_phrases(agent: Agent) -> tuple[str, ...]:
    """What an agent may say without its LLM, in its language: announcement, greeting, ...

    With a default announcement, each country's default of the language is ready too.
    """
    say = said(agent)
    countries = (
        tuple(phrases(agent.language).countries.values()) if is_default(agent.announcement) else ()
    )
    return tuple(
        t.strip()
        for t in (
            announcement_for(agent.announcement, agent.language, None),
            *countries,
            greeting(agent),
            say.farewell,
            say.apology,
            say.not_recorded,
            say.time_up,
            *((say.hold, say.transfer_sorry, say.transfer_failed) if agent.transfer_number else ()),
            *((say.filler, say.tool_trouble) if agent.http_tools else ()),
        )
    )


def voice_of(engines: Engines, agent: Agent, language: str | None = None) -> str:
    """The voice of ``agent``'s calls in ``language`` (the agent's): its own, else the default."""
    return engines.voices.voice_for(agent.voice, language or agent.language)


async def prepare_phrases(engines: Engines, agent: Agent, rate: int = PHONE_RATE) -> None:
    """Synthesize an agent's fixed phrases, in its voice, into the cache (once per process)."""
    voice = voice_of(engines, agent)
    for text in fixed_phrases(agent):
        await engines.phrase(text, rate, voice)
