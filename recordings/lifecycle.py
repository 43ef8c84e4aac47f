"""The data lifecycle: retention, legal hold, data-subject export and erasure, offboarding.

Every function takes the clock (``now``) from its caller. Calls are read, held and deleted
through a :class:`~recordings.archive.CallArchive`; erasing one removes its encrypted objects
(content, then metadata), then the call and every index that names it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import wave
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from recordings.archive import CallArchive
from recordings.crypto import DecryptionError
from recordings.keyring import NoTenantKey
from recordings.objects import EncryptedObjects
from recordings.subjects import PARTIES, PARTIES_KEY, Parties, ref_field
from recordings.subjects import e164 as e164
from recordings.subjects import subject_key as subject_key
from recordings.subjects import subject_ref as subject_ref
from recordings.transcripts import read_turns
from store import keys

log = logging.getLogger(__name__)
#: How many expired calls one sweep looks at, at most (the next sweep goes on).
SWEEP_BATCH = 1000
#: Fields of a call's hash that only serve sealing and matching its parties (not exported).
_SEALING = frozenset({PARTIES_KEY, *map(ref_field, PARTIES)})
#: Deletes what a higher package keeps about a call (or a tenant), by its id: injected by the
#: app (webhook deliveries hold a call's numbers and words, sealed).
Forget = Callable[[str], Awaitable[None]]


@dataclass
class Erasure:
    """What an erasure did: calls erased, and calls kept because of a legal hold."""

    erased: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


def wav(pcm: bytes, rate: int = 8000, channels: int = 2) -> bytes:
    """16-bit PCM as a WAV file (in memory)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


