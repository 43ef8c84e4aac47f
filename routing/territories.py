"""Territories of EU/EEA member states that have region codes of their own (``territories.toml``).

The numbering plan gives Réunion, Guadeloupe, Åland and others their own region codes (RE, GP,
AX). :func:`member_state` says which member state's rules a region's numbers follow, so that
the residency rule sees a Réunion number as French. Pure: the table is data, read once.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Literal

TABLE_PATH = Path(__file__).with_name("territories.toml")
Status = Literal["eu", "eea", "outside"]
_STATUSES = frozenset({"eu", "eea", "outside"})


@dataclass(frozen=True)
class Territory:
    """A territory with its own region code, its state, and whether EU/EEA law applies there."""

    code: str
    name: str
    state: str
    status: Status
    basis: str
    #: Its ISO 3166-2 codes under ``state`` (none for Greenland and the Faroes).
    subdivisions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"{self.code}: status must be one of {sorted(_STATUSES)}")
        if self.code == self.state or len(self.code) != 2 or len(self.state) != 2:
            raise ValueError(f"{self.code}: a territory and its state are two ISO codes")

    @property
    def inside(self) -> bool:
        """Whether EU or EEA law applies in the territory (it is part of its member state)."""
        return self.status != "outside"


@cache
def territories(path: Path = TABLE_PATH) -> MappingProxyType[str, Territory]:
    """The table of territories, by region code."""
    raw = tomllib.loads(path.read_text())
    table = {}
    for entry in raw["territory"]:
        t = Territory(**(entry | {"subdivisions": tuple(entry.get("subdivisions", ()))}))
        if t.code in table:
            raise ValueError(f"{t.code} is listed twice in {path.name}")
        table[t.code] = t
    return MappingProxyType(table)


def member_state(region: str) -> str:
    """The region whose rules ``region``'s numbers follow (``RE`` -> ``FR``, ``AX`` -> ``FI``).

    Its member state if EU/EEA law applies there, else ``region`` itself (``BL``, ``GL``, ``US``).
    """
    region = region.upper()
    t = territories().get(region)
    return t.state if t is not None and t.inside else region
