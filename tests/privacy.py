"""Looking for personal data and secrets where they must never be in clear: Redis, its files, logs.

Everything a value could hide under is opened: hex, base64, zlib/gzip streams and zip archives
(an export is a zip), and in Redis's files the append-only log's commands one argument at a time
and the LZF-compressed strings of its RDB preamble, so a secret is found however a layer wrote it.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import re
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as sync_redis

#: API key values, as issued (``bmq_{key_id}_{secret}``).
API_KEY = re.compile(rb"bmq_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
#: An E.164 number (``+`` and 8-15 digits) not inside a longer run of digits or word.
PHONE = re.compile(rb"(?<![\w+])\+[1-9]\d{7,14}(?!\d)")
_HEX = re.compile(rb"^(?:[0-9a-fA-F]{2}){16,}$")
_B64 = re.compile(rb"^[A-Za-z0-9+/_-]{24,}={0,2}$")


def openings(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """``data`` and whatever it decodes to (hex, base64, zlib, gzip, zip members), recursively."""
    yield data
    if depth > 3 or len(data) < 16:
        return
    inner: list[bytes] = []
    stripped = data.strip()
    if _HEX.fullmatch(stripped):
        inner.append(binascii.unhexlify(stripped))
    elif _B64.fullmatch(stripped):
        try:
            inner.append(base64.b64decode(stripped + b"=" * (-len(stripped) % 4), altchars=None))
            inner.append(base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4)))
        except (binascii.Error, ValueError):
            pass
    for opener in (zlib.decompress, gzip.decompress):
        try:
            inner.append(opener(data))
        except (zlib.error, OSError, EOFError):
            pass
    if b"PK\x03\x04" in data:
        start = data.index(b"PK\x03\x04")
        try:
            with zipfile.ZipFile(io.BytesIO(data[start:])) as z:
                inner.extend(z.read(name) for name in z.namelist())
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error):
            pass
    for item in inner:
        yield from openings(item, depth + 1)


def redis_values(client: sync_redis.Redis) -> Iterator[tuple[str, str, bytes]]:
    """Every key of the client's database: (key, field or member, value), raw bytes."""
    for raw_key in client.scan_iter(count=1000):
        key = raw_key.decode(errors="replace")
        kind = client.type(raw_key).decode()
        yield key, "", raw_key
        if kind == "string":
            yield key, "", client.get(raw_key) or b""
        elif kind == "hash":
            for f, v in client.hgetall(raw_key).items():
                yield key, f.decode(errors="replace"), v
        elif kind == "list":
            for v in client.lrange(raw_key, 0, -1):
                yield key, "", v
        elif kind == "set":
            for v in client.smembers(raw_key):
                yield key, "", v
        elif kind == "zset":
            for v, _ in client.zrange(raw_key, 0, -1, withscores=True):
                yield key, "", v
        elif kind == "stream":
            for _, entry in client.xrange(raw_key):
                for f, v in entry.items():
                    yield key, f.decode(errors="replace"), v


def redis_files(directory: Path) -> bytes:
    """Redis's files on disk (the append-only file's parts, any RDB) as one blob."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


_BULK = re.compile(rb"\$(\d+)\r\n")


def file_parts(blob: bytes) -> Iterator[bytes]:
    """A Redis file as searchable pieces: itself, each RESP argument, each LZF string decoded."""
    yield blob
    for m in _BULK.finditer(blob):
        start = m.end()
        yield blob[start : start + int(m[1])]
    i = blob.find(b"\xc3")
    while i != -1:
        text = _lzf_at(blob, i + 1)
        if text:
            yield text
        i = blob.find(b"\xc3", i + 1)


def _rdb_length(blob: bytes, i: int) -> tuple[int, int]:
    """An RDB length at ``i``: (value, index after it); (-1, i) if it is not a plain length."""
    if i >= len(blob):
        return -1, i
    kind = blob[i] >> 6
    if kind == 0:
        return blob[i] & 0x3F, i + 1
    if kind == 1 and i + 1 < len(blob):
        return ((blob[i] & 0x3F) << 8) | blob[i + 1], i + 2
    if blob[i] == 0x80 and i + 4 < len(blob):
        return int.from_bytes(blob[i + 1 : i + 5], "big"), i + 5
    return -1, i


def _lzf_at(blob: bytes, i: int) -> bytes | None:
    """The LZF-compressed RDB string whose lengths start at ``i``, decoded (``None``: none)."""
    packed, i = _rdb_length(blob, i)
    size, i = _rdb_length(blob, i)
    if packed <= 0 or size <= 0 or size > 64 << 20 or i + packed > len(blob):
        return None
    try:
        return lzf_decompress(blob[i : i + packed], size)
    except (IndexError, ValueError):
        return None


def lzf_decompress(data: bytes, size: int) -> bytes:
    """LibLZF's format, as Redis writes strings in RDB files; :class:`ValueError` if not LZF."""
    out = bytearray()
    i = 0
    while i < len(data):
        ctrl = data[i]
        i += 1
        if ctrl < 32:
            out += data[i : i + ctrl + 1]
            i += ctrl + 1
            continue
        length = ctrl >> 5
        if length == 7:
            length += data[i]
            i += 1
        ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
        i += 1
        if ref < 0:
            raise ValueError("not LZF")
        for _ in range(length + 2):
            out.append(out[ref])
            ref += 1
        if len(out) > size:
            raise ValueError("not LZF")
    if len(out) != size:
        raise ValueError("not LZF")
    return bytes(out)


