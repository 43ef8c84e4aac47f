"""What an agent's announcement must say, per language: the AI disclosure and recording notice.

Each language has groups of keywords: the announcement must match at least one keyword of
every group (word boundaries, any case). A language is supported when it has a row in
:data:`REQUIRED` and a default announcement in :data:`DEFAULTS`; adding a language is adding
both rows. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from routing.directory import DEFAULT_ANNOUNCEMENT
from voice.errors import AnnouncementIncomplete

AI_DISCLOSURE = "ai_disclosure"
RECORDING_NOTICE = "recording_notice"


def _words(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


#: Per language: each part the announcement must contain, and the words that say it.
REQUIRED: Mapping[str, Mapping[str, re.Pattern[str]]] = {
    "en": {
        AI_DISCLOSURE: _words(
            r"A\.?I\.?",
            "artificial intelligence",
            r"automated",
            r"virtual (?:assistant|agent)",
            "robot",
            "bot",
            r"not a (?:real )?(?:person|human)",
            "machine",
        ),
        RECORDING_NOTICE: _words(r"record(?:ed|ing|s)?"),
    },
    "fr": {
        AI_DISCLOSURE: _words(
            r"I\.?A\.?",
            "intelligence artificielle",
            r"automatis[ée]e?s?",
            r"assistante? (?:virtuel(?:le)?|automatique)",
            "robot",
            "bot",
            r"pas (?:une? )?(?:personne|humain|être humain)",
        ),
        RECORDING_NOTICE: _words(r"enregistr\w*"),
    },
    "de": {
        AI_DISCLOSURE: _words(
            "KI",
            "AI",
            r"künstliche\w* Intelligenz",
            r"automatisiert\w*",
            r"virtuell\w* Assistent\w*",
            "Roboter",
            "Bot",
            r"kein\w* Mensch\w*",
        ),
        RECORDING_NOTICE: _words(
            r"aufgezeichnet", r"Aufzeichnung\w*", "aufgenommen", r"Aufnahme\w*", "mitgeschnitten"
        ),
    },
    "es": {
        AI_DISCLOSURE: _words(
            "IA",
            "inteligencia artificial",
            r"automatizad[oa]s?",
            "asistente virtual",
            "robot",
            "bot",
            r"no (?:es )?(?:una persona|un humano|un ser humano)",
        ),
        RECORDING_NOTICE: _words(r"grabad[oa]s?", r"grabaci[óo]n", r"grabar\w*", "graba"),
    },
    "it": {
        AI_DISCLOSURE: _words(
            "IA",
            "AI",
            "intelligenza artificiale",
            r"automatizzat[oaie]",
            "assistente virtuale",
            "robot",
            "bot",
            r"non (?:è )?(?:una persona|un essere umano)",
        ),
        RECORDING_NOTICE: _words(r"registrat[oaie]", "registrazione", r"registr\w*"),
    },
    "nl": {
        AI_DISCLOSURE: _words(
            "AI",
            "KI",
            "kunstmatige intelligentie",
            r"geautomatiseerd\w*",
            r"virtuele? assistent",
            "robot",
            "bot",
            r"geen (?:mens|persoon)",
        ),
        RECORDING_NOTICE: _words("opgenomen", r"opname\w*", "vastgelegd"),
    },
    "pt": {
        AI_DISCLOSURE: _words(
            "IA",
            "inteligência artificial",
            r"automatizad[oa]s?",
            "assistente virtual",
            "robô",
            "bot",
            r"não (?:é )?(?:uma pessoa|um humano|um ser humano)",
        ),
        RECORDING_NOTICE: _words(r"gravad[oa]s?", r"grava[çc][ãa]o", r"gravar\w*"),
    },
    "pl": {
        AI_DISCLOSURE: _words(
            "AI",
            "SI",
            r"sztuczn\w+ inteligencj\w+",
            r"automatyczn\w+",
            r"wirtualn\w+ asystent\w*",
            r"robot\w*",
            r"bot\w*",
            r"nie (?:jest )?człowiek\w*",
        ),
        RECORDING_NOTICE: _words(r"nagrywan\w+", r"nagran\w+", r"nagrywa\w*", r"rejestrowan\w+"),
    },
    "sv": {
        AI_DISCLOSURE: _words(
            "AI",
            "artificiell intelligens",
            r"automatiserad\w*",
            "virtuell assistent",
            "robot",
            "bot",
            r"inte en (?:människa|person)",
        ),
        RECORDING_NOTICE: _words("spelas in", r"inspelad\w*", r"inspelning\w*"),
    },
    "da": {
        AI_DISCLOSURE: _words(
            "AI",
            "kunstig intelligens",
            r"automatiseret\w*",
            "virtuel assistent",
            "robot",
            "bot",
            r"ikke et (?:menneske|person)",
        ),
        RECORDING_NOTICE: _words("optaget", "optages", r"optagelse\w*", "optage"),
    },
    "fi": {
        AI_DISCLOSURE: _words(
            r"tekoäly\w*",
            r"automaatti\w*",
            r"automatisoi\w*",
            r"virtuaaliavustaja\w*",
            r"robot\w*",
            r"botti\w*",
            r"ei (?:ole )?ihminen",
        ),
        RECORDING_NOTICE: _words(r"nauhoit\w*", r"tallenn\w*", r"tallente\w*"),
    },
}

#: Per language: the announcement an agent gets when it sets none.
DEFAULTS: Mapping[str, str] = {
    "en": DEFAULT_ANNOUNCEMENT,
    "fr": "Bonjour. Vous parlez avec un assistant d'intelligence artificielle, un système "
    "automatisé, pas une personne. Cet appel peut être enregistré.",
    "de": "Hallo. Sie sprechen mit einem KI-Assistenten, einem automatisierten System, keinem "
    "Menschen. Dieser Anruf kann aufgezeichnet werden.",
    "es": "Hola. Está hablando con un asistente de inteligencia artificial, un sistema "
    "automatizado, no una persona. Esta llamada puede ser grabada.",
    "it": "Buongiorno. Sta parlando con un assistente di intelligenza artificiale, un sistema "
    "automatizzato, non una persona. Questa chiamata può essere registrata.",
    "nl": "Hallo. U spreekt met een AI-assistent, een geautomatiseerd systeem, geen mens. Dit "
    "gesprek kan worden opgenomen.",
    "pt": "Olá. Está a falar com um assistente de inteligência artificial, um sistema "
    "automatizado, não uma pessoa. Esta chamada pode ser gravada.",
    "pl": "Dzień dobry. Rozmawiasz z asystentem AI, systemem automatycznym, nie z człowiekiem. "
    "Ta rozmowa może być nagrywana.",
    "sv": "Hej. Du talar med en AI-assistent, ett automatiserat system, inte en människa. "
    "Samtalet kan spelas in.",
    "da": "Hej. Du taler med en AI-assistent, et automatiseret system, ikke et menneske. "
    "Opkaldet kan blive optaget.",
    "fi": "Hei. Puhut tekoälyavustajan kanssa, joka on automaattinen järjestelmä, ei ihminen. "
    "Puhelu voidaan nauhoittaa.",
}


def missing_parts(text: str, language: str) -> tuple[str, ...]:
    """The required parts ``text`` does not contain, in ``language`` (all, if unknown)."""
    rules = REQUIRED.get(language)
    if rules is None:
        return (AI_DISCLOSURE, RECORDING_NOTICE)
    return tuple(part for part, words in rules.items() if not words.search(text))


def check_announcement(text: str, language: str) -> None:
    """Raise :class:`AnnouncementIncomplete` unless ``text`` says all it must in ``language``."""
    missing = missing_parts(text, language)
    if missing:
        raise AnnouncementIncomplete(language, missing, checkable=language in REQUIRED)


def default_announcement(language: str) -> str:
    """The announcement of an agent in ``language`` that sets none (English if unknown)."""
    return DEFAULTS.get(language, DEFAULTS["en"])
