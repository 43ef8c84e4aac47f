"""The language of one call: the agent's, or (``auto``) detected from the caller's first words.

An ``auto`` agent's call opens in the language of the country dialled (when it has a phrase
table, else English) and keeps detecting until the caller's first heard utterance fixes the
language for the rest of the call. The processors of the call share one :class:`CallLanguage`
and read :attr:`CallLanguage.code` when they need it; the session listens for the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from routing.directory import AUTO_LANGUAGE
from voice.announcement import country_of
from voice.phrasebook import FALLBACK, LANGUAGES, base_language

log = logging.getLogger(__name__)

#: An agent's ``language`` that asks for detection.
AUTO = AUTO_LANGUAGE

#: The language a call to a number of each country opens in (before the caller speaks).
#: Countries with several languages open in the one most callers of the number are taken to
#: speak: Belgium and Luxembourg French, Switzerland German.
COUNTRY_LANGUAGES: Mapping[str, str] = {
    "FR": "fr", "BE": "fr", "LU": "fr", "CH": "de", "DE": "de", "AT": "de", "ES": "es",
    "IT": "it", "NL": "nl", "PT": "pt", "PL": "pl", "SE": "sv", "DK": "da", "FI": "fi",
    "IE": "en", "GB": "en",
}  # fmt: skip


def opening_language(dialled: str | None) -> str:
    """The language an ``auto`` call opens in: the ``dialled`` number's country's, else English."""
    language = COUNTRY_LANGUAGES.get(country_of(dialled) or "")
    return language if language in LANGUAGES else FALLBACK


Listener = Callable[["CallLanguage"], None]


class CallLanguage:
    """The call's language (an ISO 639-1 code), shared by the call's processors.

    For a fixed agent the language never changes; for an ``auto`` agent :attr:`detecting` is
    true until :meth:`fix` is called once, which tells the listeners.
    """

    def __init__(self, agent_language: str, dialled: str | None = None) -> None:
        """The language of a call answered by an agent of ``agent_language`` on ``dialled``."""
        #: Whether the agent takes the caller's language (``auto``).
        self.auto = agent_language == AUTO
        self.detecting = self.auto
        self.opening = (
            opening_language(dialled) if self.detecting else base_language(agent_language)
        )
        self.code = self.opening
        #: Whisper's probability for the detected language (restricted to the supported ones).
        self.probability: float | None = None
        self._listeners: list[Listener] = []

    def __str__(self) -> str:
        return self.code

    def on_fix(self, listener: Listener) -> None:
        """Call ``listener(self)`` once the language is fixed by detection."""
        self._listeners.append(listener)

    def fix(self, code: str, probability: float | None = None) -> bool:
        """Fix the language at ``code`` (detected); False when it was fixed already.

        A language without a phrase table keeps the opening language.
        """
        if not self.detecting:
            return False
        self.detecting = False
        self.code = code if code in LANGUAGES else self.opening
        self.probability = probability
        for listener in self._listeners:
            try:
                listener(self)
            except Exception:  # one listener's failure must not keep the others uninformed
                log.exception("a language listener failed")
        return True

    @property
    def switched(self) -> bool:
        """Whether the fixed language differs from the one the call opened in."""
        return not self.detecting and self.code != self.opening