class Lifecycle:
    """Deletes and exports what the platform holds about calls."""

    def __init__(
        self,
        redis: Redis,
        objects: EncryptedObjects,
        calls: CallArchive,
        *,
        forget_call: Sequence[Forget] = (),
        forget_tenant: Sequence[Forget] = (),
    ) -> None:
        """Act on ``calls``, ``objects`` and the tenants' other state in ``redis``.

        Erasing a call also runs each of ``forget_call`` on its id; offboarding a tenant, each
        of ``forget_tenant`` on the tenant's.
        """
        self.redis, self.objects, self.calls = redis, objects, calls
        self.parties = Parties(objects.keyring)
        self.forget_call, self.forget_tenant = tuple(forget_call), tuple(forget_tenant)

    def subject_ref(self, tenant: str, number: str) -> str:
        """The keyed digest naming ``number`` in the tenant's audit log and stored responses."""
        return self.parties.ref(tenant, number)

    async def call(self, call_id: str) -> dict[str, str]:
        """A call's record (empty if none)."""
        return await self.calls.fields(call_id)

    async def set_hold(self, call_id: str, hold: bool, reason: str = "") -> None:
        """Place or lift a legal hold: a held call survives retention and erasure."""
        await self.calls.hold(call_id, (reason or "held") if hold else None)

    async def erase_call(self, call_id: str, *, force: bool = False) -> bool:
        """Erase a call and all it holds; ``False`` (nothing done) if it is under legal hold.

        ``force`` ignores the hold (offboarding: the tenant's data is exported first).
        """
        record = await self.call(call_id)
        if record.get("legal_hold") and not force:
            return False
        for forget in self.forget_call:
            await forget(call_id)
        for info in await self.objects.of_call(call_id):
            await self.objects.delete(info.object_id)
        await self.calls.delete(call_id)
        log.info("call erased", extra={"call_id": call_id})
        return True

    async def sweep(self, now: float) -> Erasure:
        """Erase every call past its retention at ``now``, except those under legal hold."""
        done = Erasure()
        for call_id in await self.calls.due(now, SWEEP_BATCH):
            if await self.erase_call(call_id):
                done.erased.append(call_id)
            else:
                done.held.append(call_id)
        log.info("retention sweep", extra={"erased": len(done.erased), "held": len(done.held)})
        return done

    async def calls_of(self, tenant: str, number: str | None = None) -> list[str]:
        """The tenant's calls (involving ``number`` as either party), oldest first.

        A party is found by its keyed digest (:meth:`Parties.involves`), so whatever form a
        carrier sent the number in; no sealed number is opened.
        """
        out = []
        for call_id in await self.calls.ids_of(tenant):
            if number is None:
                out.append(call_id)
                continue
            if self.parties.involves(await self.call(call_id), tenant, number):
                out.append(call_id)
        return out

    async def export(self, tenant: str, call_ids: list[str], about: dict[str, Any]) -> bytes:
        """A zip of the calls: ``manifest.json``, and per call its transcript and recording."""
        now = dt.datetime.now(dt.UTC).isoformat()
        manifest: dict[str, Any] = {**about, "tenant": tenant, "calls": [], "generated_at": now}
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for call_id in call_ids:
                record = await self.call(call_id)
                if record.get("tenant") != tenant:
                    continue
                # the subject's own numbers, opened; their digests and wrapped key stay out
                parties = await self.parties.open(record)
                record = {k: v for k, v in record.items() if k not in _SEALING} | parties
                events = [json.loads(e) for e in await self.calls.events(call_id)]
                entry: dict[str, Any] = {
                    "call": record,
                    "events": events,
                    "files": [],
                    "problems": [],
                }
                try:
                    turns, complete = await read_turns(self.objects, call_id)
                    if turns:
                        name = f"calls/{call_id}/transcript.json"
                        z.writestr(
                            name,
                            json.dumps(
                                {"complete": complete, "turns": [t.__dict__ for t in turns]},
                                indent=2,
                            ),
                        )
                        entry["files"].append(name)
                    for info in await self.objects.of_call(call_id, "recording"):
                        opened = await self.objects.open(info)
                        name = f"calls/{call_id}/{info.object_id}.wav"
                        z.writestr(name, wav(opened.plaintext))
                        entry["files"].append(name)
                        if not opened.complete:
                            entry["problems"].append(f"{name}: truncated ({opened.reason})")
                except (DecryptionError, NoTenantKey) as e:
                    entry["problems"].append(str(e))
                manifest["calls"].append(entry)
            z.writestr("manifest.json", json.dumps(manifest, indent=2))
        return out.getvalue()

    async def erase_subject(self, tenant: str, number: str) -> Erasure:
        """Erase every call of the tenant involving ``number`` (held calls are kept).

        Stored idempotent responses about the number go too, and Redis rewrites its
        append-only file (:func:`compact`) so that the erased values leave the disk now.
        """
        done = Erasure()
        for call_id in await self.calls_of(tenant, number):
            (done.erased if await self.erase_call(call_id) else done.held).append(call_id)
        await self._forget_responses(tenant, self.subject_ref(tenant, number))
        try:
            await compact(self.redis)
        except (RedisError, TimeoutError):  # erased all the same; the next rewrite drops them
            log.warning("append-only file not rewritten after an erasure", exc_info=True)
        return done

    async def _forget_responses(self, tenant: str, ref: str | None) -> None:
        """Drop the tenant's stored idempotent responses: those tagged ``ref``, or all (``None``).

        The tenant's index (``keys.idempotency_index``) names each stored response and the
        subjects it is about; the responses themselves are sealed and cannot be searched.
        """
        index = keys.idempotency_index(tenant)
        tagged = keys.strs(await self.redis.hgetall(index))
        doomed = [slot for slot, refs in tagged.items() if ref is None or ref in refs.split()]
        if doomed:
            async with self.redis.pipeline(transaction=True) as p:
                p.delete(*doomed)
                p.hdel(index, *doomed)
                await p.execute()
        if ref is None:
            await self.redis.delete(index)
            for key_id in map(str, await self.redis.smembers(keys.tenant_keys(tenant))):
                slots = self.redis.scan_iter(match=keys.idempotency_of(key_id), count=500)
                async for slot in slots:
                    await self.redis.delete(slot)

    async def offboard(self, tenant: str, export_dir: Path) -> dict[str, Any]:
        """End of contract: export everything, then crypto-shred the tenant and forget it.

        Writes ``{tenant}-export.zip`` into ``export_dir`` first (refusing to go on if that
        fails); then erases every call (holds included: they are in the export), destroys the
        tenant's KEK, deletes its agents, numbers, keys, limits, audit log and what
        ``forget_tenant`` deletes (webhook endpoints and deliveries, tools secret), and has Redis
        rewrite its append-only file so that no deleted value survives in it.
        """
        calls = await self.calls_of(tenant)
        entries: list[Any] = await self.redis.xrange(keys.audit(tenant)) or []
        audit = [{"id": i, **f} for i, f in entries]
        numbers = sorted(map(str, await self.redis.smembers(keys.numbers(tenant))))
        about = {"kind": "tenant export", "audit": audit, "numbers": numbers}
        archive = await self.export(tenant, calls, about)
        target = await asyncio.to_thread(_write_export, export_dir, tenant, archive)
        for call_id in calls:
            await self.erase_call(call_id, force=True)
        for object_id in map(str, await self.redis.smembers(keys.tenant_objects(tenant))):
            await self.objects.delete(object_id)
        await self.objects.keyring.destroy(tenant)
        await self._forget_responses(tenant, None)
        for forget in self.forget_tenant:
            await forget(tenant)
        doomed = [
            keys.tenant(tenant),
            keys.tenant_keys(tenant),
            keys.audit(tenant),
            keys.agents(tenant),
            keys.agent_names(tenant),
            keys.numbers(tenant),
            keys.tenant_calls(tenant),
            keys.tenant_objects(tenant),
            keys.kek(tenant),
        ]
        doomed += [
            keys.api_key(str(k)) for k in await self.redis.smembers(keys.tenant_keys(tenant))
        ]
        doomed += [
            keys.agent(tenant, str(a)) for a in await self.redis.smembers(keys.agents(tenant))
        ]
        doomed += [keys.number(n) for n in numbers]
        doomed += [str(k) async for k in self.redis.scan_iter(match=keys.tenant_limits(tenant))]
        await self.redis.delete(*doomed)
        await self.redis.srem(keys.tenants(), tenant)
        await compact(self.redis)
        log.warning("tenant offboarded", extra={"tenant": tenant, "calls": len(calls)})
        return {"tenant": tenant, "export": str(target), "calls": len(calls), "numbers": numbers}


