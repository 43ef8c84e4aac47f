"""What callers say, per language: goodbye, an objection to the recording, asking for a person.

The wordings are in the phrase tables (voice/lang/*.toml, :mod:`voice.phrasebook`). Every
detector reads the call's language and English: callers mix them ("bye", "stop recording"),
and a wrong "no" to the recording errs on the caller's side. A person mentioned in passing
("I'm a person who likes bread") is not a request: a person word counts only as the object of
talking or being put through, not someone of the caller's own ("someone from my family"),
and after "I want/need" only as the whole request ("I want a human.").

``language`` is a code or the call's :class:`~voice.language.CallLanguage`, read when a text is
checked; while the call's language is still being detected, every language's wordings count.
"""

from __future__ import annotations

from voice.language import CallLanguage
from voice.phrasebook import FALLBACK, LANGUAGES, phrases

__all__ = ["LANGUAGES", "asks_for_person", "normal", "refuses_recording", "says_goodbye"]


def normal(text: str) -> str:
    """``text`` as the detectors read it: typographic apostrophes plain, spaces single."""
    return " ".join(text.replace("\u2019", "'").split())


def _heard(text: str, language: str | CallLanguage, detector: str) -> bool:
    """Whether ``detector`` finds ``text``, in ``language`` or in English (callers mix them)."""
    said = normal(text)
    if isinstance(language, CallLanguage) and language.detecting:  # not known yet: any
        return any(getattr(phrases(lang), detector).search(said) for lang in sorted(LANGUAGES))
    own = phrases(str(language))
    if getattr(own, detector).search(said):
        return True
    return own.language != FALLBACK and bool(getattr(phrases(FALLBACK), detector).search(said))


def says_goodbye(text: str, language: str | CallLanguage) -> bool:
    """Whether ``text`` says goodbye, in ``language`` or in English."""
    return _heard(text, language, "goodbye")


def refuses_recording(text: str, language: str | CallLanguage) -> bool:
    """Whether ``text`` objects to the recording, in ``language`` or in English.

    On the call of an ``auto`` agent, in any language for the whole call: a detection that
    took the caller's language for another must not keep their objection from counting.
    """
    if isinstance(language, CallLanguage) and language.auto:
        said = normal(text)
        return any(phrases(lang).refusal.search(said) for lang in sorted(LANGUAGES))
    return _heard(text, language, "refusal")


def asks_for_person(text: str, language: str | CallLanguage) -> bool:
    """Whether ``text`` asks to speak to a person, in ``language`` or in English."""
    return _heard(text, language, "person")
