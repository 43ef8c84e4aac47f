"""The carriers the platform knows, and the configured ones' kits.

A carrier is usable only with its full credentials (a partial set is an error); a carrier
without credentials is unavailable. With no carrier configured at all (a fresh machine), a
development account of each carrier is created once (``var/secrets/carriers-dev.json``) so
that ``bonmoniq serve`` and ``bonmoniq call --carrier ...`` agree without
configuration; the REST APIs of Telnyx and Sinch are then expected on the loopback ports where
the simulators play them (each kit's ``DEV_API_PORT``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from carriers.base import Carrier, Kit
from carriers.errors import CarrierUnavailable
from carriers.settings import CarrierSettings
from carriers.sinch.kit import SinchKit
from carriers.telnyx.kit import TelnyxKit
from carriers.twilio.kit import TwilioKit

log = logging.getLogger(__name__)
#: Where the development secrets are kept, under the platform's var directory.
DEV_SECRETS = Path("secrets") / "carriers-dev.json"
K = TypeVar("K", bound=Kit)
S = TypeVar("S")


@dataclass(frozen=True)
class Entry(Generic[K, S]):
    """How one carrier's kit is made: from its settings section, or a development account."""

    carrier: Carrier
    section: Callable[[CarrierSettings], S]
    configured: Callable[[S], K | None]
    dev_secrets: Callable[[], dict[str, str]]
    development: Callable[[Mapping[str, str], S], K]

    def from_settings(self, settings: CarrierSettings) -> K | None:
        """The kit of the configured account, if any."""
        return self.configured(self.section(settings))

    def from_dev(self, dev: Mapping[str, str], settings: CarrierSettings) -> K:
        """The kit of the local development account."""
        return self.development(dev, self.section(settings))


#: Every carrier, in the order their settings are checked.
ENTRIES: tuple[Entry[Any, Any], ...] = (
    Entry(
        Carrier.TWILIO,
        lambda s: s.twilio,
        TwilioKit.configured,
        TwilioKit.dev_secrets,
        TwilioKit.development,
    ),
    Entry(
        Carrier.TELNYX,
        lambda s: s.telnyx,
        TelnyxKit.configured,
        TelnyxKit.dev_secrets,
        TelnyxKit.development,
    ),
    Entry(
        Carrier.SINCH,
        lambda s: s.sinch,
        SinchKit.configured,
        SinchKit.dev_secrets,
        SinchKit.development,
    ),
)


class Carriers(Mapping[Carrier, Kit]):
    """The configured carriers' kits, by carrier (a carrier without a kit is unavailable)."""

    def __init__(self, kits: Iterable[Kit] = (), dev: Mapping[str, Any] | None = None) -> None:
        """``dev``: the development secrets, when the kits are the development accounts."""
        self._kits = {kit.carrier: kit for kit in kits}
        self.dev = dev

    def __getitem__(self, carrier: Carrier) -> Kit:
        return self._kits[carrier]

    def __iter__(self) -> Iterator[Carrier]:
        return iter(self._kits)

    def __len__(self) -> int:
        return len(self._kits)

    def kit(self, carrier: Carrier) -> Kit:
        """The kit of ``carrier``; :class:`CarrierUnavailable` if it is not configured."""
        kit = self._kits.get(carrier)
        if kit is None:
            raise _unavailable(carrier)
        return kit

    def of(self, carrier: Carrier, kind: type[K]) -> K:
        """The kit of ``carrier`` as ``kind``; :class:`CarrierUnavailable` if not configured."""
        kit = self.find(carrier, kind)
        if kit is None:
            raise _unavailable(carrier)
        return kit

    def find(self, carrier: Carrier, kind: type[K]) -> K | None:
        """The kit of ``carrier`` as ``kind``, ``None`` if not configured."""
        kit = self._kits.get(carrier)
        return kit if isinstance(kit, kind) else None


def _unavailable(carrier: Carrier) -> CarrierUnavailable:
    return CarrierUnavailable(
        f"{carrier} is not configured: set its BONMONIQ_{str(carrier).upper()}_* "
        "settings (README, Settings)"
    )


def _dev_secrets(path: Path) -> dict[str, Any]:
    if path.exists():
        return dict(json.loads(path.read_text()))
    dev = {str(entry.carrier): entry.dev_secrets() for entry in ENTRIES}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dev, f)
    log.warning(
        "no carrier credentials configured: created local development accounts",
        extra={"path": str(path)},
    )
    return dev


def load_carriers(settings: CarrierSettings, var_dir: Path) -> Carriers:
    """The kits of the configured carriers (see the module docstring for development)."""
    kits = [kit for entry in ENTRIES if (kit := entry.from_settings(settings)) is not None]
    if kits:
        return Carriers(kits)
    dev = _dev_secrets(var_dir / DEV_SECRETS)
    return Carriers([e.from_dev(dev[str(e.carrier)], settings) for e in ENTRIES], dev)
