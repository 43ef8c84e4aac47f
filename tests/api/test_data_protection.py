"""Idempotent responses, the audit log and data-subject erasure keep no secret or personal data in
clear, and a stored response is replayed only to credentials the route still accepts: on a
running platform and its real Redis (its keys and its append-only file)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import redis as sync_redis
from redis.asyncio import Redis

from calls.archive import CallArchive
from carriers.base import InboundCall
from carriers.telnyx.simulator import FakeCallControl
from recordings.lifecycle import Lifecycle, e164
from tests.conftest import (
    OPERATOR_TOKEN,
    TELNYX_API_KEY,
    LiveServer,
    encrypted_store,
    sealing_calls,
)
from tests.helpers import (
    FROM,
    ROUTING,
    a_call,
    agent_with_number,
    auth,
    new_tenant,
    tenant_with_number,
)
from tests.privacy import PHONE, Needles, redis_files, redis_values


def idem(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def redis_dir(server: LiveServer) -> Path:
    client = sync_redis.Redis.from_url(server.redis_url)
    try:
        return Path(str(client.config_get("dir")["dir"]))
    finally:
        client.close()


def in_redis(server: LiveServer, needles: Needles) -> list[str]:
    """Where secrets or words of ``needles`` are in the live database (decoded) or Redis's files."""
    client = sync_redis.Redis.from_url(server.redis_url)
    try:
        found = [
            str(f)
            for key, field, value in redis_values(client)
            for f in needles.search(f"redis {key} {field}", value, numbers=False)
        ]
    finally:
        client.close()
    files = redis_files(redis_dir(server))
    return found + [str(f) for f in needles.search_file("AOF", files, numbers=False)]


