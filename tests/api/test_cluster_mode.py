"""Cluster mode: `bonmoniq serve` refuses to start without what the processes share; the
retention sweep runs on the holder of its lease only."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.cluster_mode import cluster_problems
from app.serve import sweep_if_holder
from app.settings import Settings
from calls.archive import CallArchive
from cluster.lease import Lease
from recordings.keyring import KeyRing
from recordings.lifecycle import Lifecycle
from recordings.objects import EncryptedObjects
from recordings.storage import LocalStorage
from store import keys
from tests.conftest import MASTER_KEY, REPO

#: Everything a cluster-mode process needs; each case leaves one out. Nothing here is reached:
#: the checks come before anything starts.
CLUSTER = {
    "BONMONIQ_MODE": "cluster",
    "BONMONIQ_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
    "BONMONIQ_STORAGE": "s3",
    "BONMONIQ_LLM_URL": "http://127.0.0.1:9/v1",
    "BONMONIQ_REDIS_URL": "redis://127.0.0.1:9/0",
}


def serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BONMONIQ_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=REPO,
        env={**clean, "BONMONIQ_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        ("BONMONIQ_MASTER_KEY", "the master key must be supplied"),
        ("BONMONIQ_STORAGE", "several processes need shared storage"),
        ("BONMONIQ_LLM_URL", "BONMONIQ_LLM_URL must be set"),
        ("BONMONIQ_REDIS_URL", "BONMONIQ_REDIS_URL or BONMONIQ_REDIS_SENTINELS must be set"),
    ],
)
def test_serve_refuses_without(tmp_path: Path, missing: str, says: str) -> None:
    done = serve(tmp_path, {k: v for k, v in CLUSTER.items() if k != missing})
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bonmoniq: error: cluster mode"), lines[0]
    assert says in lines[0]
    assert not (tmp_path / "var" / "secrets" / "master.key").exists()  # never generated


def test_a_mounted_key_file_and_sentinels_will_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "master.key"
    key.write_bytes(base64.b64encode(MASTER_KEY))
    for name, value in CLUSTER.items():
        if name not in ("BONMONIQ_MASTER_KEY", "BONMONIQ_REDIS_URL"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("BONMONIQ_MASTER_KEY", raising=False)
    monkeypatch.delenv("BONMONIQ_REDIS_URL", raising=False)
    monkeypatch.setenv("BONMONIQ_MASTER_KEY_FILE", str(key))
    monkeypatch.setenv("BONMONIQ_REDIS_SENTINELS", "127.0.0.1:9,127.0.0.1:10")
    assert cluster_problems(Settings()) == []
    monkeypatch.setenv("BONMONIQ_MODE", "development")
    monkeypatch.delenv("BONMONIQ_LLM_URL")
    assert cluster_problems(Settings()) == []


async def test_only_the_lease_holder_sweeps(redis: Redis, tmp_path: Path) -> None:
    def lifecycle() -> Lifecycle:
        objects = EncryptedObjects(redis, KeyRing(redis, MASTER_KEY), LocalStorage(tmp_path))
        return Lifecycle(redis, objects, CallArchive(redis))

    one, other = lifecycle(), lifecycle()
    first, second = Lease(redis, "sweep", 60, "node-a"), Lease(redis, "sweep", 60, "node-b")
    await redis.zadd(keys.retention(), {"expired-call": 1.0})

    done = await sweep_if_holder(one, first, 100.0)
    assert done is not None and done.erased == ["expired-call"]
    assert await sweep_if_holder(other, second, 100.0) is None  # node-a holds the lease
    assert await sweep_if_holder(one, first, 100.0) is not None  # renewed by its holder
    await first.release()
    assert await sweep_if_holder(other, second, 100.0) is not None
    assert await sweep_if_holder(one, first, 100.0) is None
