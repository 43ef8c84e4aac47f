"""Errors of the integrations package, each with a stable ``code``."""

from __future__ import annotations


class IntegrationError(Exception):
    """Base of the package's errors."""

    code = "integration_error"


class EgressRefused(IntegrationError):
    """A customer's URL may not be reached: its scheme, or an address it resolves to."""

    code = "egress_refused"


class EgressFailed(IntegrationError):
    """The customer's system could not be reached or did not answer in time."""

    code = "egress_failed"


class EgressTimeout(EgressFailed):
    """The customer's system did not answer within the timeout."""

    code = "egress_timeout"


class EndpointNotFound(IntegrationError):
    """No such webhook endpoint in the tenant (another tenant's included)."""

    code = "not_found"


class DeliveryNotFound(IntegrationError):
    """No such webhook delivery in the tenant (another tenant's included)."""

    code = "not_found"


class SealedUnreadable(IntegrationError):
    """A sealed value cannot be opened (its tenant's key was destroyed, or it was altered)."""

    code = "sealed_unreadable"


class DeliveryInFlight(IntegrationError):
    """A delivery is being attempted right now: it cannot be replayed until that ends."""

    code = "delivery_in_flight"
