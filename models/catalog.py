"""The declarative model catalogue (``catalog.toml``) as frozen dataclasses."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).with_name("catalog.toml")


class Role(StrEnum):
    """What a model does in the call pipeline."""

    STT = "stt"
    LLM = "llm"
    TTS = "tts"


@dataclass(frozen=True)
class Part:
    """A file inside an installed PyPI package."""

    package: str
    locate: str
    sha256: str


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: shipped by a package, assembled from parts, or fetched by hand."""

    path: str
    sha256: str | None = None
    size: int | None = None
    part: Part | None = None
    assemble: tuple[Part, ...] = ()

    def __post_init__(self) -> None:
        if self.part and self.assemble:
            raise ValueError(f"{self.path}: a file is either shipped or assembled, not both")
        if self.assemble and not self.sha256:
            raise ValueError(f"{self.path}: an assembled file needs the sha256 of the whole")


@dataclass(frozen=True)
class ModelSpec:
    """A model of one profile: its role, where it comes from, its files and licence."""

    profile: str
    role: Role
    name: str
    licence: str
    source: str
    description: str
    files: tuple[ModelFile, ...]
    #: The language a voice (TTS model) speaks; None for the other roles.
    language: str | None = None

    @property
    def packages(self) -> tuple[str, ...]:
        """The PyPI packages that carry this model, if any."""
        names: list[str] = []
        for f in self.files:
            for p in ((f.part,) if f.part else ()) + f.assemble:
                if p.package not in names:
                    names.append(p.package)
        return tuple(names)


def _file(raw: dict[str, Any]) -> ModelFile:
    part = None
    if "package" in raw:
        part = Part(raw["package"], raw["locate"], raw["sha256"])
    return ModelFile(
        path=raw["path"],
        sha256=raw.get("sha256"),
        size=raw.get("size"),
        part=part,
        assemble=tuple(
            Part(p["package"], p["locate"], p["sha256"]) for p in raw.get("assemble", [])
        ),
    )


def load_catalog(path: Path = CATALOG_PATH) -> tuple[ModelSpec, ...]:
    """Read every model of every profile."""
    data = tomllib.loads(path.read_text())
    return tuple(
        ModelSpec(
            profile=m["profile"],
            role=Role(m["role"]),
            name=m["name"],
            licence=m["licence"],
            source=m["source"],
            description=m.get("description", ""),
            files=tuple(_file(f) for f in m["file"]),
            language=m.get("language"),
        )
        for m in data["model"]
    )


def profile_models(profile: str, path: Path = CATALOG_PATH) -> dict[Role, ModelSpec]:
    """The model of each role in ``profile``: for TTS, its first voice (the default)."""
    models: dict[Role, ModelSpec] = {}
    for m in load_catalog(path):
        if m.profile == profile:
            models.setdefault(m.role, m)
    if not models:
        raise ValueError(f"no models in profile {profile!r}")
    return models


def profile_voices(profile: str, path: Path = CATALOG_PATH) -> tuple[ModelSpec, ...]:
    """Every voice (TTS model) of ``profile``, the default first."""
    return tuple(m for m in load_catalog(path) if m.profile == profile and m.role == Role.TTS)
