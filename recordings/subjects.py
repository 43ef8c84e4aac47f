"""Phone numbers of a call's parties: sealed under the tenant's key, matched by keyed digest.

A call's record keeps each party's number only sealed (AES-256-GCM under a data key of the
call, wrapped by the tenant's KEK, with the call's identity and the field as associated data),
so crypto-shredding a tenant makes them unreadable too; beside each, a keyed digest
(:func:`subject_ref`) finds the calls of a number without opening any. The same digest names a
number in the audit log, in events and in the index of stored responses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Mapping

import phonenumbers
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recordings.archive import CallArchive
from recordings.crypto import DecryptionError, Identity
from recordings.keyring import KeyRing, NoTenantKey, WrappedKey

#: The purpose of the master-derived key that digests phone numbers (:func:`subject_ref`).
SUBJECT_KEY_PURPOSE = "subject-ref"
#: The parties of a call, as fields of its hash.
PARTIES = ("from_number", "to_number")
#: The hash field holding the call's data key for its parties, wrapped by the tenant's KEK.
PARTIES_KEY = "parties_key"
#: How a sealed number starts in a call's hash (anything else is a record from before sealing).
SEALED = "sealed:"
#: What a number reads as when it cannot be opened (its tenant was offboarded).
UNREADABLE = "(sealed)"
_KIND = "parties"


def e164(raw: str) -> str:
    """``raw`` as the E.164 number it denotes, however a carrier wrote it; else ``raw`` stripped.

    Carriers send a caller as ``+33612345678``, ``33612345678`` (Sinch's ``cli``) or
    ``0033 6 12 34 56 78``; all three are one person to erasure and to the audit digest.
    A browser caller is an IP address: in its canonical form (an IPv4-mapped IPv6 as IPv4).
    """
    address = ip_party(raw)
    if address is not None:
        return address
    cleaned = re.sub(r"[\s\-().]", "", raw)
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    elif cleaned.isdigit():
        cleaned = "+" + cleaned
    try:
        parsed = phonenumbers.parse(cleaned, None)
    except phonenumbers.NumberParseException:
        return raw.strip()
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def ip_party(raw: str) -> str | None:
    """``raw`` as a canonical IP address when it is one (a WebRTC caller), else ``None``."""
    try:
        ip = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def subject_key(keyring: KeyRing) -> bytes:
    """The key :func:`subject_ref` digests with (derived from the master key, never stored)."""
    return keyring.derived(SUBJECT_KEY_PURPOSE)


def subject_ref(key: bytes, tenant: str, number: str) -> str:
    """How the platform names a phone number outside a call's sealed fields: a keyed digest.

    HMAC-SHA256 under a master-derived ``key``, per tenant, of the number in E.164: without
    the master key nobody can test candidate numbers against it (a plain hash of a phone
    number is reversed by trying the few billion numbers of a country).
    """
    mac = hmac.new(key, f"{tenant}|{e164(number)}".encode(), hashlib.sha256)
    return "subject:" + mac.hexdigest()[:32]


def masked(number: str) -> str:
    """A number shown without being kept: its country code and last two digits (``+33…78``)."""
    normal = e164(number)
    try:
        code = str(phonenumbers.parse(normal, None).country_code)
    except phonenumbers.NumberParseException:
        code = ""
    digits = re.sub(r"\D", "", normal)
    return f"+{code}…{digits[-2:]}" if code and len(digits) > len(code) + 2 else "…"


def ref_field(field: str) -> str:
    """The hash field holding the digest of the party in ``field``."""
    return field.removesuffix("_number") + "_ref"


def _aad(identity: Identity, field: str) -> bytes:
    return identity.aad() + b"|" + field.encode()


class Parties:
    """Seals and opens the parties of calls, and digests numbers, with the platform's keys."""

    def __init__(self, keyring: KeyRing) -> None:
        """Seal under tenants' keys of ``keyring``; digest under its derived subject key."""
        self.keyring = keyring
        self._key = subject_key(keyring)

    def ref(self, tenant: str, number: str) -> str:
        """The keyed digest of ``number`` in ``tenant``."""
        return subject_ref(self._key, tenant, number)

    async def seal(self, tenant: str, call_id: str, parties: Mapping[str, str]) -> dict[str, str]:
        """Hash fields for ``parties`` (field -> number): each sealed, with its digest.

        A call without tenant (refused: no agent answers the number) has no tenant key: its
        numbers are kept only as digests and masked (``+33…78``), never whole.
        """
        out = {ref_field(f): self.ref(tenant, n) for f, n in parties.items() if n}
        if not tenant:
            return out | {f: masked(n) if n else "" for f, n in parties.items()}
        identity = Identity(tenant, call_id, _KIND)
        dek, wrapped = await self.keyring.new_data_key(identity)
        aead = AESGCM(dek)
        out[PARTIES_KEY] = wrapped.encode()
        for field, number in parties.items():
            nonce = os.urandom(12)
            sealed = nonce + aead.encrypt(nonce, number.encode(), _aad(identity, field))
            out[field] = SEALED + base64.b64encode(sealed).decode()
        return out

    async def open(self, raw: Mapping[str, str]) -> dict[str, str]:
        """The parties of a call's hash in clear: field -> number.

        A value written before parties were sealed is returned as it is; one that cannot be
        opened (the tenant's key was destroyed, or the value altered) reads :data:`UNREADABLE`.
        """
        values = {f: raw.get(f, "") for f in PARTIES}
        if not any(v.startswith(SEALED) for v in values.values()):
            return values
        identity = Identity(raw.get("tenant", ""), raw.get("call_id", ""), _KIND)
        try:
            dek = await self.keyring.data_key(identity, WrappedKey.decode(raw[PARTIES_KEY]))
        except (KeyError, ValueError, binascii.Error, NoTenantKey, DecryptionError):
            return {f: UNREADABLE if v.startswith(SEALED) else v for f, v in values.items()}
        aead = AESGCM(dek)
        out = {}
        for field, value in values.items():
            if not value.startswith(SEALED):
                out[field] = value
                continue
            try:
                sealed = base64.b64decode(value.removeprefix(SEALED), validate=True)
                out[field] = aead.decrypt(sealed[:12], sealed[12:], _aad(identity, field)).decode()
            except (InvalidTag, ValueError, binascii.Error):
                out[field] = UNREADABLE
        return out

    def involves(self, raw: Mapping[str, str], tenant: str, number: str) -> bool:
        """Whether the call's hash ``raw`` has ``number`` as a party (by digest; else in E.164)."""
        refs = [raw.get(ref_field(f)) for f in PARTIES]
        if any(refs):
            return self.ref(tenant, number) in refs
        # a record from before parties were sealed: its numbers are in clear, as sent
        normal = e164(number)
        return any(
            bool(raw.get(f)) and not raw[f].startswith(SEALED) and e164(raw[f]) == normal
            for f in PARTIES
        )


async def rewrap_parties(calls: CallArchive, keyring: KeyRing, tenant: str, version: int) -> int:
    """Re-wrap the parties' data key of each of the tenant's calls under KEK ``version``; how many.

    Part of a key rotation: the old KEK can be retired once nothing is wrapped under it.
    """
    moved = 0
    for call_id in await calls.ids_of(tenant):
        stored = (await calls.fields(call_id)).get(PARTIES_KEY)
        if not stored:
            continue
        wrapped = WrappedKey.decode(stored)
        if wrapped.kek_version == version:
            continue
        identity = Identity(tenant, call_id, _KIND)
        rewrapped = await keyring.rewrap(identity, wrapped, version)
        await calls.update(call_id, {PARTIES_KEY: rewrapped.encode()})
        moved += 1
    return moved
