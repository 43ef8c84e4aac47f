"""Carriers: each subpackage implements the contract in :mod:`carriers.base` and exports a kit.

:mod:`carriers.registry` lists the kits and builds the configured ones from settings.
"""

from carriers.base import (
    HANGUP_GRACE_S,
    AnsweredBy,
    Carrier,
    Detection,
    InboundCall,
    Kit,
    MachineDetection,
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
    "AnsweredBy",
    "Carrier",
    "CarrierApiError",
    "CarrierError",
    "CarrierUnavailable",
    "Detection",
    "InboundCall",
    "Kit",
    "MachineDetection",
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