@dataclass
class Finding:
    """One thing found where it must not be."""

    where: str
    what: str
    sample: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what} ({self.sample})"


@dataclass
class Needles:
    """What to look for: exact values the tests used, and patterns of their kind."""

    secrets: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)
    words: set[str] = field(default_factory=set)

    def search(self, where: str, data: bytes, numbers: bool = True) -> list[Finding]:
        """What of these (and of :data:`API_KEY`, :data:`PHONE`) ``data`` holds in clear."""
        found: list[Finding] = []
        for blob in openings(data):
            found += self._search(where, blob, numbers)
        return _unique(found)

    def search_file(self, where: str, blob: bytes, numbers: bool = True) -> list[Finding]:
        """Like :meth:`search`, for a Redis file (:func:`file_parts`) or a log."""
        found: list[Finding] = []
        for part in file_parts(blob):
            found += self.search(where, part, numbers)
        return _unique(found)

    def _search(self, where: str, blob: bytes, numbers: bool) -> list[Finding]:
        found = [Finding(where, "API key", m.decode()[:20] + "…") for m in API_KEY.findall(blob)]
        found += [
            Finding(where, "API key", s[:20] + "…") for s in self.secrets if s.encode() in blob
        ]
        found += [Finding(where, "transcript words", w) for w in self.words if w.encode() in blob]
        if numbers:
            found += [Finding(where, "phone number", m.decode()) for m in PHONE.findall(blob)]
            found += [Finding(where, "phone number", n) for n in self.numbers if n.encode() in blob]
        return found


def _unique(found: Iterable[Finding]) -> list[Finding]:
    seen: dict[tuple[str, str, str], Finding] = {}
    for f in found:
        seen.setdefault((f.where, f.what, f.sample), f)
    return list(seen.values())


def numbers_in(value: Any) -> set[str]:
    """The E.164 numbers in a request's JSON body or path (for :class:`Needles`)."""
    text = value if isinstance(value, bytes) else str(value).encode()
    return {m.decode() for m in PHONE.findall(text)}


# What the whole test session used and wrote: filled by tests/conftest.py, checked after each test.
SEEN = Needles()
#: Redis data directories, Redis URLs (each database is scanned) and platform logs of the session.
REDIS_DIRS: list[Path] = []
REDIS_URLS: list[str] = []
LOGS: list[Path] = []
#: Where a phone number may be in clear in Redis: the number directory, which holds the tenants'
#: own numbers (``number:{e164}``, ``numbers:{tenant}``; routing looks a call up by the called
#: number) and an agent's configuration (its transfer number). Only numbers the directory names
#: (:data:`OWN`) are allowed in the directory's keys. Everywhere else, a call's record and events
#: included (its parties are sealed, matched by digest), a number in clear is a leak.
DIRECTORY_KEYS = re.compile(r"^(number:\+?\d+|numbers:[^:]+)$")
CONFIG_KEYS = re.compile(r"^agent:[^:]+:[^:]+$")
_DIRECTORY_NUMBER = re.compile(r"^number:(\+?\d+)$")
#: The tenants' own numbers, as the directory of the session's Redis named them.
OWN: set[str] = set()
#: The key prefixes the session's platforms were started with (``BONMONIQ_REDIS_KEY_PREFIX``).
KEY_PREFIXES: set[str] = {""}


def _unprefixed(key: str) -> str:
    """``key`` without the longest of :data:`KEY_PREFIXES` it starts with."""
    return key.removeprefix(max((p for p in KEY_PREFIXES if key.startswith(p)), key=len))


def note_directory(key: str, members: Iterable[bytes] = ()) -> None:
    """Remember the numbers a directory key names (its own name, or a tenant's set's members)."""
    key = _unprefixed(key)
    if m := _DIRECTORY_NUMBER.match(key):
        OWN.add(m[1])
    elif key.startswith("numbers:"):
        OWN.update(v.decode("latin-1") for v in members)


def _numbers_allowed(key: str, found: list[Finding]) -> list[Finding]:
    """``found`` in ``key``, less what the key may hold in clear."""
    key = _unprefixed(key)
    if CONFIG_KEYS.match(key):
        return [f for f in found if f.what != "phone number"]
    if DIRECTORY_KEYS.match(key):
        return [f for f in found if f.what != "phone number" or f.sample not in OWN]
    return found


