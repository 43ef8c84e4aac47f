"""The tenant's append-only audit log: who (key id), what, when, from where, which request.

A Redis stream per tenant: entries are only ever added (XADD); the API offers no way to change
or remove one. So no entry holds a phone number or an IP address: every E.164 number in a target
or a detail is written as its keyed digest (:func:`recordings.subjects.subject_ref`), the same
digest a data-subject request is audited under, and the caller's address as :func:`address_ref`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from recordings.subjects import subject_ref
from store import keys
from tenancy.tenants import Caller

#: An E.164 number anywhere in a string (``+`` and 7-15 digits, not part of a longer run).
_NUMBER = re.compile(r"(?<![\w+])\+[1-9]\d{6,14}(?!\d)")


def address_ref(key: bytes, tenant: str, address: str) -> str:
    """How the audit log names a client's IP address: a keyed digest, per tenant.

    The same address always gets the same name in a tenant's log, so accesses from one place
    can be told apart from others; only someone holding the master key can test an address
    against it. An empty address (a platform action) stays empty.
    """
    if not address:
        return ""
    try:
        address = ipaddress.ip_address(address).compressed
    except ValueError:
        pass
    mac = hmac.new(key, f"address|{tenant}|{address}".encode(), hashlib.sha256)
    return "ip:" + mac.hexdigest()[:24]


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

    def __init__(self, redis: Redis, subject_key: bytes) -> None:
        """Use ``redis`` (decode_responses=True); digest numbers under ``subject_key``."""
        self.redis = redis
        self._subject_key = subject_key

    def _scrub(self, tenant_id: str, value: Any) -> Any:
        """``value`` with every phone number in it replaced by its keyed digest."""
        if isinstance(value, str):
            return _NUMBER.sub(lambda m: subject_ref(self._subject_key, tenant_id, m[0]), value)
        if isinstance(value, dict):
            return {k: self._scrub(tenant_id, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(tenant_id, v) for v in value]
        return value

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
        """Add an entry, phone numbers and ``address`` digested; its stream id."""
        fields = {
            "at": str(at),
            "key_id": key_id,
            "action": action,
            "target": self._scrub(tenant_id, target),
            "address": address_ref(self._subject_key, tenant_id, address),
            "request_id": request_id,
            "detail": json.dumps(self._scrub(tenant_id, detail or {})),
        }
        entry_id = await self.redis.xadd(keys.audit(tenant_id), dict(keys.fields(fields)))
        return str(entry_id)

    async def record(self, caller: Caller, action: str, target: str, **detail: Any) -> str:
        """Add an entry for what ``caller`` just did, now."""
        return await self.append(
            caller.tenant_id,
            at=time.time(),
            key_id=caller.key.key_id,
            action=action,
            target=target,
            address=caller.address,
            request_id=caller.request_id,
            detail=detail,
        )

    def address_ref(self, tenant_id: str, address: str) -> str:
        """The name ``address`` has in the tenant's audit log."""
        return address_ref(self._subject_key, tenant_id, address)

    async def read(self, tenant_id: str, after: str = "-", limit: int = 100) -> list[AuditEntry]:
        """Entries in order, after the stream id ``after`` (exclusive; ``-``: from the start)."""
        start = f"({after}" if after != "-" else "-"
        rows = await self.redis.xrange(keys.audit(tenant_id), min=start, count=limit) or []
        out = []
        for entry_id, raw in rows:
            f = keys.strs(raw or {})
            entry = AuditEntry(
                str(entry_id),
                float(f["at"]),
                f["key_id"],
                f["action"],
                f["target"],
                f["address"],
                f["request_id"],
                json.loads(f["detail"]),
            )
            out.append(entry)
        return out
