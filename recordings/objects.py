"""Encrypted objects: a recording or a transcript of one call, sealed as it is captured.

Metadata (identity, wrapped data key, state) is in Redis, written before the first byte of
content; content is in an :class:`~recordings.storage.ObjectStorage`. Reading checks that a
finalized object is complete: a finalized object that reads as truncated is corrupt. An object
whose writer is known to be gone is marked truncated with a reason (:meth:`mark_truncated`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from redis.asyncio import Redis

from recordings.archive import CallArchive
from recordings.crypto import DecryptionError, Identity, Opened, Sealer, open_segments
from recordings.errors import ObjectMissing
from recordings.keyring import KeyRing, WrappedKey
from recordings.storage import Appender, ObjectStorage
from recordings.subjects import rewrap_parties
from store import keys

#: Recorded audio: 16-bit little-endian PCM, 8 kHz, two channels (caller left, agent right).
RECORDING_FORMAT = "pcm_s16le/8000/2"
#: The metadata field holding why an object was marked truncated.
TRUNCATED = "truncated"
# Marks KEYS[1] truncated with reason ARGV[1] while it is still being written.
_TRUNCATE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'truncated', 'truncated', ARGV[1])
return 1
"""


@dataclass(frozen=True)
class ObjectInfo:
    """An encrypted object's metadata."""

    object_id: str
    identity: Identity
    name: str
    state: str  # "open", "final", "truncated" (its writer is gone; the reason in ``extra``)
    created_at: float
    segments: int
    wrapped_key: WrappedKey
    extra: Mapping[str, str]

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> ObjectInfo:
        """Parse an ``obj:*`` hash."""
        known = {
            "object_id",
            "tenant",
            "call",
            "kind",
            "version",
            "name",
            "state",
            "created_at",
            "segments",
            "key",
        }
        return cls(
            raw["object_id"],
            Identity(raw["tenant"], raw["call"], raw["kind"], int(raw["version"])),
            raw["name"],
            raw["state"],
            float(raw["created_at"]),
            int(raw.get("segments") or 0),
            WrappedKey.decode(raw["key"]),
            {k: v for k, v in raw.items() if k not in known},
        )


class ObjectWriter:
    """Seals and appends one object's content; :meth:`finalize` ends it."""

    def __init__(
        self, objects: EncryptedObjects, info: ObjectInfo, sealer: Sealer, out: Appender
    ) -> None:
        """Use :meth:`EncryptedObjects.create`."""
        self._objects, self.info, self._sealer, self._out = objects, info, sealer, out
        self.finished = False

    async def append(self, plaintext: bytes) -> None:
        """Seal ``plaintext`` as the next segment and store it."""
        await self._out.append(self._sealer.seal(plaintext))

    async def finalize(self, tail: bytes = b"") -> None:
        """Seal the last segment (``tail``, may be empty) and mark the object complete."""
        if self.finished:
            return
        self.finished = True
        await self._out.append(self._sealer.seal(tail, last=True))
        await self._out.finalize()
        await self._objects.redis.hset(
            keys.obj(self.info.object_id),
            mapping={"state": "final", "segments": str(self._sealer.segments)},
        )

    async def discard(self) -> None:
        """Stop and delete everything written (the caller objected)."""
        self.finished = True
        await self._objects.delete(self.info.object_id)


