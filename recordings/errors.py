"""Errors of recordings; each carries a stable ``code``.

:class:`DecryptionError` is defined by the encrypted format itself (:mod:`recordings.crypto`
imports nothing of ours), so it is not a :class:`RecordingsError`: catch both where both can
arise.
"""

from __future__ import annotations

from recordings.crypto import DecryptionError


class RecordingsError(Exception):
    """Base error of the recordings package."""

    code = "recordings_error"


class NoTenantKey(RecordingsError):
    """The tenant has no key: it was offboarded (crypto-shredded), or never stored anything."""

    code = "no_tenant_key"


class MasterKeyError(RecordingsError):
    """The master key is missing, unreadable, too open, or not 32 bytes."""

    code = "master_key_invalid"


class StorageConfigError(RecordingsError):
    """The storage settings are incomplete."""

    code = "storage_config_incomplete"


class ObjectMissing(RecordingsError):
    """No such object in storage."""

    code = "object_missing"


__all__ = [
    "DecryptionError",
    "MasterKeyError",
    "NoTenantKey",
    "ObjectMissing",
    "RecordingsError",
    "StorageConfigError",
]
