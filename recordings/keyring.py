"""The key hierarchy: master key -> one key per tenant (KEK) -> one data key per object.

The master key wraps the KEKs, a KEK wraps its tenant's data keys. Only wrapped keys are stored
(in Redis); nothing unwrapped is cached, so destroying a tenant's KEK (crypto-shredding) leaves
no way to any of its data keys.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis

from recordings.crypto import KEY_BYTES, Identity, new_key, unwrap, wrap
from recordings.errors import MasterKeyError, NoTenantKey
from store import keys

log = logging.getLogger(__name__)


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise MasterKeyError(f"{where}: not base64") from e
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{where}: a master key is 32 bytes (base64 of 32 random bytes)")
    return key


def load_master_key(env_value: str | None, path: Path, create: bool = False) -> bytes:
    """The master key from ``env_value`` (base64), else from ``path`` (mode 0600).

    With ``create`` and no key anywhere, a new key is written to ``path`` (0600) with a loud
    warning: losing that file loses every recording and transcript.
    """
    if env_value:
        return _decode(env_value, "BONMONIQ_MASTER_KEY")
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise MasterKeyError(f"{path} is readable by others (mode {mode:o}): chmod 600 {path}")
        return _decode(path.read_text(), str(path))
    if not create:
        raise MasterKeyError(
            f"no master key: set BONMONIQ_MASTER_KEY or create {path} (base64 of 32 random "
            "bytes, mode 0600); `bonmoniq serve` creates one on first start"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    log.warning(
        "NEW MASTER KEY GENERATED: back it up now and keep it off this machine's backups of "
        "the data; without it no recording or transcript can ever be decrypted",
        extra={"path": str(path)},
    )
    bar = "!" * 78
    print(
        f"\n{bar}\n  A NEW MASTER KEY was generated at {path}\n"
        "  Back it up now, away from the data: without it no recording or transcript can\n"
        "  ever be decrypted. In production set BONMONIQ_MASTER_KEY or provision the file.\n"
        f"{bar}\n",
        file=sys.stderr,
        flush=True,
    )
    return key


def _kek_context(tenant: str, version: int) -> bytes:
    return f"bonmoniq/kek/{tenant}/{version}".encode()


def _dek_context(identity: Identity) -> bytes:
    return b"bonmoniq/dek/" + identity.aad()


@dataclass(frozen=True)
class WrappedKey:
    """An object's data key as stored: wrapped under the tenant's KEK ``kek_version``."""

    kek_version: int
    wrapped: bytes

    def encode(self) -> str:
        """For a Redis field."""
        return f"{self.kek_version}:{base64.b64encode(self.wrapped).decode()}"

    @classmethod
    def decode(cls, text: str) -> WrappedKey:
        """From a Redis field."""
        version, _, b64 = text.partition(":")
        return cls(int(version), base64.b64decode(b64))


class KeyRing:
    """Tenants' KEKs (wrapped by the master key, in ``kek:{tenant}``) and objects' data keys."""

    def __init__(self, redis: Redis, master: bytes) -> None:
        """Wrap with ``master``; store in ``redis``."""
        self.redis = redis
        self._master = master

    def derived(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` derived from the master key (HKDF-SHA256), never stored."""
        info = b"bonmoniq/derived/" + purpose.encode()
        return HKDF(SHA256(), KEY_BYTES, salt=None, info=info).derive(self._master)

    async def _kek(self, tenant: str, version: int | None = None) -> tuple[int, bytes]:
        ring = keys.strs(await self.redis.hgetall(keys.kek(tenant)))
        if version is None:
            if not ring.get("current"):
                raise NoTenantKey(tenant)
            version = int(ring["current"])
        wrapped = ring.get(f"v{version}")
        if wrapped is None:
            raise NoTenantKey(f"{tenant} has no key version {version}")
        context = _kek_context(tenant, version)
        return version, unwrap(self._master, base64.b64decode(wrapped), context)

    async def ensure(self, tenant: str) -> int:
        """The tenant's current KEK version, creating its first KEK if it has none."""
        current = await self.redis.hget(keys.kek(tenant), "current")
        if current:
            return int(current)
        wrapped = wrap(self._master, new_key(), _kek_context(tenant, 1))
        async with self.redis.pipeline(transaction=True) as p:
            p.hsetnx(keys.kek(tenant), "v1", base64.b64encode(wrapped).decode())
            p.hsetnx(keys.kek(tenant), "current", "1")
            await p.execute()
        return int(await self.redis.hget(keys.kek(tenant), "current") or 1)

    async def new_data_key(self, identity: Identity) -> tuple[bytes, WrappedKey]:
        """A fresh data key for the object ``identity``, and how to store it."""
        await self.ensure(identity.tenant)
        version, kek = await self._kek(identity.tenant)
        dek = new_key()
        return dek, WrappedKey(version, wrap(kek, dek, _dek_context(identity)))

    async def data_key(self, identity: Identity, stored: WrappedKey) -> bytes:
        """The data key of ``identity``; :class:`NoTenantKey` after crypto-shredding."""
        _, kek = await self._kek(identity.tenant, stored.kek_version)
        return unwrap(kek, stored.wrapped, _dek_context(identity))

    async def rotate(self, tenant: str) -> tuple[int, int]:
        """Start a new KEK version for ``tenant``; (old, new). Re-wrap, then :meth:`retire`."""
        old = await self.ensure(tenant)
        new = old + 1
        wrapped = wrap(self._master, new_key(), _kek_context(tenant, new))
        await self.redis.hset(
            keys.kek(tenant),
            mapping={f"v{new}": base64.b64encode(wrapped).decode(), "current": str(new)},
        )
        return old, new

    async def rewrap(self, identity: Identity, stored: WrappedKey, version: int) -> WrappedKey:
        """``stored`` re-wrapped under KEK ``version`` (the content is not touched)."""
        dek = await self.data_key(identity, stored)
        _, kek = await self._kek(identity.tenant, version)
        return WrappedKey(version, wrap(kek, dek, _dek_context(identity)))

    async def retire(self, tenant: str, version: int) -> None:
        """Forget KEK ``version`` once nothing is wrapped under it."""
        await self.redis.hdel(keys.kek(tenant), f"v{version}")

    async def destroy(self, tenant: str) -> None:
        """Crypto-shred: forget every KEK of ``tenant``."""
        await self.redis.delete(keys.kek(tenant))
