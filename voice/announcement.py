"""What an agent's announcement must say, per language: the AI disclosure and recording notice.

The words of each part, and each language's default announcement (per country where the
rules of the country dialled ask for more), come from the phrase tables
(:mod:`voice.phrasebook`): the announcement must match at least one wording of every part.
A language is supported when it has a table. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from routing.directory import AUTO_LANGUAGE, DEFAULT_ANNOUNCEMENT
from voice.errors import AnnouncementIncomplete
from voice.phrasebook import LANGUAGES, phrases

AI_DISCLOSURE = "ai_disclosure"
RECORDING_NOTICE = "recording_notice"

#: Per language: each part the announcement must contain, and the words that say it.
REQUIRED: Mapping[str, Mapping[str, re.Pattern[str]]] = {
    lang: phrases(lang).required for lang in sorted(LANGUAGES)
}
#: Per language: the announcement an agent gets when it sets none.
DEFAULTS: Mapping[str, str] = {lang: phrases(lang).say.announcement for lang in sorted(LANGUAGES)}

#: Country calling codes (E.164) of the countries whose rules a table may follow, longest
#: first when read: the French overseas departments are France.
_COUNTRY_CODES: Mapping[str, str] = {
    "33": "FR", "262": "FR", "590": "FR", "594": "FR", "596": "FR",
    "32": "BE", "352": "LU", "41": "CH", "49": "DE", "43": "AT", "34": "ES", "39": "IT",
    "31": "NL", "351": "PT", "48": "PL", "46": "SE", "45": "DK", "358": "FI", "353": "IE",
    "44": "GB",
}  # fmt: skip


def country_of(number: str | None) -> str | None:
    """The country (ISO 3166 alpha-2) of an E.164 ``number``, when it is one listed."""
    if not number or not number.startswith("+"):
        return None
    digits = number[1:]
    for length in (3, 2):
        found = _COUNTRY_CODES.get(digits[:length])
        if found:
            return found
    return None


def dialled(direction: str, from_number: str, to_number: str) -> str:
    """The number the caller dialled: the agent's (inbound), else the caller ID (outbound)."""
    return from_number if direction == "outbound" else to_number


def missing_parts(text: str, language: str) -> tuple[str, ...]:
    """The required parts ``text`` does not contain, in ``language`` (all, if unknown).

    For ``auto`` (the caller's language), in the language in which it misses the fewest: an
    own announcement of an ``auto`` agent is complete when it is complete in one language.
    """
    if language == AUTO_LANGUAGE:
        return min((missing_parts(text, lang) for lang in sorted(REQUIRED)), key=len)
    rules = REQUIRED.get(language)
    if rules is None:
        return (AI_DISCLOSURE, RECORDING_NOTICE)
    return tuple(part for part, words in rules.items() if not words.search(text))


def check_announcement(text: str, language: str) -> None:
    """Raise :class:`AnnouncementIncomplete` unless ``text`` says all it must in ``language``."""
    missing = missing_parts(text, language)
    if missing:
        checkable = language in REQUIRED or language == AUTO_LANGUAGE
        raise AnnouncementIncomplete(language, missing, checkable=checkable)


def default_announcement(language: str, country: str | None = None) -> str:
    """The announcement of an agent in ``language`` that sets none (English if unknown).

    ``country``: the country of the number the caller dialled; where its rules ask for more
    (the table has a text for it), that text.
    """
    table = phrases(language) if language in DEFAULTS else phrases("en")
    if country and country in table.countries:
        return table.countries[country]
    return table.say.announcement


def is_default(text: str) -> bool:
    """Whether ``text`` is a default announcement (of any language), not an agent's own."""
    said = text.strip()
    return said == DEFAULT_ANNOUNCEMENT or said in DEFAULTS.values()


def announcement_for(text: str, language: str, dialled: str | None) -> str:
    """What a call announces: the agent's own ``text``, else its language's default.

    The default follows the country of the ``dialled`` number (inbound: the agent's number;
    outbound: the caller ID). An own announcement that lacks a required part (stored before
    announcements were checked) is replaced by the default, which says it all.
    """
    said = text.strip()
    if said and not is_default(said) and not missing_parts(said, language):
        return said
    return default_announcement(language, country_of(dialled))
