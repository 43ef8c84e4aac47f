"""The number directory on a real Redis."""

from __future__ import annotations

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