def _write_export(export_dir: Path, tenant: str, archive: bytes) -> Path:
    export_dir.mkdir(parents=True, exist_ok=True)
    target = export_dir / f"{tenant}-export.zip"
    partial = target.with_suffix(".partial")
    partial.write_bytes(archive)
    partial.replace(target)
    return target


#: One rewrite at a time per process: concurrent erasures wait for it rather than collide.
_COMPACTING = asyncio.Lock()
#: How long a rewrite (or one already running) is waited for.
COMPACT_WAIT_S = 60.0


async def compact(redis: Redis) -> None:
    """Make Redis rewrite its persistence files, so deleted values leave no trace on disk.

    A rewrite already running may have forked before the deletes: it is waited for, then a new
    one is started. The snapshot is a background save (``BGSAVE SCHEDULE``), so Redis keeps
    serving calls while it writes. Raises :class:`redis.RedisError` (or ``TimeoutError``) when
    Redis cannot rewrite them; the deletes stand either way.
    """
    async with _COMPACTING, asyncio.timeout(COMPACT_WAIT_S):
        config = keys.strs(await redis.config_get("appendonly")) | keys.strs(
            await redis.config_get("save")
        )
        if config.get("appendonly") == "yes":
            await _idle(redis, "aof_rewrite_in_progress", "aof_rewrite_scheduled")
            while True:
                try:
                    await redis.bgrewriteaof()
                    break
                except ResponseError as e:  # one started between our check and our request
                    if "in progress" not in str(e):
                        raise
                    await _idle(redis, "aof_rewrite_in_progress", "aof_rewrite_scheduled")
            await _idle(redis, "aof_rewrite_in_progress", "aof_rewrite_scheduled")
        if config.get("save"):
            await _idle(redis, "rdb_bgsave_in_progress")
            await redis.bgsave(schedule=True)  # no rewrite runs now: it starts at once
            await _idle(redis, "rdb_bgsave_in_progress")


async def _idle(redis: Redis, *flags: str) -> None:
    """Wait until none of the persistence ``flags`` is set."""
    while True:
        info = await redis.info("persistence")
        if not any(info.get(f) for f in flags):
            return
        await asyncio.sleep(0.1)
