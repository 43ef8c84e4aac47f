"""Recordings and transcripts, encrypted per tenant, and the data lifecycle around them.

Objects are sealed as they are captured (:mod:`recordings.crypto`, ``FORMAT.md``) under data keys
wrapped by a tenant's key (:mod:`recordings.keyring`); :mod:`recordings.lifecycle` applies
retention, legal holds, data-subject export and erasure, and offboarding, reaching calls through
the :class:`~recordings.archive.CallArchive` it is given.
"""

from recordings.archive import CallArchive
from recordings.errors import RecordingsError
from recordings.lifecycle import Lifecycle
from recordings.objects import EncryptedObjects

__all__ = ["CallArchive", "EncryptedObjects", "Lifecycle", "RecordingsError"]
