"""The number directory on a real Redis."""

from __future__ import annotations

import re

import pytest

from routing import (
    Agent,
    AgentExists,
    AgentNotFound,
    Directory,
    InvalidNumber,
    NumberTaken,
    normalise_number,
)
from routing.directory import DigitCollection, HttpTool


@pytest.mark.parametrize(
    ("raw", "e164"), [("+1 555-555-0100", "+15555550100"), ("+33 (1) 23.45.67.89", "+33123456789")]
)
def test_normalise(raw: str, e164: str) -> None:
    assert normalise_number(raw) == e164


@pytest.mark.parametrize("raw", ["5555550100", "+0123456", "+1", "+1555abc0100", ""])
def test_invalid_numbers(raw: str) -> None:
    with pytest.raises(InvalidNumber):
        normalise_number(raw)


def test_agent_validation() -> None:
    with pytest.raises(ValueError, match="language"):
        Agent(name="a", prompt="p", language="xx")
    with pytest.raises(ValueError, match="announcement"):
        Agent(name="a", prompt="p", announcement=" ")
    with pytest.raises(ValueError, match="name"):
        Agent(name="bad name!", prompt="p")


async def test_agents_and_numbers_round_trip(redis) -> None:  # type: ignore[no-untyped-def]
    d = Directory(redis)
    await d.add_agent(Agent(name="sales", prompt="Sell bread.", language="en"))
    with pytest.raises(AgentExists):
        await d.add_agent(Agent(name="sales", prompt="Other"))
    with pytest.raises(AgentNotFound):
        await d.add_number("+15555550100", "nobody")
    route = await d.add_number("+1 555 555 0100", "sales")
    assert route.number == "+15555550100"
    found = await d.lookup("+15555550100")
    assert found is not None and found.agent.prompt == "Sell bread." and found.tenant == "default"
    assert await d.lookup("+15555550199") is None
    assert await d.lookup("not a number") is None
    await d.add_agent(Agent(name="support", prompt="Help."))
    with pytest.raises(NumberTaken):
        await d.add_number("+15555550100", "support")
    await d.add_number("+15555550100", "sales")  # same route again: no error
    assert await d.list_numbers() == [("+15555550100", "sales")]
    assert [a.name for a in await d.list_agents()] == ["sales", "support"]


@pytest.mark.parametrize(
    ("schema", "refused"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}},
            "pattern",
        ),
        ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "$ref"),
        ({"type": "object", "items": [{"$dynamicRef": "#meta"}]}, "$dynamicRef"),
    ],
)
def test_customer_schemas_refuse_regexes_and_outside_references(
    schema: dict[str, object], refused: str
) -> None:
    """A schema is run on the model's output in the call's process: no backtracking regex."""
    with pytest.raises(ValueError, match=re.escape(refused)):
        HttpTool("lookup", "Look up an order", "https://example.com/o", parameters=schema)
    with pytest.raises(ValueError, match=re.escape(refused)):
        Agent(name="a", prompt="p", extraction_schema=schema)


async def test_agent_tools_and_keypad_survive_the_store(redis) -> None:  # type: ignore[no-untyped-def]
    inner = {"$defs": {"id": {"type": "string"}}, "type": "object"}
    tool = HttpTool(
        "lookup",
        "Look up an order",
        "https://example.com/o",
        method="put",
        parameters={**inner, "properties": {"order": {"$ref": "#/$defs/id"}}},
        timeout_s=2,
    )
    agent = Agent(
        name="shop",
        prompt="p",
        http_tools=(tool,),
        dtmf=DigitCollection(max_digits=6, terminator="*", timeout_s=3),
        extraction_schema={"type": "object", "properties": {"reason": {"type": "string"}}},
        transfer_mode="warm",
        transfer_number="+15555550100",
        tools=("end_call", "transfer"),
    )
    d = Directory(redis)
    await d.add_agent(agent)
    back = await d.get_agent_by_id(agent.agent_id)
    assert back == agent and back.http_tools[0].method == "PUT"
    assert back.dtmf == DigitCollection(6, "*", 3.0)
