"""Retention (the clock passed in), legal hold, recordings over the API, data-subject export and
erasure, and offboarding with crypto-shredding: on real Redis, real files, a running platform."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
import wave
import zipfile
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from calls.archive import CallArchive
from calls.store import CallStore
from recordings.crypto import new_key
from recordings.keyring import KeyRing, NoTenantKey
from recordings.lifecycle import Lifecycle, compact
from recordings.objects import EncryptedObjects, ObjectInfo
from recordings.storage import LocalStorage
from tests.conftest import MASTER_KEY, REPO, LiveServer, encrypted_store
from tests.helpers import a_call, agent_with_number, auth, new_tenant

DAY = 86400.0


async def test_retention_sweep_with_the_clock_passed_in_and_legal_hold(
    redis: Redis, tmp_path: Path
) -> None:
    objects = EncryptedObjects(redis, KeyRing(redis, new_key()), LocalStorage(tmp_path))
    life = Lifecycle(redis, objects, CallArchive(redis))
    short = await agent_with_number(redis, "t1", "short", "+15555550301", 1)
    long_ = await agent_with_number(redis, "t1", "long", "+15555550302", 30)
    now = 1_800_000_000.0
    a = await a_call(redis, objects, short, "+15555551001", now)
    b = await a_call(redis, objects, short, "+15555551002", now)
    c = await a_call(redis, objects, long_, "+15555551003", now)
    await life.set_hold(b, True, "litigation 42")
    assert (await life.sweep(now + 0.5 * DAY)).erased == []  # nothing is due yet
    done = await life.sweep(now + 2 * DAY)
    assert done.erased == [a] and done.held == [b]
    assert await redis.exists(f"call:{a}", f"call:{a}:events", f"call:{a}:objects") == 0
    assert not list(tmp_path.rglob(f"*{a}*/*"))  # its objects are gone from storage
    assert await CallStore(redis).get(b) is not None and len(await objects.of_call(b)) == 2
    assert (await life.sweep(now + 31 * DAY)).erased == [c]
    await life.set_hold(b, False)
    assert (await life.sweep(now + 31 * DAY)).erased == [b]
    assert await redis.zcard("retention") == 0 and await redis.zcard("calls") == 0
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_recording_api_read_audit_hold_and_delete(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant, admin = await new_tenant(live_server, "A")
    _, other = await new_tenant(live_server, "B")
    objects = encrypted_store(live_server, live_redis)
    agent = await agent_with_number(live_redis, tenant, "desk", "+15555550311", 180)
    call_id = await a_call(
        live_redis, objects, agent, "+15555552001", time.time(), audio=b"\x10\x00\x20\x00" * 4000
    )
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.get(f"/v1/calls/{call_id}/recording", headers=auth(admin))
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        assert r.headers["x-recording-complete"] == "true"
        with wave.open(io.BytesIO(r.content)) as w:
            assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
            assert w.readframes(w.getnframes()) == b"\x10\x00\x20\x00" * 4000
        assert (
            await c.get(f"/v1/calls/{call_id}/recording", headers=auth(other))
        ).status_code == 404
        audit = (await c.get("/v1/audit", headers=auth(admin))).json()["items"]
        assert ("recording.read", call_id, admin.split("_")[1]) in [
            (e["action"], e["target"], e["key_id"]) for e in audit
        ]
        held = await c.put(
            f"/v1/calls/{call_id}/legal-hold",
            json={"hold": True, "reason": "court order"},
            headers=auth(admin),
        )
        assert held.status_code == 200 and held.json()["legal_hold"] is True
        r = await c.delete(f"/v1/calls/{call_id}/recording", headers=auth(admin))
        assert r.status_code == 409 and r.json()["code"] == "legal_hold"
        await c.put(f"/v1/calls/{call_id}/legal-hold", json={"hold": False}, headers=auth(admin))
        assert (
            await c.delete(f"/v1/calls/{call_id}/recording", headers=auth(admin))
        ).status_code == 204
        assert (
            await c.get(f"/v1/calls/{call_id}/recording", headers=auth(admin))
        ).status_code == 404
        # The transcript remains (it is a separate object) and reads.
        t = await c.get(f"/v1/calls/{call_id}/transcript", headers=auth(admin))
        assert [x["text"] for x in t.json()["turns"]] == ["hello"]


async def test_data_subject_export_and_erase(live_server: LiveServer, live_redis: Redis) -> None:
    tenant, admin = await new_tenant(live_server, "A")
    objects = encrypted_store(live_server, live_redis)
    agent = await agent_with_number(live_redis, tenant, "desk", "+15555550321", 180)
    subject = "+15555553001"
    mine = [
        await a_call(live_redis, objects, agent, subject, time.time(), words=f"turn {i}")
        for i in range(3)
    ]
    other = await a_call(
        live_redis, objects, agent, "+15555553002", time.time(), words="someone else"
    )
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        await c.put(f"/v1/calls/{mine[2]}/legal-hold", json={"hold": True}, headers=auth(admin))
        r = await c.post(
            "/v1/data-subjects/export",
            json={"phone_number": "+1 555 555 3001"},
            headers=auth(admin),
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        z = zipfile.ZipFile(io.BytesIO(r.content))
        manifest = json.loads(z.read("manifest.json"))
        assert manifest["subject"] == subject and sorted(
            x["call"]["call_id"] for x in manifest["calls"]
        ) == sorted(mine)
        for call_id in mine:
            turns = json.loads(z.read(f"calls/{call_id}/transcript.json"))["turns"]
            assert turns[0]["text"].startswith("turn ")
            [wav_name] = [
                n for n in z.namelist() if n.startswith(f"calls/{call_id}/") and n.endswith(".wav")
            ]
            with wave.open(io.BytesIO(z.read(wav_name))) as w:
                assert w.getnframes() == 4000
        assert "someone else" not in r.content.decode("latin-1")
        erased = await c.post(
            "/v1/data-subjects/erase", json={"phone_number": subject}, headers=auth(admin)
        )
        assert erased.json() == {"erased_calls": 2, "kept_under_legal_hold": [mine[2]]}
        calls = {
            x["call_id"] for x in (await c.get("/v1/calls", headers=auth(admin))).json()["items"]
        }
        assert calls == {mine[2], other}
        audit = [
            (e["action"], e["target"])
            for e in (await c.get("/v1/audit", headers=auth(admin))).json()["items"]
        ]
        subjects = [t for a, t in audit if a.startswith("data_subject.")]
        assert len(subjects) == 2 and all(
            t.startswith("subject:") and "5555553001" not in t for t in subjects
        )
        viewer = (await c.post("/v1/keys", json={"role": "viewer"}, headers=auth(admin))).json()[
            "api_key"
        ]
        denied = await c.post(
            "/v1/data-subjects/erase", json={"phone_number": subject}, headers=auth(viewer)
        )
        assert denied.status_code == 403


def redis_files(dir_: str) -> bytes:
    return b"".join(p.read_bytes() for p in Path(dir_).rglob("*") if p.is_file())


async def test_offboarding_crypto_shreds_and_leaves_no_canary(
    live_server: LiveServer, live_redis: Redis, tmp_path: Path
) -> None:
    tenant, admin = await new_tenant(live_server, "Canary Corp")
    objects = encrypted_store(live_server, live_redis)
    agent = await agent_with_number(live_redis, tenant, "desk", "+15555550331", 180)
    canary_number, canary_phrase = "+15555558642", "canary zebra quartz phrase"
    call_id = await a_call(
        live_redis, objects, agent, canary_number, time.time(), words=canary_phrase
    )
    async with httpx.AsyncClient(
        base_url=live_server.url
    ) as c:  # the number passes through the API
        r = await c.post(
            "/v1/data-subjects/export", json={"phone_number": canary_number}, headers=auth(admin)
        )
        assert canary_phrase.encode() in zipfile.ZipFile(io.BytesIO(r.content)).read(
            f"calls/{call_id}/transcript.json"
        )
    infos: list[ObjectInfo] = await objects.of_call(call_id)
    storage_root = live_server.log.parent / "objects"
    copies = {i.object_id: (storage_root / i.name).read_bytes() for i in infos}
    wrapped_kek = (await live_redis.hget(f"kek:{tenant}", "v1")) or ""
    assert wrapped_kek
    sealed_caller = str(await live_redis.hget(f"call:{call_id}", "from_number"))
    # Positive control: before offboarding, the scan does see the call's record and the key in
    # Redis's own files (AOF, fsynced every second); the caller's number and the transcript
    # phrase are only ever there sealed.
    redis_dir = (await live_redis.config_get("dir"))["dir"]
    await asyncio.sleep(1.2)
    before = redis_files(redis_dir)
    assert sealed_caller.encode() in before and wrapped_kek.encode() in before
    assert canary_phrase.encode() not in before and canary_number[1:].encode() not in before
    env = {
        **os.environ,
        "BONMONIQ_REDIS_URL": live_server.redis_url,
        "BONMONIQ_VAR_DIR": str(live_server.log.parent),
        "BONMONIQ_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
        "BONMONIQ_LOG_LEVEL": "INFO",
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "app.cli",
            "tenants",
            "offboard",
            "Canary Corp",
            "--export",
            str(tmp_path / "out"),
            "--json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    export = zipfile.ZipFile(report["export"])
    assert canary_phrase.encode() in export.read(f"calls/{call_id}/transcript.json")
    [exported] = json.loads(export.read("manifest.json"))["calls"]
    assert exported["call"]["from_number"] == canary_number  # opened for the export
    assert any(
        a["action"] == "data_subject.export"
        for a in json.loads(export.read("manifest.json"))["audit"]
    )
    # The key is gone: the copied ciphertexts cannot be opened with anything left.
    ring = KeyRing(live_redis, MASTER_KEY)
    for info in infos:
        with pytest.raises(NoTenantKey):
            await ring.data_key(info.identity, info.wrapped_key)
    # Nothing of the tenant is left: storage, Redis (its files too, after the rewrite), logs.
    at_rest = redis_files(redis_dir) + live_server.log.read_bytes() + out.stderr.encode()
    at_rest += b"".join(p.read_bytes() for p in storage_root.rglob("*") if p.is_file())
    for key in await live_redis.keys("*"):
        at_rest += key.encode() + json.dumps(await live_redis.dump(key), default=str).encode()
    for canary in (canary_number, canary_number[1:], canary_phrase, wrapped_kek, sealed_caller):
        assert canary.encode() not in at_rest, canary
    assert tenant.encode() not in redis_files(redis_dir)
    for data in copies.values():
        assert data[:64] not in at_rest
    assert (await c_get(live_server, admin)).status_code == 401  # the tenant's keys are gone


async def c_get(server: LiveServer, key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as c:
        return await c.get("/v1/agents", headers=auth(key))


async def test_the_platform_on_s3_storage(redis_server: str, tmp_path: Path) -> None:
    """``BONMONIQ_STORAGE=s3``: the same objects, served back through the API and erased."""
    from moto.server import ThreadedMotoServer

    from recordings.storage import S3Storage
    from tests.conftest import free_port, start_server, stop_server

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    storage = S3Storage(endpoint, "bonmoniq", "key", "secret")
    await storage._call("create_bucket")
    url = redis_server.rsplit("/", 1)[0] + "/6"
    client = Redis.from_url(url, decode_responses=True)
    await client.flushdb()
    server = start_server(
        url,
        tmp_path,
        BONMONIQ_STORAGE="s3",
        BONMONIQ_S3_ENDPOINT=endpoint,
        BONMONIQ_S3_BUCKET="bonmoniq",
        BONMONIQ_S3_ACCESS_KEY="key",
        BONMONIQ_S3_SECRET_KEY="secret",
    )
    try:
        tenant, admin = await new_tenant(server, "S3 Co")
        objects = EncryptedObjects(client, KeyRing(client, MASTER_KEY), storage)
        route = await agent_with_number(client, tenant, "desk", "+15555550341", 180)
        call_id = await a_call(
            client, objects, route, "+15555554001", time.time(), audio=b"\x05\x00" * 8000
        )
        names = await storage.names()
        assert len(names) == 2 and all(n.startswith(f"{tenant}/{call_id}/") for n in names)
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.get(f"/v1/calls/{call_id}/recording", headers=auth(admin))
            assert r.status_code == 200, r.text
            with wave.open(io.BytesIO(r.content)) as w:
                assert w.readframes(w.getnframes()) == b"\x05\x00" * 8000
            t = await c.get(f"/v1/calls/{call_id}/transcript", headers=auth(admin))
            assert [x["text"] for x in t.json()["turns"]] == ["hello"]
            erased = await c.post(
                "/v1/data-subjects/erase",
                json={"phone_number": "+15555554001"},
                headers=auth(admin),
            )
            assert erased.json()["erased_calls"] == 1
        assert await storage.names() == []
    finally:
        stop_server(server)
        moto.stop()
        await client.aclose()


async def test_compaction_waits_for_a_rewrite_already_running_then_makes_its_own(
    redis: Redis,
) -> None:
    # A rewrite that forked before an erasure's deletes still holds the erased values: the
    # erasure must not fail on it ("already in progress") and must rewrite again after it.
    await redis.mset({f"filler:{i}": "x" * 64 for i in range(200)})
    await redis.config_set("rdb-key-save-delay", "2000")  # microseconds a key: a slow rewrite
    try:
        await redis.bgrewriteaof()
        assert (await redis.info("persistence"))["aof_rewrite_in_progress"] == 1
        before = (await redis.info("persistence"))["aof_rewrites"]  # counts the one running
        await compact(redis)
        after = await redis.info("persistence")
    finally:
        await redis.config_set("rdb-key-save-delay", "0")
    assert after["aof_rewrite_in_progress"] == 0 and after["aof_rewrites"] == before + 1
    assert after["aof_last_bgrewrite_status"] == "ok"
