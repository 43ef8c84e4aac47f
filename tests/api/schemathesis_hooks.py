"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``): schema-valid requests are accepted, except for
the business rules no JSON Schema can state, each refused with its own problem ``code``.

``positive_data_acceptance`` fails any schema-valid request answered 4xx (but 401, 403, 404,
409, 429). :func:`positive_data_acceptance_but_business_rules` is the same check, which lets a
422 pass only when its ``code`` names one of the rules below; any other refusal of a
schema-valid request still fails (a constraint missing from the schema).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

#: Refusals that depend on the state, the clock or a table, not on the request's shape.
BUSINESS_RULES = {
    # The announcement must carry the AI disclosure and the recording notice, in the
    # agent's language (voice/announcement.py): a matter of words, not of a pattern.
    "announcement_incomplete",
    # The routing policy refused (a number not yours, a destination class or region refused).
    "route_refused",
    # E.164 in shape, but not a possible number of its country's numbering plan.
    "invalid_number",
    # A key's expiry must be later than now.
    "expires_in_past",
    # What a PATCH leaves must hold together with what is stored (a transfer tool needs a
    # number), and a number goes to an agent that exists.
    "transfer_number_missing",
    "unknown_agent",
    # A URL of a customer's system whose literal address is not public (or plain http outside
    # development): the egress rules (integrations/egress.py), for webhooks and HTTP tools.
    "egress_refused",
    "tool_url_refused",
    # What a JSON schema cannot say of an agent's tools: names unique and not the platform's,
    # and the tool parameters or extraction schema being a valid JSON schema themselves.
    "tool_name_reserved",
    "duplicate_tool_names",
    "invalid_json_schema",
    # An agent's voice must speak its language: which installed voice speaks which language is
    # the process's table (voice/voices.py), not the request's shape.
    "voice_language_mismatch",
    # HTTP tools need the tenant's tools secret to exist first (POST /v1/tools/secret).
    "tools_secret_missing",
    # A SIP account's provider must be "pbx" or a channel of the sub-processor register in
    # force (a dated table), and a registrar given as an address must be public (egress rules).
    "subprocessor_not_in_force",
    "registrar_not_public",
    # A browser's SDP offer must offer audio that aiortc can answer: SDP is not JSON.
    "invalid_offer",
}


@schemathesis.check
def positive_data_acceptance_but_business_rules(ctx: Any, response: Any, case: Any) -> bool | None:
    """``positive_data_acceptance``, a 422 for a business rule aside."""
    try:
        return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]
    except AssertionError:
        if response.status_code == 422 and _code(response) in BUSINESS_RULES:
            return None
        raise


def _code(response: Any) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None
