"""What callers say to ask for a person, per language: a transcription checked as it arrives.

Each language lists wordings of "let me talk to a person" (verb + person, or the person
alone as a whole request: "a human, please", "operator"). A person mentioned in passing ("I'm
a person who likes bread") does not count: the person must be what the caller asks to speak to
or be put through to. So a person word counts only as the object of talking, speaking or
being put through ("someone from my family" not even then), in English only in the caller's
own request ("I", "we", "me": not "he wants to talk to someone"), and after "I want/need",
"can I have" only as the whole request ("I want a human.", not "I need someone to fix my
boiler" or "I need a human touch").
"""

from __future__ import annotations

import re

#: Words for a person (not the agent) in each language.
_PERSON = {
    "en": r"(?:(?:a|an|the|real|live|actual|human)\s+){0,3}"
    r"(?:person|human(?: being)?|agent|operator|representative|rep|somebody|someone|"
    r"member of (?:the )?staff|staff member)",
    "fr": r"(?:un |une |la |le |l'|à |a )?(?:vraie? )?(?:personne|humain|être humain|"
    r"conseill(?:er|ère)|opérat(?:eur|rice)|agent|quelqu'un)(?: humaine?| réelle?)?",
    "de": r"(?:einem |einer |einen |eine |ein |mit )?(?:echten |echte |)?"
    r"(?:mensch(?:en)?|person|mitarbeiter(?:in)?|berater(?:in)?|jemandem|jemand)",
    "es": r"(?:una |un |con |a )?(?:persona(?: real)?|humano|ser humano|agente|operador(?:a)?|"
    r"asesor(?:a)?|alguien)",
    "it": r"(?:una |un |con |a |un')?(?:persona(?: vera| reale)?|essere umano|umano|operatore|"
    r"operatrice|agente|qualcuno)",
    "nl": r"(?:een |met |)(?:echt(?:e)? )?(?:persoon|mens|medewerker|iemand|"
    r"operator|agent)",
}

#: After a person word: not someone of the caller's own ("alguien de mi familia").
_NOT_OWN = {
    "en": r"(?!'s)(?!\s+(?:of|from|in)\s+(?:my|our)\b)",
    "fr": r"(?!\s+de\s+(?:ma|mon|mes|notre|nos)\b)",
    "de": r"(?!\s+(?:aus|von)\s+(?:meiner|meinem|meinen|unserer|unserem)\b)",
    "es": r"(?!\s+de\s+(?:mi|mis|nuestra|nuestro|nuestras|nuestros)\b)",
    "it": r"(?!\s+(?:della|del|dei|delle|di)\s+(?:mia|mio|miei|mie|nostra|nostro)\b)",
    "nl": r"(?!\s+(?:van|uit)\s+(?:mijn|onze|ons)\b)",
}
_P = {lang: rf"{_PERSON[lang]}\b{_NOT_OWN[lang]}" for lang in _PERSON}
#: The person as the whole request: the end of the clause (with "please", "now") follows.
_END = {
    "en": r"(?:\s*,?\s*(?:please|now|right\s+now|on\s+the\s+(?:line|phone)))?\s*(?:[.!?,;]|$)",
    "fr": r"(?:\s*,?\s*(?:s'il\s+vous\s+pla[iî]t|maintenant))?\s*(?:[.!?,;]|$)",
}
#: English: the request is the caller's own (not "he wants to talk to someone").
_OWN_EN = r"(?:^\W*|\b(?:i|we|me|us)\b[^.?!]*?\b)"

#: Whole requests per language: a verb of speaking or transfer, then the person.
_ASK = {
    "en": (
        rf"{_OWN_EN}(?:talk|speak|chat)\s+(?:to|with)\s+{_P['en']}",
        rf"\b(?:put|transfer|connect|pass)\s+me\s+(?:through\s+)?(?:to|with)\s+{_P['en']}",
        rf"\b(?:get|give)\s+me\s+{_P['en']}{_END['en']}",
        rf"\b(?:i\s+(?:want|need|would\s+like|'d\s+like)|can\s+i\s+have)\s+{_P['en']}"
        rf"{_END['en']}",
        r"^\W*(?:a\s+)?(?:human|person|real person|operator|representative|agent)"
        r"(?:,?\s+please)?\W*$",
    ),
    "fr": (
        rf"\b(?:parler|discuter)\s+(?:à|a|avec)\s+{_P['fr']}",
        rf"\b(?:passer|transférer|mettre\s+en\s+relation)\s+(?:avec\s+|à\s+)?{_P['fr']}",
        rf"\bpassez[- ]moi\s+{_P['fr']}",
        rf"\bje\s+(?:veux|voudrais|souhaite)\s+{_P['fr']}{_END['fr']}",
        r"^\W*(?:un\s+)?(?:humain|opérateur|conseiller)(?:,?\s+s'il\s+vous\s+plaît)?\W*$",
    ),
    "de": (
        rf"\b(?:sprechen|reden)\b.*\bmit\s+{_P['de']}",
        rf"\bmit\s+{_PERSON['de']}\s+(?:sprechen|reden)\b",
        rf"\b(?:verbinden\s+sie\s+mich|stellen\s+sie\s+mich\s+durch)\b.*\b{_P['de']}",
        r"^\W*(?:einen\s+)?(?:menschen|mitarbeiter)(?:,?\s+bitte)?\W*$",
    ),
    "es": (
        rf"\b(?:hablar|conversar)\s+con\s+{_P['es']}",
        rf"\b(?:pásame|páseme|comuníqueme|comunícame|transfiérame|transfiéreme)\s+"
        rf"(?:con\s+)?{_P['es']}",
        r"^\W*(?:un\s+)?(?:humano|operador|agente)(?:,?\s+por\s+favor)?\W*$",
    ),
    "it": (
        rf"\b(?:parlare|passare)\s+(?:con|a)\s+{_P['it']}",
        rf"\b(?:mi\s+passi|mi\s+passa|mi\s+metta\s+in\s+contatto\s+con)\s+{_P['it']}",
        r"^\W*(?:un\s+)?(?:operatore|umano)(?:,?\s+per\s+favore)?\W*$",
    ),
    "nl": (
        rf"\b(?:praten|spreken)\s+met\s+{_P['nl']}",
        rf"\bmet\s+{_PERSON['nl']}\s+(?:praten|spreken)\b",
        rf"\b(?:verbind|doorverbinden)\b.*\b{_P['nl']}",
        r"^\W*(?:een\s+)?(?:medewerker|mens)(?:,?\s+alstublieft)?\W*$",
    ),
}

_COMPILED = {
    lang: re.compile("|".join(f"(?:{p})" for p in pats), re.IGNORECASE)
    for lang, pats in _ASK.items()
}
#: Languages with wordings (others fall back to English).
LANGUAGES = frozenset(_COMPILED)


def asks_for_person(text: str, language: str) -> bool:
    """Whether the caller's ``text`` (in ``language``) asks to speak to a person."""
    pattern = _COMPILED.get(language.split("-")[0].lower(), _COMPILED["en"])
    normal = " ".join(text.replace("’", "'").split())
    return bool(pattern.search(normal))
