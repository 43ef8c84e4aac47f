"""Carrier accounts from settings; local development accounts when none is configured.

A carrier is usable only with its full credentials (a partial set is an error); a carrier
without credentials is unavailable. With no carrier configured at all (a fresh machine), a
development account of each carrier is created once under ``var/secrets/`` so that
``bonmoniq serve`` and ``bonmoniq call --carrier ...`` agree without configuration; the REST
APIs of Telnyx and Sinch are then expected on loopback ports where the simulator plays them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.settings import Settings
from carriers.base import WebhookVerifier
from carriers.sinch.control import SinchAccount, SinchControl
from carriers.sinch.signature import SinchVerifier
from carriers.telnyx.control import TelnyxAccount, TelnyxControl
from carriers.telnyx.signature import TelnyxVerifier
from carriers.twilio.control import TwilioAccount, TwilioControl
from carriers.twilio.signature import TwilioVerifier
from routing.policy import Carrier, Health
from routing.subprocessors import Register

log = logging.getLogger(__name__)
#: Loopback ports where `bonmoniq call --carrier telnyx|sinch` serves the carrier's REST API
#: in local development.
DEV_TELNYX_API_PORT = 8088
DEV_SINCH_API_PORT = 8089


@dataclass(frozen=True)
class Accounts:
    """The configured carrier accounts (``None``: that carrier is unavailable)."""

    twilio: TwilioAccount | None
    telnyx: TelnyxAccount | None
    sinch: SinchAccount | None
    dev: dict[str, Any] | None = None  # the development secrets, simulator keys included

    def missing(self) -> list[str]:
        """Carriers without an account."""
        return [n for n in ("twilio", "telnyx", "sinch") if getattr(self, n) is None]


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _complete(name: str, fields: dict[str, str | None]) -> bool:
    given = [k for k, v in fields.items() if v]
    if given and len(given) != len(fields):
        missing = [f"BONMONIQ_{k.upper()}" for k, v in fields.items() if not v]
        raise ValueError(f"{name} is partly configured: also set {', '.join(missing)}")
    return bool(given)


def _dev_secrets(path: Path) -> dict[str, Any]:
    if path.exists():
        return dict(json.loads(path.read_text()))
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    private = key.private_bytes_raw()
    dev = {
        "twilio": {
            "account_sid": "AC" + secrets.token_hex(16),
            "auth_token": secrets.token_hex(16),
        },
        "telnyx": {
            "api_key": "KEY" + secrets.token_hex(16),
            "public_key": base64.b64encode(public).decode(),
            "private_key": base64.b64encode(private).decode(),
            "connection_id": secrets.token_hex(8),
        },
        "sinch": {
            "app_key": secrets.token_hex(16),
            "app_secret": base64.b64encode(secrets.token_bytes(16)).decode(),
            "project_id": secrets.token_hex(8),
            "key_id": secrets.token_hex(8),
            "key_secret": secrets.token_hex(16),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dev, f)
    log.warning(
        "no carrier credentials configured: created local development accounts",
        extra={"path": str(path)},
    )
    return dev


def load_accounts(settings: Settings) -> Accounts:
    """The carrier accounts the settings describe (see the module docstring for development)."""
    twilio = {"twilio_account_sid": settings.carriers.twilio.account_sid,
              "twilio_auth_token": _secret(settings.carriers.twilio.auth_token)}  # fmt: skip
    telnyx = {"telnyx_api_key": _secret(settings.carriers.telnyx.api_key),
              "telnyx_public_key": settings.carriers.telnyx.public_key,
              "telnyx_connection_id": settings.carriers.telnyx.connection_id}  # fmt: skip
    sinch = {"sinch_app_key": settings.carriers.sinch.app_key,
             "sinch_app_secret": _secret(settings.carriers.sinch.app_secret),
             "sinch_project_id": settings.carriers.sinch.project_id,
             "sinch_key_id": settings.carriers.sinch.key_id,
             "sinch_key_secret": _secret(settings.carriers.sinch.key_secret)}  # fmt: skip
    given = (("Twilio", twilio), ("Telnyx", telnyx), ("Sinch", sinch))
    has = {name: _complete(name, fields) for name, fields in given}
    if not any(has.values()):
        dev = _dev_secrets(settings.var_dir / "secrets" / "carriers-dev.json")
        t, x, s = dev["twilio"], dev["telnyx"], dev["sinch"]
        return Accounts(
            TwilioAccount(t["account_sid"], t["auth_token"], settings.carriers.twilio.api_base),
            TelnyxAccount(x["api_key"], x["public_key"], x["connection_id"],
                          f"http://127.0.0.1:{DEV_TELNYX_API_PORT}/v2"),
            SinchAccount(s["app_key"], s["app_secret"], s["project_id"], s["key_id"],
                         s["key_secret"], f"http://127.0.0.1:{DEV_SINCH_API_PORT}",
                         f"http://127.0.0.1:{DEV_SINCH_API_PORT}"),
            dev,
        )  # fmt: skip
    return Accounts(
        TwilioAccount(twilio["twilio_account_sid"] or "", twilio["twilio_auth_token"] or "",
                      settings.carriers.twilio.api_base) if has["Twilio"] else None,
        TelnyxAccount(telnyx["telnyx_api_key"] or "", telnyx["telnyx_public_key"] or "",
                      telnyx["telnyx_connection_id"] or "", settings.carriers.telnyx.api_base)
        if has["Telnyx"] else None,
        SinchAccount(sinch["sinch_app_key"] or "", sinch["sinch_app_secret"] or "",
                     sinch["sinch_project_id"] or "", sinch["sinch_key_id"] or "",
                     sinch["sinch_key_secret"] or "", settings.carriers.sinch.voice_base,
                     settings.carriers.sinch.numbers_base) if has["Sinch"] else None,
    )  # fmt: skip


def controls_for(accounts: Accounts) -> dict[Carrier, TwilioControl | TelnyxControl | SinchControl]:
    """A REST client for each configured carrier."""
    out: dict[Carrier, TwilioControl | TelnyxControl | SinchControl] = {}
    if accounts.twilio:
        out[Carrier.TWILIO] = TwilioControl(accounts.twilio)
    if accounts.telnyx:
        out[Carrier.TELNYX] = TelnyxControl(accounts.telnyx)
    if accounts.sinch:
        out[Carrier.SINCH] = SinchControl(accounts.sinch)
    return out


def health_at(
    accounts: Accounts,
    register: Register,
    now: float,
    down_until: dict[Carrier, float] | None = None,
) -> Health:
    """Usable carriers at ``now``: configured, on the sub-processor register in force, not down."""
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    usable = {
        Carrier(name)
        for name in ("twilio", "telnyx", "sinch")
        if getattr(accounts, name) is not None and register.allows(name, at)
    }
    return Health(frozenset(usable), dict(down_until or {}))


def verifiers_for(accounts: Accounts) -> dict[Carrier, WebhookVerifier]:
    """A webhook verifier for each configured carrier."""
    out: dict[Carrier, WebhookVerifier] = {}
    if accounts.twilio:
        out[Carrier.TWILIO] = TwilioVerifier(accounts.twilio.auth_token)
    if accounts.telnyx:
        out[Carrier.TELNYX] = TelnyxVerifier(accounts.telnyx.public_key)
    if accounts.sinch:
        out[Carrier.SINCH] = SinchVerifier(accounts.sinch.app_key, accounts.sinch.app_secret)
    return out
