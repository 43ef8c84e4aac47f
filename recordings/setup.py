"""Building the encrypted store of a process from its settings."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from recordings.keyring import KeyRing, load_master_key
from recordings.objects import EncryptedObjects
from recordings.storage import LocalStorage, ObjectStorage, S3Storage


class StorageConfigError(Exception):
    """The storage settings are incomplete."""


def make_storage(
    backend: str,
    local_root: Path,
    s3: dict[str, str | None] | None = None,
) -> ObjectStorage:
    """The backend named ``backend`` (``local`` or ``s3``)."""
    if backend == "local":
        return LocalStorage(local_root)
    s3 = s3 or {}
    missing = [k for k in ("endpoint", "bucket", "access_key", "secret_key") if not s3.get(k)]
    if missing:
        raise StorageConfigError(
            "BONMONIQ_STORAGE=s3 needs " + ", ".join(f"BONMONIQ_S3_{m.upper()}" for m in missing)
        )
    return S3Storage(
        str(s3["endpoint"]), str(s3["bucket"]), str(s3["access_key"]), str(s3["secret_key"]),
        str(s3.get("region") or "us-east-1"),
    )  # fmt: skip


def encrypted_objects(
    redis: Redis,
    master_env: str | None,
    master_file: Path,
    storage: ObjectStorage,
    create_master: bool = False,
) -> EncryptedObjects:
    """The encrypted store: the master key (see :func:`load_master_key`), keys in ``redis``."""
    master = load_master_key(master_env, master_file, create=create_master)
    return EncryptedObjects(redis, KeyRing(redis, master), storage)