_COMMAND = re.compile(rb"\*(\d+)\r\n")


def aof_commands(blob: bytes) -> tuple[list[list[bytes]], int]:
    """The RESP commands of an append-only file part, and where the last complete one ends."""
    out: list[list[bytes]] = []
    i = end = 0
    while (m := _COMMAND.search(blob, i)) is not None:
        args: list[bytes] = []
        j = m.end()
        for _ in range(int(m[1])):
            b = _BULK.match(blob, j)
            if b is None:
                break
            args.append(blob[b.end() : b.end() + int(b[1])])
            j = b.end() + int(b[1]) + 2
        if len(args) != int(m[1]) or j > len(blob):
            i = m.start() + 1
            if j > len(blob):
                break
            continue
        out.append(args)
        i = end = j
    return out, end


class Watch:
    """Scans what the session wrote since the last scan: Redis's files, its databases, logs."""

    def __init__(self) -> None:
        self.offsets: dict[Path, int] = {}

    def _new_bytes(self, path: Path) -> tuple[bytes, int]:
        try:
            size = path.stat().st_size
            start = self.offsets.get(path, 0)
            start = 0 if size < start else start
            with path.open("rb") as f:
                f.seek(start)
                return f.read(size - start), start
        except OSError:
            return b"", 0

    def findings(self) -> list[Finding]:
        """What the session has put where it must not be, since the last call."""
        found: list[Finding] = []
        for directory in REDIS_DIRS:
            for path in sorted(p for p in directory.rglob("*") if p.is_file()):
                data, start = self._new_bytes(path)
                if path.suffix == ".aof" or path.name.endswith(".aof"):
                    commands, end = aof_commands(data)
                    for args in commands:
                        key = args[1].decode("latin-1") if len(args) > 1 else ""
                        note_directory(key, args[2:] if args[0].upper() == b"SADD" else ())
                    for args in commands:
                        key = args[1].decode("latin-1") if len(args) > 1 else ""
                        for arg in args:
                            hits = SEEN.search(f"AOF {path.name}", arg)
                            found += _numbers_allowed(key, hits)
                    self.offsets[path] = start + end
                else:  # an RDB (or RDB preamble): its strings cannot be told apart by key
                    found += SEEN.search_file(f"RDB {path.name}", data, numbers=False)
                    self.offsets[path] = start + len(data)
        for log in LOGS:
            data, start = self._new_bytes(log)
            found += SEEN.search(f"log {log}", data)
            self.offsets[log] = start + len(data)
        for url in REDIS_URLS:
            found += self._keyspace(url)
        return _unique(found)

    def _keyspace(self, url: str) -> list[Finding]:
        found: list[Finding] = []
        for db in (0, 1):
            client = sync_redis.Redis.from_url(url.rsplit("/", 1)[0] + f"/{db}")
            try:
                values = list(redis_values(client))
                for key, _, value in values:
                    note_directory(key, [value] if _unprefixed(key).startswith("numbers:") else ())
                for key, fld, value in values:
                    hits = SEEN.search(f"redis db{db} {key} {fld}", value)
                    found += _numbers_allowed(key, hits)
            except sync_redis.RedisError:
                pass  # that Redis is gone (a test's own, stopped): its files were scanned
            finally:
                client.close()
        return found


WATCH = Watch()


def _before(request: httpx.Request) -> None:
    """Every POST to the customer API carries a fresh Idempotency-Key; note what it sends."""
    if request.method == "POST" and request.url.path.startswith("/v1/"):
        request.headers.setdefault("Idempotency-Key", "suite-" + uuid.uuid4().hex)
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    if len(token) >= 16:
        SEEN.secrets.add(token)
    SEEN.numbers.update(numbers_in(request.url.path))
    try:
        SEEN.numbers.update(numbers_in(request.content))
    except httpx.RequestNotRead:  # a streamed body: nothing of it is a test's own value
        pass


def _after(response: httpx.Response) -> None:
    """Note the API keys a response issued."""
    try:
        content = response.content
    except httpx.ResponseNotRead:
        return
    SEEN.secrets.update(m.decode() for m in API_KEY.findall(content))


def install_httpx_hook() -> None:
    """Route every httpx request of the session through :func:`_before` and :func:`_after`."""
    if getattr(httpx.AsyncClient.send, "_privacy_hook", False):
        return
    async_send, sync_send = httpx.AsyncClient.send, httpx.Client.send

    async def send_async(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        _before(request)
        response = await async_send(self, request, **kw)
        _after(response)
        return response

    def send_sync(self: httpx.Client, request: httpx.Request, **kw: Any) -> Any:
        _before(request)
        response = sync_send(self, request, **kw)
        _after(response)
        return response

    send_async._privacy_hook = True  # type: ignore[attr-defined]
    httpx.AsyncClient.send = send_async  # type: ignore[method-assign]
    httpx.Client.send = send_sync  # type: ignore[method-assign]
