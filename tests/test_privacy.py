"""The leak scan itself (tests/privacy.py) finds what it looks for, however it is encoded: on a
real redis-server of its own (not one the session's scan watches)."""

from __future__ import annotations

import io
import subprocess
import time
import zipfile
from pathlib import Path

import redis as sync_redis
from redis.asyncio import Redis

from llm.server import free_port
from tests.conftest import LiveServer, redis_command
from tests.helpers import new_tenant
from tests.privacy import Needles, Watch, aof_commands, file_parts, redis_files, redis_values

SECRET = "bmq_0123456789abcdef_" + "S" * 43
NUMBER = "+33612345678"


def test_the_scan_finds_a_secret_in_hex_in_a_zip_and_in_redis_files(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(redis_command(port, tmp_path), stdout=subprocess.DEVNULL)
    client = sync_redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except sync_redis.ConnectionError:
                time.sleep(0.05)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("t.json", f'{{"caller": "{NUMBER}", "words": "quiet harbour lantern"}}')
        client.hset("idem:x", mapping={"body": archive.getvalue().hex()})
        client.set("plain", ("padding " * 20 + SECRET) * 3)  # compressible: LZF in an RDB
        needles = Needles(secrets={SECRET}, numbers={NUMBER}, words={"quiet harbour lantern"})
        found = {f.what for _, _, v in redis_values(client) for f in needles.search("db", v)}
        assert found == {"API key", "phone number", "transcript words"}
        time.sleep(1.1)  # the AOF is written every second at most
        commands, _ = aof_commands(redis_files(tmp_path))
        assert any(c[:2] == [b"HSET", b"idem:x"] for c in commands)
        assert {f.what for f in needles.search_file("aof", redis_files(tmp_path))} == found
        # After a rewrite the values sit LZF-compressed in the RDB preamble: still found.
        client.bgrewriteaof()
        for _ in range(100):
            if not client.info("persistence")["aof_rewrite_in_progress"]:
                break
            time.sleep(0.05)
        base = b"".join(p.read_bytes() for p in tmp_path.rglob("*.base.rdb"))
        assert base and SECRET.encode() not in base  # compressed: a plain search misses it
        assert any(SECRET.encode() in part for part in file_parts(base))
        assert "API key" in {f.what for f in needles.search_file("rdb", base)}
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_a_watch_reports_only_what_is_new(tmp_path: Path) -> None:
    from tests import privacy

    log = tmp_path / "serve.log"
    log.write_text('{"msg": "ok"}\n')
    watch = Watch()
    privacy.LOGS.append(log)
    try:
        assert [f for f in watch.findings() if f.where == f"log {log}"] == []
        with log.open("a") as f:
            f.write(f'{{"msg": "issued {SECRET}"}}\n')
        assert [f.what for f in watch.findings() if f.where == f"log {log}"] == ["API key"]
        assert [f for f in watch.findings() if f.where == f"log {log}"] == []  # reported once
        log.write_text("")  # truncated: nothing new to report
        assert [f for f in watch.findings() if f.where == f"log {log}"] == []
    finally:
        privacy.LOGS.remove(log)


async def test_the_suite_wide_scan_is_wired_to_the_live_platform(
    live_server: LiveServer, live_redis: Redis
) -> None:
    # Positive control of what every test relies on: a key issued through the API is watched
    # for (the httpx hook saw it), and written in clear to the platform's Redis it is found.
    from tests import privacy

    _, key = await new_tenant(live_server, "Canary")
    assert key in privacy.SEEN.secrets
    assert [f for f in privacy.WATCH.findings() if key[:20] in f.sample] == []
    await live_redis.set("canary", key)
    try:
        found = privacy.WATCH.findings()
        assert any(f.what == "API key" and "canary" in f.where for f in found), found
    finally:
        await live_redis.delete("canary")
        privacy.WATCH.findings()  # the planted leak is not the suite's
