"""An outbound call's voicemail choice in its record: the message sealed, detection results merged.

The message is words the tenant wrote for someone's mailbox: it is kept only sealed under a
data key of the call wrapped by the tenant's key (``Identity(tenant, call_id, "voicemail")``),
so offboarding the tenant makes it unreadable too. Carriers report detection in one or two
webhooks that may arrive in any order and more than once: :data:`MERGE` folds each into the
record so the outcome does not depend on their order.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from calls.records import Voicemail, VoicemailRequest
from recordings.crypto import DecryptionError, Identity
from recordings.keyring import KeyRing, NoTenantKey, WrappedKey
from recordings.subjects import SEALED, UNREADABLE

_KIND = "voicemail"
#: Hash fields of a call's voicemail choice and detection results.
ACTION, MESSAGE, KEY = "voicemail_action", "voicemail_message", "voicemail_key"
ANSWERED_BY, RESULT, GREETING_ENDED, FINAL = (
    "answered_by",
    "amd_result",
    "amd_greeting_ended",
    "amd_final",
)

# Folds one detection result into the call KEYS[1] and appends its event (ARGV[5]) to KEYS[2].
# A machine stays a machine (a later "unknown" does not undo it); "greeting ended" and "final"
# once true stay true. Returns {state, answered_by, greeting_ended, final}, or nil: no call.
MERGE = """
local cur = redis.call('HMGET', KEYS[1], 'state', 'answered_by', 'amd_greeting_ended', 'amd_final')
if not cur[1] then return nil end
local who = cur[2]
if (not who) or who == '' or ARGV[1] == 'machine' then who = ARGV[1] end
local ended = (cur[3] == '1' or ARGV[3] == '1') and '1' or '0'
local final = (cur[4] == '1' or ARGV[4] == '1') and '1' or '0'
redis.call('HSET', KEYS[1], 'answered_by', who, 'amd_result', ARGV[2],
  'amd_greeting_ended', ended, 'amd_final', final)
redis.call('RPUSH', KEYS[2], ARGV[5])
return {cur[1], who, ended, final}
"""


async def sealed_fields(
    keyring: KeyRing, tenant: str, call_id: str, request: VoicemailRequest
) -> dict[str, str]:
    """The call hash's fields of ``request``: the action, and the message sealed."""
    fields = {ACTION: request.action}
    if not request.message:
        return fields
    identity = Identity(tenant, call_id, _KIND)
    dek, wrapped = await keyring.new_data_key(identity)
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(dek).encrypt(nonce, request.message.encode(), identity.aad())
    return fields | {KEY: wrapped.encode(), MESSAGE: SEALED + base64.b64encode(sealed).decode()}


async def opened(keyring: KeyRing, raw: Mapping[str, str]) -> Voicemail | None:
    """The voicemail choice of the call hash ``raw`` with its message opened; ``None`` if none.

    A message that cannot be opened (the tenant's key destroyed) reads as
    :data:`~recordings.subjects.UNREADABLE`.
    """
    action = raw.get(ACTION)
    if not action:
        return None
    message = ""
    if raw.get(MESSAGE, "").startswith(SEALED):
        identity = Identity(raw.get("tenant", ""), raw.get("call_id", ""), _KIND)
        try:
            dek = await keyring.data_key(identity, WrappedKey.decode(raw[KEY]))
            sealed = base64.b64decode(raw[MESSAGE].removeprefix(SEALED), validate=True)
            message = AESGCM(dek).decrypt(sealed[:12], sealed[12:], identity.aad()).decode()
        except (KeyError, ValueError, binascii.Error, NoTenantKey, DecryptionError, InvalidTag):
            message = UNREADABLE
    return Voicemail(
        action=action,
        message=message,
        answered_by=raw.get(ANSWERED_BY, ""),
        result=raw.get(RESULT, ""),
        greeting_ended=raw.get(GREETING_ENDED) == "1",
        final=raw.get(FINAL) == "1",
    )
