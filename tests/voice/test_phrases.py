"""The caller asking for a person, per language: several wordings, and lookalikes that are not."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import TranscriptionFrame
from pipecat.tests.utils import run_test

from voice.phrases import LANGUAGES, asks_for_person
from voice.processors import PersonRequests

ASKS = {
    "en": [
        "Can I talk to a person?",
        "I'd like to speak to a human, please.",
        "Put me through to an operator.",
        "Could you transfer me to a real person?",
        "Let me speak with someone.",
        "I want a human.",
        "Agent, please.",
        "Can I speak to a representative",
        "I want to talk to someone about my bill.",
        "I need a person.",
    ],
    "fr": [
        "Je voudrais parler à un conseiller.",
        "Est-ce que je peux parler à une vraie personne ?",
        "Passez-moi un opérateur, s'il vous plaît.",
        "Je veux parler avec quelqu'un.",
    ],
    "de": [
        "Ich möchte mit einem Menschen sprechen.",
        "Kann ich bitte mit einem Mitarbeiter sprechen?",
        "Verbinden Sie mich bitte mit einem Berater.",
        "Ich will mit einer echten Person reden.",
    ],
    "es": [
        "Quiero hablar con una persona.",
        "¿Puedo hablar con un agente?",
        "Páseme con un operador, por favor.",
        "Necesito hablar con alguien.",
    ],
    "it": [
        "Vorrei parlare con un operatore.",
        "Posso parlare con una persona vera?",
        "Mi passi un operatore, per favore.",
        "Voglio parlare con qualcuno.",
    ],
    "nl": [
        "Ik wil met een medewerker spreken.",
        "Kan ik met een echt persoon praten?",
        "Mag ik praten met iemand?",
        "Kunt u mij doorverbinden met een medewerker?",
    ],
}

NOT_ASKS = {
    "en": [
        "I'm a person who likes bread.",
        "My agent told me to call you.",
        "The person at the desk was very kind.",
        "I talked to my wife about the booking.",
        "How many people can the room hold?",
        "Goodbye.",
        # A person word that is not what the caller asks to speak to.
        "I need someone to fix my boiler tomorrow.",
        "I want someone to call me back.",
        "Can I have the agent send me an invoice?",
        "He wants to talk to someone.",
        "I need a human touch",
        "I want to talk to someone from my family first.",
    ],
    "fr": [
        "Je suis une personne qui aime le pain.",
        "Il y a une personne de plus.",
        "Je veux quelqu'un pour réparer ma chaudière.",
        "Je veux parler avec quelqu'un de ma famille d'abord.",
    ],
    "de": [
        "Ich bin ein Mensch, der Brot mag.",
        "Wir sind drei Personen.",
        "Ich möchte zuerst mit jemandem aus meiner Familie sprechen.",
    ],
    "es": [
        "Soy una persona a la que le gusta el pan.",
        "Somos dos personas.",
        "Quiero hablar con alguien de mi familia primero.",
    ],
    "it": [
        "Sono una persona a cui piace il pane.",
        "Siamo due persone.",
        "Voglio parlare con qualcuno della mia famiglia prima.",
    ],
    "nl": [
        "Ik ben een persoon die van brood houdt.",
        "We zijn met twee personen.",
        "Ik wil eerst praten met iemand van mijn familie.",
    ],
}


def test_every_language_has_wordings() -> None:
    assert {"en", "fr", "de", "es", "it", "nl"} <= LANGUAGES


@pytest.mark.parametrize(("language", "text"), [(k, t) for k, v in ASKS.items() for t in v])
def test_a_request_for_a_person_is_caught(language: str, text: str) -> None:
    assert asks_for_person(text, language)


@pytest.mark.parametrize(("language", "text"), [(k, t) for k, v in NOT_ASKS.items() for t in v])
def test_a_person_mentioned_in_passing_is_not_a_request(language: str, text: str) -> None:
    assert not asks_for_person(text, language)


def test_an_unknown_language_uses_english_and_regional_tags_their_language() -> None:
    assert asks_for_person("Can I talk to a person?", "pt")
    assert asks_for_person("Je voudrais parler à un conseiller.", "fr-CA")


def said(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "caller", "2026-01-01T00:00:00Z")


@pytest.mark.parametrize("can_transfer", [True, False])
async def test_the_request_starts_a_transfer_only_when_the_agent_can_transfer(
    can_transfer: bool,
) -> None:
    asked: list[str] = []

    async def on_request(text: str) -> None:
        asked.append(text)

    processor = PersonRequests("en", on_request, lambda: can_transfer, lambda: False)
    down, _ = await run_test(
        processor,
        frames_to_send=[said("Can I talk to a person?"), said("Do you sell bread?")],
        expected_down_frames=[TranscriptionFrame] * (1 if can_transfer else 2),
    )
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    if can_transfer:  # the request goes no further than the transfer: not to the model
        assert asked == ["Can I talk to a person?"] and texts == ["Do you sell bread?"]
    else:  # the model hears it as any other words
        assert asked == [] and texts == ["Can I talk to a person?", "Do you sell bread?"]


async def test_nothing_said_after_the_hand_over_goes_on() -> None:
    async def on_request(text: str) -> None:
        raise AssertionError(text)

    processor = PersonRequests("en", on_request, lambda: True, lambda: True)
    down, _ = await run_test(
        processor,
        frames_to_send=[said("Hello? Is someone there?"), said("Can I talk to a person?")],
        expected_down_frames=[],
    )
    assert not [f for f in down if isinstance(f, TranscriptionFrame)]
