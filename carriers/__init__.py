"""Carriers: each subpackage implements the contract in :mod:`carriers.base` and exports a kit.

:mod:`carriers.registry` lists the kits and builds the configured ones from settings.
"""

from carriers.base import (
    HANGUP_GRACE_S,
    Carrier,
    InboundCall,
    Kit,
    Paths,
    PublicUrls,
    StatusUpdate,
    StreamStart,
    Verdict,
    carrier_time_limit,
)
from carriers.errors import (
    CarrierApiError,
    CarrierError,
    CarrierUnavailable,
    MediaMalformed,
    SignatureInvalid,
    WebhookMalformed,
)

__all__ = [
    "HANGUP_GRACE_S",
    "Carrier",
    "CarrierApiError",
    "CarrierError",
    "CarrierUnavailable",
    "InboundCall",
    "Kit",
    "MediaMalformed",
    "Paths",
    "PublicUrls",
    "SignatureInvalid",
    "StatusUpdate",
    "StreamStart",
    "Verdict",
    "WebhookMalformed",
    "carrier_time_limit",
]
