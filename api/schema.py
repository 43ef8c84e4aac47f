"""Field types of the customer API whose OpenAPI schema says exactly what the server accepts.

A client generated from ``/openapi.json`` must not be refused for a request the schema allows:
each constraint the server checks is put here, in the schema, not only in code.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt
from starlette.convertors import Convertor, register_url_convertor

#: E.164: ``+``, a country code not starting with 0, 7 to 15 digits in all, nothing else.
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
#: A phone number as clients may write it: E.164 with spaces, dots, dashes or brackets between
#: (``+1 (555) 555-0100``), which the server removes (``routing.directory.normalise_number``).
PHONE_PATTERN = r"^[ ().-]*\+[ ().-]*[1-9](?:[ ().-]*[0-9]){6,14}[ ().-]*$"
#: At least one character that ``str.strip`` keeps (the server strips before it checks).
#: The white space is spelled out: ``\s`` differs between JSON Schema's regular expressions,
#: Python's and pydantic's (U+0085 and U+001C..U+001F, for one).
NOT_BLANK_PATTERN = (
    r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)


def _phone(value: str) -> str:
    """``value`` as E.164 if it matches ``PHONE_PATTERN``; the error says what is expected."""
    if not _PHONE.match(value):
        raise ValueError(f"{value!r} is not an E.164 phone number such as +15551234567")
    return _SEPARATORS.sub("", value)


_PHONE = re.compile(PHONE_PATTERN.replace("$", r"\Z"))
_SEPARATORS = re.compile(r"[ ().-]")
#: A phone number in a body, given back as E.164: the schema's ``pattern`` is what is checked.
PhoneNumber = Annotated[
    str,
    AfterValidator(_phone),
    Field(
        description="E.164, e.g. +33185001234 (spaces, dots, dashes and brackets are ignored)",
        json_schema_extra={"pattern": PHONE_PATTERN},
    ),
]


def whole(value: object) -> object:
    """``2.0`` as ``2``: JSON Schema's ``integer`` includes numbers with a zero fraction."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: An integer as JSON Schema reads it: ``2`` and ``2.0``, never ``"2"`` or ``true``.
WholeNumber = Annotated[StrictInt, BeforeValidator(whole)]
# Bounds go between (``Annotated[StrictInt, Field(ge=1), BeforeValidator(whole)]``): put on a
# ``WholeNumber`` from outside, they would be left out of the schema.


class E164Convertor(Convertor[str]):
    """``{number:e164}`` in a route's path: only a phone number (``PHONE_PATTERN``) matches.

    So ``/v1/numbers/available`` is never taken for a number (a PATCH there is a 405).
    """

    regex = PHONE_PATTERN.strip("^$")

    def convert(self, value: str) -> str:
        """The path segment as it is."""
        return value

    def to_string(self, value: str) -> str:
        """The number as it goes in a path."""
        return value


register_url_convertor("e164", E164Convertor())

#: A customer's http(s) URL (tools, webhooks), in ASCII (a name in punycode), without spaces or
#: user information: each regex engine reads these classes alike (``\s`` it does not).
URL_PATTERN = r"^https?://[A-Za-z0-9.:_%\[\]-]+([/?#][!-~]*)?$"
