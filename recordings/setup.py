"""Building the encrypted store of a process from its settings."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from recordings.errors import StorageConfigError
from recordings.keyring import KeyRing, load_master_key
from recordings.objects import EncryptedObjects
from recordings.settings import S3Settings
from recordings.storage import LocalStorage, ObjectStorage, S3Storage


def make_storage(backend: str, local_root: Path, s3: S3Settings) -> ObjectStorage:
    """The backend named ``backend`` (``local`` or ``s3``)."""
    if backend == "local":
        return LocalStorage(local_root)
    secret = s3.secret_key.get_secret_value() if s3.secret_key else None
    given = {
        "endpoint": s3.endpoint,
        "bucket": s3.bucket,
        "access_key": s3.access_key,
        "secret_key": secret,
    }
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise StorageConfigError(
            "BONMONIQ_STORAGE=s3 needs " + ", ".join(f"BONMONIQ_S3_{m.upper()}" for m in missing)
        )
    return S3Storage(str(s3.endpoint), str(s3.bucket), str(s3.access_key), str(secret), s3.region)


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
