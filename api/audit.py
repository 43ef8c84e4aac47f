"""The tenant's append-only audit log: who (key id), what, when, from where, which request.

A Redis stream per tenant: entries are only ever added (XADD); the API offers no way to change
or remove one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from api.auth import Caller
from routing import keys


@dataclass(frozen=True)
class AuditEntry:
    """One audited action."""

    id: str
    at: float
    key_id: str
    action: str
    target: str
    address: str
    request_id: str
    detail: dict[str, Any]


class AuditLog:
    """Append and read a tenant's audit entries."""

    def __init__(self, redis: Redis) -> None:
        """Use ``redis`` (decode_responses=True)."""
        self.redis = redis

    async def append(
        self,
        tenant_id: str,
        *,
        at: float,
        key_id: str,
        action: str,
        target: str,
        address: str,
        request_id: str,
        detail: dict[str, Any] | None = None,
    ) -> str:
        """Add an entry; its stream id."""
        fields = {"at": str(at), "key_id": key_id, "action": action, "target": target,
                  "address": address, "request_id": request_id,
                  "detail": json.dumps(detail or {})}  # fmt: skip
        entry_id = await self.redis.xadd(keys.audit(tenant_id), dict(keys.fields(fields)))
        return str(entry_id)

    async def record(self, caller: Caller, action: str, target: str, **detail: Any) -> str:
        """Add an entry for what ``caller`` just did, now."""
        return await self.append(
            caller.tenant_id, at=time.time(), key_id=caller.key.key_id, action=action,
            target=target, address=caller.address, request_id=caller.request_id, detail=detail,
        )  # fmt: skip

    async def read(self, tenant_id: str, after: str = "-", limit: int = 100) -> list[AuditEntry]:
        """Entries in order, after the stream id ``after`` (exclusive; ``-``: from the start)."""
        start = f"({after}" if after != "-" else "-"
        rows = await self.redis.xrange(keys.audit(tenant_id), min=start, count=limit) or []
        out = []
        for entry_id, raw in rows:
            f = keys.strs(raw or {})
            entry = AuditEntry(
                str(entry_id), float(f["at"]), f["key_id"], f["action"], f["target"],
                f["address"], f["request_id"], json.loads(f["detail"]),
            )  # fmt: skip
            out.append(entry)
        return out
