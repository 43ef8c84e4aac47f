"""The one HTTP client every carrier's REST calls go through: errors become CarrierApiError."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from carriers.errors import CarrierApiError

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0


class RestClient:
    """An ``httpx.AsyncClient`` for one carrier account (``transport`` replaced in tests)."""

    def __init__(
        self,
        carrier: str,
        base_url: str,
        auth: httpx.Auth | tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Talk to ``base_url`` with ``auth`` or ``headers``."""
        self.carrier = carrier
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=auth,
            headers=headers,
            timeout=TIMEOUT_S,
            transport=transport,
        )

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send, and return the decoded JSON body (``None`` for an empty one)."""
        try:
            r = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            log.warning(
                "carrier API unreachable",
                extra={"carrier": self.carrier, "path": path, "error": f"{type(e).__name__}: {e}"},
            )
            raise CarrierApiError(f"{self.carrier} API unreachable") from e
        if r.status_code >= 400:
            # The carrier's words go to the log only (its formatter masks phone numbers): they
            # may echo what we sent, and mean nothing to our API's clients.
            log.warning(
                "carrier API refused a request",
                extra={
                    "carrier": self.carrier,
                    "status": r.status_code,
                    "path": path,
                    "body": r.text[:300],
                },
            )
            raise CarrierApiError(f"{self.carrier} API answered {r.status_code}", r.status_code)
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError as e:
            raise CarrierApiError(f"{self.carrier} API answered non-JSON", r.status_code) from e

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