async def test_a_new_api_key_is_stored_sealed_and_replayed_only_to_a_usable_key(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await new_tenant(live_server, "Sealed")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        body = {"role": "admin"}
        first = await c.post("/v1/keys", json=body, headers=auth(admin) | idem("new-key-1"))
        again = await c.post("/v1/keys", json=body, headers=auth(admin) | idem("new-key-1"))
        assert first.status_code == again.status_code == 201, first.text
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
        issued = first.json()["api_key"]
        # Neither Redis nor its append-only file has the new key, hex- or otherwise encoded.
        assert await live_redis.keys("idem:*"), "the response is kept (sealed)"
        assert in_redis(live_server, Needles(secrets={issued})) == []
        # Revoked, the key that made the request gets 401, not the stored response.
        revoked = await c.delete(f"/v1/keys/{admin.split('_')[1]}", headers=auth(issued))
        assert revoked.status_code == 204, revoked.text
        replay = await c.post("/v1/keys", json=body, headers=auth(admin) | idem("new-key-1"))
        assert replay.status_code == 401 and "idempotent-replayed" not in replay.headers
        assert issued not in replay.text
        # A key without the route's role gets 403, whatever Idempotency-Key it sends.
        viewer = (await c.post("/v1/keys", json={"role": "viewer"}, headers=auth(issued))).json()[
            "api_key"
        ]
        denied = await c.post("/v1/keys", json=body, headers=auth(viewer) | idem("new-key-1"))
        assert denied.status_code == 403 and issued not in denied.text
        assert (await c.get("/v1/keys", headers=auth(issued))).status_code == 200


async def test_an_expired_key_gets_401_not_its_stored_response(
    live_server: LiveServer, live_redis: Redis
) -> None:
    _, admin = await new_tenant(live_server, "Expiring")
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
        short = (
            await c.post("/v1/keys", json={"role": "admin", "expires_at": soon},
                         headers=auth(admin))
        ).json()  # fmt: skip
        first = await c.post("/v1/keys", json={"role": "viewer"},
                             headers=auth(short["api_key"]) | idem("exp-1"))  # fmt: skip
        assert first.status_code == 201
        # Expire it now (as the clock would): the record's expiry is in the past.
        await live_redis.hset(f"apikey:{short['key_id']}", "expires_at", str(time.time() - 1))
        replay = await c.post("/v1/keys", json={"role": "viewer"},
                              headers=auth(short["api_key"]) | idem("exp-1"))  # fmt: skip
        assert replay.status_code == 401 and first.json()["api_key"] not in replay.text


async def test_the_operators_new_tenant_key_is_sealed_and_goes_with_offboarding(
    live_server: LiveServer, live_redis: Redis, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        headers = auth(OPERATOR_TOKEN) | idem("tenant-1")
        made = await c.post("/v1/operator/tenants", json={"name": "Leaving"}, headers=headers)
        again = await c.post("/v1/operator/tenants", json={"name": "Leaving"}, headers=headers)
        assert made.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true" and again.json() == made.json()
        tenant, key = made.json()["tenant_id"], made.json()["api_key"]
        # The tenant's own key stores a response too (a new key): both are the tenant's.
        r = await c.post("/v1/keys", json={"role": "viewer"}, headers=auth(key) | idem("k"))
        assert r.status_code == 201
        wrong = await c.post("/v1/operator/tenants", json={"name": "Leaving"},
                             headers=auth("not-the-operator") | idem("tenant-1"))  # fmt: skip
        assert wrong.status_code == 401 and key not in wrong.text
    assert in_redis(live_server, Needles(secrets={key, r.json()["api_key"]})) == []
    assert len(await live_redis.keys("idem:*")) == 2  # the new tenant's, and its key's
    await Lifecycle(
        live_redis, encrypted_store(live_server, live_redis), CallArchive(live_redis)
    ).offboard(tenant, tmp_path)
    assert await live_redis.keys("idem*") == []


async def test_an_export_is_stored_sealed_and_erasure_deletes_it(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant, admin = await new_tenant(live_server, "Exports")
    objects = encrypted_store(live_server, live_redis)
    route = await agent_with_number(live_redis, tenant, "desk", "+15555550421", 180)
    subject, words = "+15555554101", "marmalade lighthouse umbrella"
    call_id = await a_call(live_redis, objects, route, subject, time.time(), words=words)
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        headers = auth(admin) | idem("export-1")
        first = await c.post("/v1/data-subjects/export", json={"phone_number": subject},
                             headers=headers)  # fmt: skip
        assert first.status_code == 200
        transcript = zipfile.ZipFile(io.BytesIO(first.content)).read(
            f"calls/{call_id}/transcript.json"
        )
        assert words.encode() in transcript
        again = await c.post("/v1/data-subjects/export", json={"phone_number": subject},
                             headers=headers)  # fmt: skip
        assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
        # Only ciphertext is kept: no words, no number, whatever the encoding (zip, hex).
        mine = f"idem:{admin.split('_')[1]}:*"
        exported = set(await live_redis.keys(mine))
        assert len(exported) == 1
        client = sync_redis.Redis.from_url(live_server.redis_url)
        kept = [v for k, _, v in redis_values(client) if k.startswith("idem:")]
        client.close()
        assert [str(f) for v in kept for f in Needles(numbers={subject}, words={words})
                .search("idempotency record", v)] == []  # fmt: skip
        erased = await c.post("/v1/data-subjects/erase", json={"phone_number": subject},
                              headers=auth(admin))  # fmt: skip
        assert erased.json()["erased_calls"] == 1
        assert not exported & set(await live_redis.keys(mine)), "erasure deletes the export"
        after = await c.post("/v1/data-subjects/export", json={"phone_number": subject},
                             headers=headers)  # fmt: skip
        assert after.status_code == 200 and "idempotent-replayed" not in after.headers
        assert (
            json.loads(zipfile.ZipFile(io.BytesIO(after.content)).read("manifest.json"))["calls"]
            == []
        )


async def test_placing_a_call_audits_a_digest_of_the_destination(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant, admin = await tenant_with_number(live_server, live_redis, "Audited")
    destination = "+15555557321"
    async with FakeCallControl(TELNYX_API_KEY, live_server.telnyx_api_port):
        async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as c:
            r = await c.post("/v1/calls", json={"from_number": FROM, "to": destination},
                             headers=auth(admin))  # fmt: skip
            assert r.status_code == 201, r.text
    entries = await live_redis.xrange(f"audit:{tenant}")
    placed = [f for _, f in entries if f["action"] == "call.place"]
    assert len(placed) == 1
    detail = json.loads(placed[0]["detail"])
    assert detail["to"].startswith("subject:") and detail["carrier"] == "telnyx"
    for _, fields in entries:
        assert not PHONE.search(json.dumps(fields).encode()), fields
        assert "5555557321" not in json.dumps(fields)
    # The digest is the one a data-subject request about that number is audited under.
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        await c.post("/v1/data-subjects/export", json={"phone_number": destination},
                     headers=auth(admin))  # fmt: skip
    exported = [f for _, f in await live_redis.xrange(f"audit:{tenant}")
                if f["action"] == "data_subject.export"]  # fmt: skip
    assert exported[0]["target"] == detail["to"]


async def test_erasure_matches_the_number_however_the_carrier_wrote_it_and_compacts_the_aof(
    live_server: LiveServer, live_redis: Redis
) -> None:
    tenant, admin = await new_tenant(live_server, "Erasing")
    route = await agent_with_number(live_redis, tenant, "desk", "+15555550431", 180)
    store = sealing_calls(live_redis)
    sent_as = ["15555554202", "+1 (555) 555-4202", "0015555554202"]  # Sinch's cli has no +
    ids = []
    for i, raw in enumerate(sent_as):
        call_id, _, _ = await store.open_inbound(
            InboundCall("sinch", f"sinch-{i}-{time.time()}", "app", raw, route.number, "ringing"),
            route, time.time(), ROUTING,
        )  # fmt: skip
        ids.append(call_id)
    files = redis_files(redis_dir(live_server))
    assert all(i.encode() in files for i in ids), "positive control: the AOF holds the calls"
    assert b"5555554202" not in files  # the caller is only ever there sealed
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        erased = await c.post("/v1/data-subjects/erase", json={"phone_number": "+15555554202"},
                              headers=auth(admin))  # fmt: skip
    assert erased.json() == {"erased_calls": 3, "kept_under_legal_hold": []}
    # The append-only file was rewritten: the erased calls leave no trace on disk.
    files = redis_files(redis_dir(live_server))
    for raw in ["5555554202", "555) 555-4202", *ids]:
        assert raw.encode() not in files, raw


def test_numbers_are_compared_in_e164() -> None:
    assert e164("33612345678") == e164("+33 6 12 34 56 78") == e164("0033612345678")
    assert e164("+33612345678") == "+33612345678"
    assert e164("anonymous") == "anonymous"
