"""A finished call's summary and extracted fields from the scripted OpenAI-compatible server
(vLLM's shapes): fields checked against the agent's schema, a failure never raising."""

from __future__ import annotations

from typing import Any

from calls.records import Turn
from integrations.summary import Summarizer
from llm.endpoint import LLMEndpoint
from tests.fakes.scripted_llm import Reply

SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "callback_requested": {"type": "boolean"}},
    "required": ["reason", "callback_requested"],
}
TURNS = [
    Turn("agent", "How can I help you today?", 1.0),
    Turn("caller", "I would like a refund for my last order, please call me back.", 2.0),
]


def by_kind(fields: str, summary: str = "The caller asked for a refund.") -> Any:
    """Answer extraction requests (with a response_format) with ``fields``, others ``summary``."""

    def reply(body: dict[str, Any]) -> Reply:
        assert body["stream"] is False
        return Reply.say(fields) if body.get("response_format") else Reply.say(summary)

    return reply


def summarizer(llm: Any) -> Summarizer:
    return Summarizer(LLMEndpoint(llm.url, llm.model), timeout_s=10)


async def test_the_summary_and_the_fields_of_a_call(scripted_llm: Any) -> None:
    scripted_llm.script(by_kind('{"reason": "refund", "callback_requested": true}'))
    got = await summarizer(scripted_llm).digest(TURNS, SCHEMA)
    assert got.summary == "The caller asked for a refund."
    assert got.fields == {"reason": "refund", "callback_requested": True}
    assert got.extraction_error is None
    extraction = next(r for r in scripted_llm.requests if r.get("response_format"))
    assert extraction["response_format"]["json_schema"]["schema"] == SCHEMA
    assert "refund for my last order" in extraction["messages"][-1]["content"]


async def test_fields_that_do_not_match_the_schema_are_left_out_with_the_reason(
    scripted_llm: Any,
) -> None:
    scripted_llm.script(by_kind('{"reason": 5}'))
    got = await summarizer(scripted_llm).digest(TURNS, SCHEMA)
    assert got.summary and got.fields is None
    assert got.extraction_error and "schema" in got.extraction_error
    scripted_llm.script(by_kind("I cannot do that."))
    got = await summarizer(scripted_llm).digest(TURNS, SCHEMA)
    assert got.fields is None and "JSON" in (got.extraction_error or "")


async def test_a_failing_model_or_no_transcript_never_raises(scripted_llm: Any) -> None:
    scripted_llm.script(lambda _body: Reply.error(500))
    got = await summarizer(scripted_llm).digest(TURNS, SCHEMA)
    assert got.summary is None and got.fields is None
    assert got.summary_error and got.extraction_error == "extraction failed (HTTP 500)"
    empty = await summarizer(scripted_llm).digest([], SCHEMA)
    assert (empty.summary, empty.fields, empty.extraction_error) == (None, None, "no transcript")
    # A server that refuses json_schema is asked for a plain JSON object.
    scripted_llm.script(
        lambda body: (
            Reply.error(400)
            if (body.get("response_format") or {}).get("type") == "json_schema"
            else Reply.say('{"reason": "billing", "callback_requested": false}')
        )
    )
    got = await summarizer(scripted_llm).digest(TURNS, SCHEMA)
    assert got.fields == {"reason": "billing", "callback_requested": False}
