"""Tenants, their API keys and roles, outbound and write limits, and the audit log (no HTTP)."""

from tenancy.audit import AuditLog
from tenancy.errors import LastAdminKey, LimitExceeded, TenancyError
from tenancy.limits import Limits, OutboundLimiter
from tenancy.tenants import ApiKey, Caller, Role, Tenant, TenantStore
from tenancy.write_limits import WriteLimiter

__all__ = [
    "ApiKey",
    "AuditLog",
    "Caller",
    "LastAdminKey",
    "LimitExceeded",
    "Limits",
    "OutboundLimiter",
    "Role",
    "TenancyError",
    "Tenant",
    "TenantStore",
    "WriteLimiter",
]
