"""Values sealed under a tenant's key (AES-256-GCM, a data key wrapped by the tenant's KEK).

Each value gets its own data key, bound with its identity (tenant, name, kind) as associated
data, so a value cannot be moved to another record; crypto-shredding the tenant makes it
unreadable.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from integrations.errors import SealedUnreadable
from recordings.crypto import DecryptionError, Identity
from recordings.errors import NoTenantKey
from recordings.keyring import KeyRing, WrappedKey

_PREFIX = "sealed1."


class Sealer:
    """Seals and opens small values (secrets, URLs, payloads) with the tenants' keys."""

    def __init__(self, keyring: KeyRing) -> None:
        """Seal under the tenants' keys of ``keyring``."""
        self.keyring = keyring

    async def seal(self, tenant: str, name: str, kind: str, plaintext: bytes) -> str:
        """``plaintext`` sealed as the value ``kind`` of record ``name``: a printable string."""
        identity = Identity(tenant, name, kind)
        dek, wrapped = await self.keyring.new_data_key(identity)
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(dek).encrypt(nonce, plaintext, identity.aad())
        return _PREFIX + wrapped.encode() + "." + base64.b64encode(sealed).decode()

    async def open(self, tenant: str, name: str, kind: str, text: str) -> bytes:
        """The plaintext of :meth:`seal`'s ``text``; :class:`SealedUnreadable` if it cannot be."""
        identity = Identity(tenant, name, kind)
        try:
            if not text.startswith(_PREFIX):
                raise ValueError("not a sealed value")
            wrapped_text, _, body = text[len(_PREFIX) :].rpartition(".")
            dek = await self.keyring.data_key(identity, WrappedKey.decode(wrapped_text))
            raw = base64.b64decode(body)
            return AESGCM(dek).decrypt(raw[:12], raw[12:], identity.aad())
        except (NoTenantKey, DecryptionError, InvalidTag, ValueError, binascii.Error) as e:
            raise SealedUnreadable(f"the sealed {kind} of {name} cannot be opened") from e
