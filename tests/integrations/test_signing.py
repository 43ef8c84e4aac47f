"""Standard Webhooks signatures: ours checked by the ``standardwebhooks`` library, and the
library's by ours (pure: bytes, headers and the time passed in)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from integrations.signing import new_message_id, new_secret, signature, signed_headers, verify

BODY = b'{"type":"call.ended","data":{"call_id":"call_1"}}'


def test_our_signature_verifies_with_the_library_and_theirs_with_ours() -> None:
    secret, msg_id, now = new_secret(), new_message_id(), int(time.time())
    headers = signed_headers(secret, msg_id, now, BODY)
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "call.ended",
        "data": {"call_id": "call_1"},
    }
    theirs = Webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(now, dt.UTC), BODY.decode())
    assert theirs == headers["webhook-signature"] == signature(secret, msg_id, now, BODY)
    assert verify(secret, headers, BODY, now)


def test_a_changed_body_id_time_or_secret_does_not_verify() -> None:
    secret, now = new_secret(), int(time.time())
    headers = signed_headers(secret, "msg_1", now, BODY)
    for wrong in (
        (secret, headers, BODY + b" "),
        (secret, headers | {"webhook-id": "msg_2"}, BODY),
        (secret, headers | {"webhook-timestamp": str(now + 1)}, BODY),
        (new_secret(), headers, BODY),
    ):
        assert not verify(*wrong, now=now)
        with pytest.raises(WebhookVerificationError):
            Webhook(wrong[0]).verify(wrong[2], wrong[1])
    assert not verify(secret, headers, BODY, now + 600)  # outside the 5-minute tolerance
