"""Where encrypted objects live: a local directory (default) or an S3-compatible object store.

Both take only ciphertext. An object is written by appending sealed segments while it is
captured, then finalized; until then it reads as unfinished, and a crash leaves it unfinished
(the reader then reports the truncation). Local: ``NAME.partial`` appended to with one
``write`` per segment, fsynced and renamed to ``NAME`` on finalize. S3 (objects cannot be
appended to): each segment is the object ``NAME/seg/{index:08d}``; finalize writes
``NAME/final``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from recordings.errors import ObjectMissing


@dataclass(frozen=True)
class Stored:
    """An object's bytes and whether it was finalized."""

    data: bytes
    finalized: bool


class Appender(Protocol):
    """One object being written."""

    async def append(self, data: bytes) -> None:
        """Add bytes at the end (one sealed segment, or the header)."""
        ...

    async def finalize(self) -> None:
        """Make the object complete and durable."""
        ...


class ObjectStorage(Protocol):
    """A backend for encrypted objects, addressed by relative names (``a/b/c.bmqe``)."""

    async def create(self, name: str) -> Appender:
        """Start a new object (fails if it exists)."""
        ...

    async def read(self, name: str) -> Stored:
        """The object's bytes, finalized or not; :class:`ObjectMissing` if absent."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the object, finalized or not (no error if absent)."""
        ...

    async def names(self) -> list[str]:
        """Every object name present (finalized or not)."""
        ...


def _check(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad object name {name!r}")
    return name


class _LocalAppender:
    def __init__(self, partial: Path, final: Path) -> None:
        self.partial, self.final = partial, final
        self.fd: int | None = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600
        )

    async def append(self, data: bytes) -> None:
        if self.fd is None:
            raise ValueError("object already finalized")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    async def finalize(self) -> None:
        if self.fd is None:
            return
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        os.replace(self.partial, self.final)
        dir_fd = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class LocalStorage:
    """Objects as files under ``root`` (``0700`` directories, ``0600`` files)."""

    PARTIAL = ".partial"

    def __init__(self, root: Path) -> None:
        """Store under ``root`` (created if missing)."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, name: str) -> Path:
        return self.root / _check(name)

    async def create(self, name: str) -> Appender:
        """A new ``NAME.partial``."""
        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if final.exists():
            raise FileExistsError(name)
        return _LocalAppender(final.with_name(final.name + self.PARTIAL), final)

    async def read(self, name: str) -> Stored:
        """``NAME`` if finalized, else ``NAME.partial``."""
        final = self._path(name)
        for path, finalized in ((final, True), (final.with_name(final.name + self.PARTIAL), False)):
            try:
                return Stored(path.read_bytes(), finalized)
            except FileNotFoundError:
                continue
        raise ObjectMissing(name)

    async def delete(self, name: str) -> None:
        """Unlink both forms."""
        final = self._path(name)
        for path in (final, final.with_name(final.name + self.PARTIAL)):
            path.unlink(missing_ok=True)

    async def names(self) -> list[str]:
        """Every object under the root."""
        out = set()
        for path in self.root.rglob("*"):
            if path.is_file():
                rel = str(path.relative_to(self.root))
                out.add(rel.removesuffix(self.PARTIAL))
        return sorted(out)


class _S3Appender:
    def __init__(self, storage: S3Storage, name: str) -> None:
        self.storage, self.name, self.index = storage, name, 0

    async def append(self, data: bytes) -> None:
        key = f"{self.name}/seg/{self.index:08d}"
        self.index += 1
        await self.storage._call("put_object", Key=key, Body=data)

    async def finalize(self) -> None:
        await self.storage._call("put_object", Key=f"{self.name}/final", Body=b"")


class S3Storage:
    """Objects in a bucket of an S3-compatible store (MinIO, Ceph RGW, Garage, ...)."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
    ) -> None:
        """Talk to ``endpoint`` (``https://...``) with path-style addressing."""
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    async def _call(self, method: str, **kw: Any) -> Any:
        return await asyncio.to_thread(getattr(self._client, method), Bucket=self.bucket, **kw)

    async def _keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = await self._call("list_objects_v2", Prefix=prefix, **token)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = {"ContinuationToken": page["NextContinuationToken"]}

    async def create(self, name: str) -> Appender:
        """A new object: nothing is written until its first segment."""
        if await self._keys(_check(name) + "/"):
            raise FileExistsError(name)
        return _S3Appender(self, name)

    async def read(self, name: str) -> Stored:
        """The segments in order, and whether ``NAME/final`` exists."""
        found = await self._keys(_check(name) + "/")
        segments = sorted(k for k in found if k.startswith(f"{name}/seg/"))
        if not segments:
            raise ObjectMissing(name)
        parts = []
        for key in segments:
            body = (await self._call("get_object", Key=key))["Body"]
            parts.append(await asyncio.to_thread(body.read))
        return Stored(b"".join(parts), f"{name}/final" in found)

    async def delete(self, name: str) -> None:
        """Delete every key of the object, a thousand a request (S3's DeleteObjects maximum)."""
        found = await self._keys(_check(name) + "/")
        for start in range(0, len(found), 1000):
            batch = [{"Key": k} for k in found[start : start + 1000]]
            result = await self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            if result.get("Errors"):
                raise OSError(f"S3 could not delete {len(result['Errors'])} keys of {name}")

    async def names(self) -> list[str]:
        """Every object in the bucket."""
        return sorted(
            {
                k.rsplit("/", 2)[0] if "/seg/" in k else k.rsplit("/", 1)[0]
                for k in await self._keys("")
            }
        )
