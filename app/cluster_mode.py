"""What a process in cluster mode (``BONMONIQ_MODE=cluster``) must be given before it starts.

Several processes share one master key, one object store, one LLM server and one Redis:
none of them may be made up by a process for itself. Checked before anything starts.
"""

from __future__ import annotations

from app.errors import PlatformError
from app.settings import Settings


def cluster_problems(settings: Settings) -> list[str]:
    """What ``settings`` lack to run as one process of several; empty in development mode."""
    if settings.cluster.mode != "cluster":
        return []
    problems = []
    if settings.recordings.master_key is None and not settings.master_key_path.is_file():
        problems.append(
            "the master key must be supplied (BONMONIQ_MASTER_KEY, or BONMONIQ_MASTER_KEY_FILE "
            f"naming a mounted secret; {settings.master_key_path} does not exist): a cluster "
            "process never generates one"
        )
    if settings.recordings.storage != "s3":
        problems.append(
            "BONMONIQ_STORAGE must be s3: several processes need shared storage, not local disk"
        )
    if not settings.llm.url:
        problems.append(
            "BONMONIQ_LLM_URL must be set: the processes share one LLM server (vLLM, or "
            "`bonmoniq llm-server` in development)"
        )
    if not settings.store.shared:
        problems.append(
            "BONMONIQ_REDIS_URL or BONMONIQ_REDIS_SENTINELS must be set: the processes share "
            "one Redis, no process starts its own"
        )
    return problems


def check_cluster_mode(settings: Settings) -> None:
    """Refuse to start a cluster-mode process that lacks what the cluster shares.

    Raises:
        PlatformError: one line naming each thing missing.
    """
    problems = cluster_problems(settings)
    if problems:
        raise PlatformError("cluster mode (BONMONIQ_MODE=cluster): " + "; ".join(problems))
