"""The customer's systems: HTTP tools an agent calls and webhooks the platform sends, signed."""

from integrations.delivery import DeliveryWorker, RetryPolicy
from integrations.egress import Egress
from integrations.endpoints import EVENTS, Endpoint, Endpoints
from integrations.outbox import Delivery, Outbox
from integrations.payload import Payloads
from integrations.sealed import Sealer
from integrations.secrets import ToolSecrets
from integrations.settings import IntegrationSettings
from integrations.summary import Summarizer
from integrations.tools import ToolOutcome, ToolRunner

__all__ = [
    "EVENTS",
    "Delivery",
    "DeliveryWorker",
    "Egress",
    "Endpoint",
    "Endpoints",
    "IntegrationSettings",
    "Outbox",
    "Payloads",
    "RetryPolicy",
    "Sealer",
    "Summarizer",
    "ToolOutcome",
    "ToolRunner",
    "ToolSecrets",
]
