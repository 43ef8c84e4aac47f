"""The TTS's text chunks: a response's first clause on its own, then whole sentences."""

from __future__ import annotations

from voice.services import FirstClauseAggregator


async def chunks(agg: FirstClauseAggregator, tokens: list[str]) -> list[str]:
    out = []
    for token in tokens:
        out += [a.text async for a in agg.aggregate(token)]
    rest = await agg.flush()
    return out + ([rest.text] if rest and rest.text else [])


async def test_first_clause_then_sentences() -> None:
    agg = FirstClauseAggregator()
    tokens = [
        "Yes",
        ",",
        " we open",
        " at eight",
        " on Saturday",
        ".",
        " On Sunday",
        ",",
        " we are",
        " closed",
        ".",
    ]
    assert await chunks(agg, tokens) == [
        "Yes,",
        "we open at eight on Saturday.",
        "On Sunday, we are closed.",
    ]
    # The next response starts with its first clause again.
    assert await chunks(agg, ["Sure", ": a", " chocolate", " cake", "."]) == [
        "Sure:",
        "a chocolate cake.",
    ]


async def test_numbers_and_plain_sentences_are_not_cut() -> None:
    agg = FirstClauseAggregator()
    assert await chunks(
        agg, ["We bake", " 1,000", " loaves", " a day", ". Come", " early", "."]
    ) == ["We bake 1,000 loaves a day.", "Come early."]


async def test_an_interruption_starts_afresh() -> None:
    agg = FirstClauseAggregator()
    assert [a.text async for a in agg.aggregate("Well, ")] == ["Well,"]
    assert [a.text async for a in agg.aggregate("the cake")] == []
    await agg.handle_interruption()
    assert await chunks(agg, ["Of course", ", we", " deliver", "."]) == [
        "Of course,",
        "we deliver.",
    ]
