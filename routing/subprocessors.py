"""The sub-processor register: which carriers and channels the DPA allows, and since when.

Pure: the register is data (``subprocessors.toml``); whether an entry is in force depends on
``now``, passed in. An entry takes effect ``NOTICE_DAYS`` after its notice date.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routing.errors import RoutingError

REGISTER_PATH = Path(__file__).with_name("subprocessors.toml")
NOTICE_DAYS = 30


class NotOnRegister(RoutingError):
    """A carrier or channel is not on the register in force."""

    code = "subprocessor_not_in_force"


@dataclass(frozen=True)
class Entry:
    """One sub-processor: who, for what, where, under which safeguards, since when."""

    name: str
    service: str
    location: str
    safeguards: str
    channel: str | None = None
    added: dt.date | None = None
    notice: dt.date | None = None
    status: str = "listed"

    def __post_init__(self) -> None:
        for name in ("added", "notice"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, dt.date.fromisoformat(value))
        if self.status not in ("listed", "planned"):
            raise ValueError(f"{self.name}: unknown status {self.status!r}")
        if self.status == "listed" and (self.notice is None or self.added is None):
            raise ValueError(f"{self.name}: a listed entry needs its notice and added dates")

    def effective(self) -> dt.date | None:
        """The first day the entry is in force; ``None`` while planned."""
        if self.status == "planned" or self.notice is None:
            return None
        return self.notice + dt.timedelta(days=NOTICE_DAYS)

    def in_force(self, now: dt.datetime) -> bool:
        """Whether the entry is in force at ``now``."""
        start = self.effective()
        return start is not None and now.date() >= start

    def public(self) -> dict[str, Any]:
        """The entry as published."""
        return {
            "name": self.name,
            "service": self.service,
            "location": self.location,
            "safeguards": self.safeguards,
            "added": self.added.isoformat() if self.added else None,
            "effective": eff.isoformat() if (eff := self.effective()) else None,
        }


@dataclass(frozen=True)
class Register:
    """A version of the register."""

    version: str
    entries: tuple[Entry, ...]

    @classmethod
    def load(cls, path: Path = REGISTER_PATH) -> Register:
        """Read the register file."""
        raw = tomllib.loads(path.read_text())
        return cls(str(raw["version"]), tuple(Entry(**e) for e in raw["entry"]))

    def with_entry(self, entry: Entry, version: str) -> Register:
        """A new version with ``entry`` added (or replacing one of the same name)."""
        kept = tuple(e for e in self.entries if e.name != entry.name)
        return Register(version, (*kept, entry))

    def in_force(self, now: dt.datetime) -> tuple[Entry, ...]:
        """The entries in force at ``now``."""
        return tuple(e for e in self.entries if e.in_force(now))

    def last_updated(self, now: dt.datetime) -> dt.date | None:
        """The date the register in force last changed: the latest effective date."""
        dates = [d for e in self.in_force(now) if (d := e.effective())]
        return max(dates) if dates else None

    def allows(self, channel: str, now: dt.datetime) -> bool:
        """Whether ``channel`` (a carrier or messaging channel) may be used at ``now``."""
        return any(e.channel == channel for e in self.in_force(now))

    def require(self, channel: str, now: dt.datetime) -> Entry:
        """The entry in force for ``channel``; :class:`NotOnRegister` if there is none."""
        for e in self.in_force(now):
            if e.channel == channel:
                return e
        planned = [e for e in self.entries if e.channel == channel]
        why = (
            f"{planned[0].name} is {planned[0].status}"
            + (f", in force from {eff}" if (eff := planned[0].effective()) else "")
            if planned
            else "it is not on the register"
        )
        raise NotOnRegister(f"{channel} may not be used: {why}")

    def published(self, now: dt.datetime) -> dict[str, Any]:
        """The register in force, as ``GET /v1/subprocessors`` returns it."""
        last = self.last_updated(now)
        return {
            "version": self.version,
            "last_updated": last.isoformat() if last else None,
            "subprocessors": [e.public() for e in self.in_force(now)],
        }
