"""Settings of a process in a cluster: its mode, its name, its heartbeat and its drain."""

from __future__ import annotations

import os
import secrets
import socket
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_node_id() -> str:
    """This host's name, the process id and a random suffix: unique per process start."""
    host = socket.gethostname().split(".")[0] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


class ClusterSettings(BaseSettings):
    """``BONMONIQ_MODE``, ``BONMONIQ_NODE_*``, ``BONMONIQ_DRAIN_GRACE_SECONDS``, commands."""

    model_config = SettingsConfigDict(env_prefix="BONMONIQ_", extra="ignore")

    mode: Literal["development", "cluster"] = Field(
        default="development",
        description="development: one process may create its own master key file, keep "
        "objects on local disk and run its own LLM server. cluster: the master key, S3 "
        "storage, the LLM URL and Redis must all be given (several processes share them).",
    )
    node_id: str = Field(
        default_factory=default_node_id,
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="This process's name in the cluster (a Kubernetes pod's name). "
        "Unset: host-pid-random.",
    )
    node_heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="How often a process renews its lease."
    )
    node_lease_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A process whose lease is this old is lost: a survivor ends its calls "
        "(failed, node_lost) within this plus one heartbeat.",
    )
    drain_grace_seconds: int | None = Field(
        default=None,
        ge=0,
        description="On SIGTERM, how long the process waits for its calls to finish before it "
        "exits. Unset: the longest a call may last, inbound or outbound, plus the 30 s its "
        "closing phrase and hang-up may take.",
    )
    command_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long a live-call command waits for the process holding the call.",
    )
