"""Errors of tenancy; each carries a stable ``code`` (``api/problems.py`` maps them to HTTP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenancy.limits import Refused


class TenancyError(Exception):
    """Base error of the tenancy package."""

    code = "tenancy_error"


class LastAdminKey(TenancyError):
    """Revoking this key would leave the tenant with no usable admin key."""

    code = "last_admin_key"


class LimitExceeded(TenancyError):
    """A call refused by a tenant limit: HTTP 429 with ``Retry-After``."""

    code = "limit_exceeded"

    def __init__(self, refused: Refused) -> None:
        """Say which limit and when to retry."""
        super().__init__(
            f"outbound limit {refused.limit} reached: retry in {refused.retry_after_s} s"
        )
        self.refused = refused


__all__ = ["LastAdminKey", "LimitExceeded", "TenancyError"]
