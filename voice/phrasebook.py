"""The phrase tables: what the platform says and listens for, per language.

One TOML file per language in ``voice/lang/`` (a translator edits it): ``[say]`` the fixed
phrases, ``[announcement]`` the wordings an announcement must contain (and per-country default
announcements), ``[listen]`` the goodbye, refusal and ask-for-a-person patterns. Read once at
import and validated: a file that lacks a key, or whose pattern does not compile, raises
:class:`PhraseTableError` naming the file and the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from voice.errors import PhraseTableError

#: Where the tables are: one ``<language>.toml`` per ISO 639-1 code.
TABLES = Path(__file__).with_name("lang")
#: The language whose table serves a language without one.
FALLBACK = "en"
#: The parts every announcement must say (the keys of ``[announcement]``).
ANNOUNCEMENT_PARTS = ("ai_disclosure", "recording_notice")
_PERSON_KEYS = ("who", "not_own", "end", "asks")


@dataclass(frozen=True)
class Say:
    """What the platform says itself in one language (the ``[say]`` table)."""

    announcement: str
    greeting: str
    farewell: str
    apology: str
    not_recorded: str
    time_up: str
    hold: str
    transfer_sorry: str
    transfer_failed: str
    filler: str
    tool_trouble: str
    voicemail_disclosure: str
    answer_in: str
    #: Said by the carrier's own voice to a call for a number no agent answers.
    not_in_service: str
    #: The language tag the carriers' own voices take (BCP 47, e.g. fr-FR).
    locale: str


SAY_KEYS = tuple(f.name for f in fields(Say))
#: A carrier's language tag: language and region (fr-FR).
_LOCALE = re.compile(r"[a-z]{2}-[A-Z]{2}")


@dataclass(frozen=True)
class Phrases:
    """One language's table, its patterns compiled."""

    language: str
    say: Say
    #: Per part of an announcement (:data:`ANNOUNCEMENT_PARTS`): the words that say it.
    required: Mapping[str, re.Pattern[str]]
    #: Per country (ISO 3166 alpha-2): the default announcement where its rules ask for more.
    countries: Mapping[str, str]
    goodbye: re.Pattern[str]
    refusal: re.Pattern[str]
    person: re.Pattern[str]


def _words(file: str, key: str, alternatives: Any) -> re.Pattern[str]:
    """The ``alternatives`` as one pattern on whole words, any case."""
    if not isinstance(alternatives, list) or not alternatives:
        raise PhraseTableError(file, key, "must be a non-empty list of wordings")
    return _compile(file, key, r"(?<!\w)(?:" + "|".join(map(str, alternatives)) + r")(?!\w)")


def _compile(file: str, key: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise PhraseTableError(file, key, f"is not a valid pattern ({e})") from e


def _text(file: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PhraseTableError(file, key, "must be a non-empty string")
    return value.strip()


def _table(file: str, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise PhraseTableError(file, key, "is missing")
    return value


def _person(file: str, raw: Mapping[str, Any]) -> re.Pattern[str]:
    """The ask-for-a-person wordings, their placeholders filled in."""
    for key in _PERSON_KEYS:
        if key not in raw:
            raise PhraseTableError(file, f"listen.person.{key}", "is missing")
    who, not_own, end = (str(raw[k]) for k in ("who", "not_own", "end"))
    asks = raw["asks"]
    if not isinstance(asks, list) or not asks:
        raise PhraseTableError(file, "listen.person.asks", "must be a non-empty list")
    filled = [
        str(a).replace("{person}", rf"{who}\b{not_own}").replace("{who}", who).replace("{end}", end)
        for a in asks
    ]
    return _compile(file, "listen.person.asks", "|".join(f"(?:{p})" for p in filled))


def parse(file: str, raw: Mapping[str, Any]) -> Phrases:
    """One table (``raw``, read from ``file``) checked and compiled."""
    language = Path(file).stem
    say_raw = _table(file, raw, "say")
    for key in SAY_KEYS:
        if key not in say_raw:
            raise PhraseTableError(file, f"say.{key}", "is missing")
    say = Say(**{k: _text(file, f"say.{k}", say_raw[k]) for k in SAY_KEYS})
    if not _LOCALE.fullmatch(say.locale):
        raise PhraseTableError(file, "say.locale", "must be a language tag such as fr-FR")
    ann = _table(file, raw, "announcement")
    required: dict[str, re.Pattern[str]] = {}
    for part in ANNOUNCEMENT_PARTS:
        if part not in ann:
            raise PhraseTableError(file, f"announcement.{part}", "is missing")
        required[part] = _words(file, f"announcement.{part}", ann[part])
    countries = {
        code.upper(): _text(file, f"announcement.countries.{code}.text", (spec or {}).get("text"))
        for code, spec in (ann.get("countries") or {}).items()
    }
    listen = _table(file, raw, "listen")
    for key in ("goodbye", "refusal"):
        if key not in listen:
            raise PhraseTableError(file, f"listen.{key}", "is missing")
    person = listen.get("person")
    if not isinstance(person, dict):
        raise PhraseTableError(file, "listen.person", "is missing")
    phrases = Phrases(
        language=language,
        say=say,
        required=required,
        countries=countries,
        goodbye=_words(file, "listen.goodbye", listen["goodbye"]),
        refusal=_words(file, "listen.refusal", listen["refusal"]),
        person=_person(file, person),
    )
    for key, text in [
        ("say.announcement", say.announcement),
        *((f"announcement.countries.{c}.text", t) for c, t in countries.items()),
    ]:  # a default announcement says what every announcement must
        missing = [p for p, words in required.items() if not words.search(text)]
        if missing:
            raise PhraseTableError(file, key, f"lacks {', '.join(missing)}")
    return phrases


def load(directory: Path = TABLES) -> dict[str, Phrases]:
    """Every table in ``directory``, by language; :class:`PhraseTableError` on a bad one."""
    tables: dict[str, Phrases] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise PhraseTableError(path.name, "-", f"is not valid TOML ({e})") from e
        tables[path.stem] = parse(path.name, raw)
    if FALLBACK not in tables:
        raise PhraseTableError(f"{FALLBACK}.toml", "-", "is missing (the fallback language)")
    return tables


_TABLES = load()
#: The languages with a phrase table.
LANGUAGES = frozenset(_TABLES)


def base_language(language: str) -> str:
    """``language``'s ISO 639-1 part, lower case (``fr-CA`` -> ``fr``)."""
    return language.split("-")[0].split("_")[0].lower()


def phrases(language: str) -> Phrases:
    """The table of ``language`` (its base language; English when there is none)."""
    return _TABLES.get(base_language(language), _TABLES[FALLBACK])


def has_table(language: str) -> bool:
    """Whether ``language`` (its base language) has its own table."""
    return base_language(language) in _TABLES