class EncryptedObjects:
    """Create, read and delete a tenant's encrypted objects."""

    def __init__(self, redis: Redis, keyring: KeyRing, storage: ObjectStorage) -> None:
        """Metadata in ``redis``, keys from ``keyring``, content in ``storage``."""
        self.redis, self.keyring, self.storage = redis, keyring, storage
        self._truncate = redis.register_script(_TRUNCATE)

    async def create(self, identity: Identity, **extra: str) -> ObjectWriter:
        """A new object of ``identity``; its metadata is stored before any content."""
        object_id = f"{identity.kind[:3]}_{secrets.token_hex(12)}"
        name = f"{identity.tenant}/{identity.call}/{object_id}.bmqe"
        dek, wrapped = await self.keyring.new_data_key(identity)
        now = time.time()
        record = {
            "object_id": object_id,
            "tenant": identity.tenant,
            "call": identity.call,
            "kind": identity.kind,
            "version": str(identity.version),
            "name": name,
            "state": "open",
            "created_at": repr(now),
            "key": wrapped.encode(),
            **extra,
        }
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.obj(object_id), mapping=keys.fields(record))
            p.sadd(keys.call_objects(identity.call), object_id)
            p.sadd(keys.tenant_objects(identity.tenant), object_id)
            await p.execute()
        sealer = Sealer(dek, identity)
        out = await self.storage.create(name)
        await out.append(sealer.header)
        info = ObjectInfo(object_id, identity, name, "open", now, 0, wrapped, extra)
        return ObjectWriter(self, info, sealer, out)

    async def info(self, object_id: str) -> ObjectInfo | None:
        """An object's metadata, or ``None``."""
        raw = keys.strs(await self.redis.hgetall(keys.obj(object_id)))
        return ObjectInfo.from_redis(raw) if raw else None

    async def of_call(self, call_id: str, kind: str | None = None) -> list[ObjectInfo]:
        """The call's objects (of ``kind``), oldest first."""
        out = []
        for object_id in await self.redis.smembers(keys.call_objects(call_id)):
            found = await self.info(str(object_id))
            if found is not None and (kind is None or found.identity.kind == kind):
                out.append(found)
        return sorted(out, key=lambda i: i.created_at)

    async def mark_truncated(self, object_id: str, reason: str) -> bool:
        """Mark an object still being written as ended for good: its writer is gone.

        It then opens as truncated with ``reason``; ``False`` if it was not open (finalized,
        marked already, or gone).
        """
        return bool(await self._truncate(keys=[keys.obj(object_id)], args=[reason]))

    async def open(self, info: ObjectInfo) -> Opened:
        """Decrypt an object.

        A finalized one must be complete (else :class:`DecryptionError`); an unfinished one
        (a crash while capturing) gives its readable prefix, marked, with the reason it was
        given when it was marked truncated.
        """
        parts, summary = await self.open_parts(info)
        return Opened(b"".join(parts), summary.complete, summary.segments, summary.reason)

    async def open_parts(self, info: ObjectInfo) -> tuple[list[bytes], Opened]:
        """Like :meth:`open`, keeping each segment's plaintext apart."""
        try:
            stored = await self.storage.read(info.name)
        except ObjectMissing as e:
            raise DecryptionError(f"object {info.object_id} is missing from storage") from e
        dek = await self.keyring.data_key(info.identity, info.wrapped_key)
        parts: list[bytes] = []
        summary = Opened(b"", False, 0)
        for item in open_segments(dek, info.identity, stored.data):
            if isinstance(item, Opened):
                summary = item
            else:
                parts.append(item)
        if (info.state == "final" or stored.finalized) and not summary.complete:
            raise DecryptionError(f"object {info.object_id} was finalized but is truncated")
        if info.state == TRUNCATED and not summary.complete:
            summary = replace(summary, reason=info.extra.get(TRUNCATED) or summary.reason)
        return parts, summary

    async def delete(self, object_id: str) -> None:
        """Remove an object's content, then its metadata."""
        found = await self.info(object_id)
        if found is None:
            return
        await self.storage.delete(found.name)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.obj(object_id))
            p.srem(keys.call_objects(found.identity.call), object_id)
            p.srem(keys.tenant_objects(found.identity.tenant), object_id)
            await p.execute()

    async def delete_identity(self, identity: Identity) -> int:
        """Delete every object of ``identity`` (one call's recording or transcript); how many.

        Found through the call's index, which is written before any content: this reaches an
        object whose creation was interrupted before its writer was handed back.
        """
        found = [
            i for i in await self.of_call(identity.call, identity.kind) if i.identity == identity
        ]
        for info in found:
            await self.delete(info.object_id)
        return len(found)

    async def rotate_tenant_key(self, tenant: str, calls: CallArchive) -> int:
        """New KEK for ``tenant``; every data key re-wrapped, no content touched; how many.

        Objects' data keys and those of the sealed parties of its ``calls``
        (:mod:`recordings.subjects`).

        Passes repeat until one finds nothing under an old KEK (an object created while the
        rotation started may have taken the old one); then the old KEKs are forgotten.
        """
        _, new = await self.keyring.rotate(tenant)
        count = 0
        while True:
            moved = 0
            for object_id in await self.redis.smembers(keys.tenant_objects(tenant)):
                found = await self.info(str(object_id))
                if found is None or found.wrapped_key.kek_version == new:
                    continue
                rewrapped = await self.keyring.rewrap(found.identity, found.wrapped_key, new)
                await self.redis.hset(keys.obj(found.object_id), "key", rewrapped.encode())
                moved += 1
            # the keys of calls' sealed parties are wrapped under the same KEK
            moved += await rewrap_parties(calls, self.keyring, tenant, new)
            count += moved
            if moved == 0:
                break
        for version in range(1, new):
            await self.keyring.retire(tenant, version)
        return count
