"""A call in the agent's language: its detectors, announcement, prompt and fixed phrases."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import TranscriptionFrame
from pipecat.tests.utils import run_test

from routing.directory import DEFAULT_ANNOUNCEMENT, Agent
from voice.announcement import DEFAULTS, announcement_for, country_of, dialled
from voice.phrases import says_goodbye
from voice.processors import ClosingPhrases, is_closing
from voice.prompt import fixed_phrases, greeting, said, system_prompt
from voice.recorder import ConsentGate, RefusalPhrases, is_refusal
from voice.voicemail import message_text

GOODBYES = {
    "en": ["Goodbye.", "OK, bye!", "That's all, thanks."],
    "fr": ["Au revoir !", "Merci, au revoir.", "Bonne journée.", "C'est tout, merci."],
    "de": ["Auf Wiederhören.", "Tschüss!", "Danke, auf Wiedersehen."],
    "es": ["Adiós.", "Gracias, hasta luego.", "Eso es todo, gracias."],
    "it": ["Arrivederci.", "Grazie, buona giornata.", "È tutto, grazie."],
    "nl": ["Tot ziens.", "Dank u, tot horens.", "Doei!"],
}
NOT_GOODBYES = {
    "en": ["What time do you open?", "Can I buy a byte?"],
    "fr": ["Bonjour, je voudrais une baguette.", "Vous êtes ouverts demain ?"],
    "de": ["Guten Tag, haben Sie heute geöffnet?", "Ich möchte einen Tisch reservieren."],
    "es": ["Hola, ¿abren el domingo?", "Quiero reservar una mesa."],
    "it": ["Buongiorno, siete aperti domani?", "Vorrei prenotare un tavolo."],
    "nl": ["Goedendag, bent u morgen open?", "Ik wil een tafel reserveren."],
}
REFUSALS = {
    "en": ["Please do not record this call.", "I don't want this recorded."],
    "fr": [
        "Je ne veux pas être enregistré.",
        "Je ne souhaite pas que cet appel soit enregistré.",
        "Ne m'enregistrez pas, s'il vous plaît.",
        "Arrêtez l'enregistrement.",
        "Je refuse l'enregistrement.",
    ],
    "de": [
        "Bitte nicht aufzeichnen.",
        "Ich möchte nicht aufgezeichnet werden.",
        "Keine Aufzeichnung, bitte.",
    ],
    "es": ["No quiero que me graben.", "Por favor, no grabe esta llamada.", "Deje de grabar."],
    "it": ["Non voglio essere registrato.", "Per favore non registri la chiamata."],
    "nl": ["Ik wil niet opgenomen worden.", "Geen opname alstublieft.", "Stop de opname."],
}
NOT_REFUSALS = {
    "fr": ["Pouvez-vous enregistrer ma commande ?", "Je veux un gâteau pour samedi."],
    "de": ["Können Sie meine Bestellung aufnehmen?", "Ich hätte gern ein Brot."],
    "es": ["¿Puede grabar el nombre en la tarta?", "Quiero un pastel para el sábado."],
    "it": ["Può registrare il mio ordine?", "Vorrei una torta per sabato."],
    "nl": ["Kunt u mijn bestelling opnemen?", "Ik wil een taart voor zaterdag."],
}


@pytest.mark.parametrize(("language", "text"), [(k, t) for k, v in GOODBYES.items() for t in v])
def test_a_goodbye_in_the_call_s_language_is_heard(language: str, text: str) -> None:
    assert is_closing(text, language)


@pytest.mark.parametrize(("language", "text"), [(k, t) for k, v in NOT_GOODBYES.items() for t in v])
def test_other_words_are_not_a_goodbye(language: str, text: str) -> None:
    assert not is_closing(text, language)


@pytest.mark.parametrize(("language", "text"), [(k, t) for k, v in REFUSALS.items() for t in v])
def test_a_refusal_in_the_call_s_language_is_heard(language: str, text: str) -> None:
    assert is_refusal(text, language)


@pytest.mark.parametrize(("language", "text"), [(k, t) for k, v in NOT_REFUSALS.items() for t in v])
def test_asking_to_note_something_down_is_not_a_refusal(language: str, text: str) -> None:
    assert not is_refusal(text, language)


def test_english_is_heard_in_every_call_and_others_only_in_their_own() -> None:
    assert says_goodbye("OK, bye!", "fr") and is_refusal("Stop recording.", "de")
    assert not says_goodbye("Au revoir.", "en") and not is_refusal("Stop de opname.", "en")


def said_by_caller(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "caller", "2026-01-01T00:00:00Z")


async def test_a_french_goodbye_ends_a_french_call_and_does_not_reach_the_model() -> None:
    heard: list[str] = []

    async def goodbye(text: str) -> None:
        heard.append(text)

    down, _ = await run_test(
        ClosingPhrases(goodbye, "fr"),
        frames_to_send=[said_by_caller("Vous ouvrez demain ?"), said_by_caller("Au revoir !")],
        expected_down_frames=[TranscriptionFrame],
    )
    assert heard == ["Au revoir !"]
    assert [f.text for f in down if isinstance(f, TranscriptionFrame)] == ["Vous ouvrez demain ?"]


async def test_a_french_objection_closes_the_recording_gate() -> None:
    objections: list[str] = []

    async def objected(how: str) -> None:
        objections.append(how)

    gate = ConsentGate(objected)
    gate.open()
    await run_test(
        RefusalPhrases(gate, "fr"),
        frames_to_send=[said_by_caller("Je ne veux pas être enregistré.")],
        expected_down_frames=[TranscriptionFrame],
    )
    assert objections == ["spoken"] and not gate.is_open


def test_the_country_of_a_number() -> None:
    assert country_of("+33185001234") == "FR" and country_of("+262262123456") == "FR"
    assert country_of("+4930123456") == "DE" and country_of("+14155550123") is None
    assert country_of("") is None and country_of(None) is None


def test_the_number_dialled_is_the_agent_s_inbound_and_the_caller_id_outbound() -> None:
    assert dialled("inbound", "+14155550123", "+33185001234") == "+33185001234"
    assert dialled("outbound", "+33185001234", "+14155550123") == "+33185001234"


def test_a_french_call_to_a_french_number_hears_the_cnil_announcement() -> None:
    text = announcement_for(DEFAULTS["fr"], "fr", "+33185001234")
    assert "enregistré" in text and "vous y opposer" in text
    assert announcement_for(DEFAULTS["fr"], "fr", "+3222001234") == DEFAULTS["fr"]
    # A stored English default follows the agent's language.
    assert announcement_for(DEFAULT_ANNOUNCEMENT, "fr", "+3222001234") == DEFAULTS["fr"]


def test_an_agent_s_own_announcement_overrides_the_country_s() -> None:
    own = "Bonjour, ici l'assistant IA de la boulangerie. L'appel est enregistré."
    assert announcement_for(own, "fr", "+33185001234") == own


def test_english_calls_announce_as_before_wherever_they_are_dialled() -> None:
    for number in ("+33185001234", "+14155550123"):
        assert announcement_for(DEFAULT_ANNOUNCEMENT, "en", number) == DEFAULT_ANNOUNCEMENT


def french_agent(**fields: object) -> Agent:
    return Agent(name="boulangerie", prompt="Tu vends du pain.", language="fr", **fields)  # type: ignore[arg-type]


def test_a_french_agent_s_fixed_phrases_are_french() -> None:
    agent = french_agent(announcement=DEFAULTS["fr"], transfer_number="+33185001111")
    ready = fixed_phrases(agent)
    assert DEFAULTS["fr"] in ready and greeting(agent) == "Que puis-je faire pour vous ?"
    for text in ("Merci de votre appel. Au revoir.", "Ne quittez pas, je vous transfère."):
        assert text in ready
    assert not any("Goodbye" in t for t in ready)
    assert said(agent).not_recorded == "C'est noté. Cet appel n'est plus enregistré."


def test_a_french_agent_s_own_greeting_is_kept() -> None:
    assert greeting(french_agent(greeting="Boulangerie Martin, bonjour !")) == (
        "Boulangerie Martin, bonjour !"
    )


def test_the_model_is_told_to_answer_in_the_call_s_language() -> None:
    prompt = system_prompt(french_agent())
    assert "Always answer in French." in prompt and "Réponds toujours en français." in prompt
    english = system_prompt(Agent(name="bakery", prompt="You sell bread."))
    assert "answer in English" not in english and "Always answer" not in english


def test_a_voicemail_is_disclosed_in_the_call_s_language() -> None:
    assert message_text("fr", "Rappelez-nous.").startswith("Ceci est un message automatique")
    assert message_text("en", "Call us back.") == (
        "This is an automated message from an AI assistant. Call us back."
    )


def test_an_auto_call_hears_an_objection_in_any_language_after_its_language_is_fixed() -> None:
    """Detection may take a French caller for an English one: their "no" still counts."""
    from voice.language import CallLanguage
    from voice.phrases import refuses_recording, says_goodbye

    call = CallLanguage("auto", "+15555550100")
    assert call.fix("en", 0.55) and call.code == "en"
    assert refuses_recording("Je ne veux pas être enregistré.", call)
    assert refuses_recording("Ich möchte nicht aufgezeichnet werden.", call)
    assert not says_goodbye("Au revoir.", call)  # the other detectors follow the fixed language
    fixed = CallLanguage("en")
    assert not refuses_recording("Je ne veux pas être enregistré.", fixed)  # English agent
