"""Carrier errors; each carries a stable ``code`` the API turns into problem+json."""


class CarrierError(Exception):
    """Base error of the carrier layer."""

    code = "carrier_error"


class SignatureInvalid(CarrierError):
    """A webhook or WebSocket upgrade is not signed by the carrier."""

    code = "signature_invalid"


class WebhookMalformed(CarrierError):
    """A webhook's body lacks a field the protocol requires, or has a bad value."""

    code = "webhook_malformed"


class MediaMalformed(CarrierError):
    """A media-stream message is not valid for the carrier's protocol."""

    code = "media_malformed"


class CarrierUnavailable(CarrierError):
    """The carrier cannot be used: no credentials, or not on the sub-processor register."""

    code = "carrier_unavailable"


class CarrierApiError(CarrierError):
    """The carrier's REST API refused a request or could not be reached."""

    code = "carrier_api_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        """``status`` is the HTTP status, ``None`` when the API could not be reached."""
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        """Unreachable or a server error: another carrier may serve the request."""
        return self.status is None or self.status >= 500
