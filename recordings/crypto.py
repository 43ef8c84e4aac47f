"""AES-256-GCM primitives: key wrapping and the STREAM construction for segmented objects.

Every object (a recording, a transcript) has its own 256-bit data key. Its content is a header
followed by segments; segment ``i`` is sealed with AES-256-GCM under the data key with the nonce
``prefix (7 bytes) || i (4 bytes, big-endian) || last (1 byte)`` and, as associated data, the
object's identity and the header. This is the STREAM construction (Hoang, Reyhanitabar, Rogaway
and Vizár, "Online authenticated-encryption and its nonce-reuse misuse-resistance", 2015), the
one Tink's streaming AEAD uses: reordering, dropping, duplicating or truncating segments, or
moving a ciphertext to another object, makes decryption fail or reports the truncation. The
byte layout is in ``recordings/FORMAT.md``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"BMQE"
VERSION = 1
KEY_BYTES = 32
TAG_BYTES = 16
_HEADER = struct.Struct(">4sB7s")  # magic, format version, nonce prefix
_LENGTH = struct.Struct(">I")
#: The largest segment accepted when reading (a corrupt length must not allocate gigabytes).
MAX_SEGMENT = 1 << 20
HEADER_BYTES = _HEADER.size


class DecryptionError(Exception):
    """The bytes are not what was sealed: wrong key, wrong object, or altered."""

    code = "decryption_failed"


@dataclass(frozen=True)
class Identity:
    """What an object is; bound into every segment as associated data."""

    tenant: str
    call: str
    kind: str  # "recording" or "transcript"
    version: int = VERSION

    def aad(self) -> bytes:
        """The identity as associated data (fields cannot run into each other)."""
        parts = (self.tenant, self.call, self.kind, str(self.version))
        return b"".join(_LENGTH.pack(len(p.encode())) + p.encode() for p in parts)


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return AESGCM.generate_key(bit_length=256)


def wrap(kek: bytes, key: bytes, context: bytes) -> bytes:
    """``key`` sealed under ``kek`` (nonce || ciphertext || tag), bound to ``context``."""
    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, key, context)


def unwrap(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    """The key sealed by :func:`wrap`; :class:`DecryptionError` if anything differs."""
    try:
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], context)
    except (InvalidTag, ValueError) as e:
        raise DecryptionError("key unwrap failed: wrong key or context, or altered") from e


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class Sealer:
    """Seals one object's segments in order (the writer side of STREAM)."""

    def __init__(self, key: bytes, identity: Identity) -> None:
        """Use the object's data ``key``; ``identity`` is bound to every segment."""
        self._aead = AESGCM(key)
        self._prefix = os.urandom(7)
        self.header = _HEADER.pack(MAGIC, VERSION, self._prefix)
        self._aad = identity.aad() + self.header
        self._index = 0
        self.closed = False

    def seal(self, plaintext: bytes, last: bool = False) -> bytes:
        """The next segment as stored: its length, then ciphertext and tag."""
        if self.closed:
            raise ValueError("the object is finalized")
        if self._index >= 0xFFFFFFFF:
            raise ValueError("too many segments in one object")
        if len(plaintext) + TAG_BYTES > MAX_SEGMENT:
            raise ValueError("segment too large")
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index, last), plaintext, self._aad)
        self._index += 1
        self.closed = last
        return _LENGTH.pack(len(sealed)) + sealed

    @property
    def segments(self) -> int:
        """Segments sealed so far."""
        return self._index


@dataclass(frozen=True)
class Opened:
    """What could be read of an object: the plaintext and whether it was complete."""

    plaintext: bytes
    complete: bool
    segments: int
    reason: str = ""


def open_segments(key: bytes, identity: Identity, data: bytes) -> Iterator[bytes | Opened]:
    """Each segment's plaintext in order, then an :class:`Opened` summary (without plaintext).

    A stream that ends without its last segment, or inside a segment, is reported truncated;
    a segment that does not authenticate (altered, reordered, another object's, wrong key)
    raises :class:`DecryptionError`, as does anything after the last segment.
    """
    if len(data) < HEADER_BYTES:
        yield Opened(b"", False, 0, "no complete header")
        return
    magic, version, prefix = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise DecryptionError("not a Bonmoniq encrypted object of a known version")
    aead = AESGCM(key)
    aad = identity.aad() + data[:HEADER_BYTES]
    pos, index = HEADER_BYTES, 0
    while True:
        if pos == len(data):
            yield Opened(b"", False, index, "ends before its last segment")
            return
        if pos + _LENGTH.size > len(data):
            yield Opened(b"", False, index, "ends inside a segment length")
            return
        (length,) = _LENGTH.unpack_from(data, pos)
        if length < TAG_BYTES or length > MAX_SEGMENT:
            raise DecryptionError(f"segment {index} has an impossible length")
        body = data[pos + _LENGTH.size : pos + _LENGTH.size + length]
        if len(body) < length:
            yield Opened(b"", False, index, "ends inside a segment")
            return
        pos += _LENGTH.size + length
        last = pos == len(data)
        try:
            plain = aead.decrypt(_nonce(prefix, index, last), body, aad)
        except InvalidTag:
            if last:  # maybe a middle segment: the stream was cut right after it
                try:
                    plain = aead.decrypt(_nonce(prefix, index, False), body, aad)
                except InvalidTag as e:
                    raise DecryptionError(f"segment {index} does not authenticate") from e
                yield plain
                yield Opened(b"", False, index + 1, "ends before its last segment")
                return
            raise DecryptionError(f"segment {index} does not authenticate") from None
        yield plain
        index += 1
        if last:
            yield Opened(b"", True, index)
            return


def open_object(key: bytes, identity: Identity, data: bytes) -> Opened:
    """The whole plaintext that authenticates, and whether the object was complete."""
    parts: list[bytes] = []
    for item in open_segments(key, identity, data):
        if isinstance(item, Opened):
            return Opened(b"".join(parts), item.complete, item.segments, item.reason)
        parts.append(item)
    raise AssertionError("unreachable")  # pragma: no cover
