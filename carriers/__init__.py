"""Carriers: each subpackage implements the contract in :mod:`carriers.base`."""

from carriers.base import InboundCall, StatusUpdate, StreamStart, Verdict
from carriers.errors import CarrierError, MediaMalformed, SignatureInvalid, WebhookMalformed

__all__ = [
    "CarrierError",
    "InboundCall",
    "MediaMalformed",
    "SignatureInvalid",
    "StatusUpdate",
    "StreamStart",
    "Verdict",
    "WebhookMalformed",
]
