"""A gzip member assembled from pieces deflated one at a time, so that a body of which a little
changed is deflated again only where it changed (GET /v1/policy's: at 1 M bans the whole body
was 1.5 CPU s of zlib, while a new version usually differs by a few bans).

Each piece is raw deflate ended by a sync flush (whole bytes, no final block): pieces deflated
apart can stand one after another in one stream, as pigz writes them; the last one is finished.
The gzip trailer's CRC-32 of the whole is combined from the pieces' own (zlib's crc32_combine),
so no piece is inflated or read again."""
from __future__ import annotations

import hashlib
import struct
import zlib

LEVEL = 6
# gzip header as zlib writes it at this level: no name, no time, XFL 0, OS 3 (Unix)
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
_POLY = 0xEDB88320        # CRC-32, reflected


class Piece:
    """A text deflated: its raw deflate bytes, and what the whole's CRC-32 and digest need."""

    __slots__ = ("data", "crc", "size", "shift", "digest")

    def __init__(self, text: bytes, last: bool = False):
        c = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        self.data = c.compress(text) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
        self.crc = zlib.crc32(text)
        self.size = len(text)
        self.shift = _x8n(len(text))        # x^(8 * size) mod P: moves a CRC past this text
        self.digest = hashlib.sha256(text).digest()


def gzip(pieces: list[Piece]) -> bytes:
    """The gzip member of the pieces' texts one after another (the last one finished). Each
    piece's data is then a view into it: the pieces kept for the next body hold no copy."""
    crc, size = 0, 0
    for p in pieces:
        crc = _mult(p.shift, crc) ^ p.crc
        size += p.size
    body = b"".join([HEADER, *(p.data for p in pieces), struct.pack("<II", crc, size & 0xFFFFFFFF)])
    view, at = memoryview(body), len(HEADER)
    for p in pieces:
        n = len(p.data)
        p.data, at = view[at:at + n], at + n
    return body


def _mult(a: int, b: int) -> int:
    """a * b modulo the CRC-32 polynomial (zlib's multmodp); ``a`` is never 0 here."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_X2N = [1 << 30]            # x^(2^n) mod P (zlib's x2n_table)
for _ in range(31):
    _X2N.append(_mult(_X2N[-1], _X2N[-1]))


def _x8n(n: int) -> int:
    """x^(8n) mod P (zlib's x2nmodp(n, 3))."""
    p, k = 1 << 31, 3
    while n:
        if n & 1:
            p = _mult(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p
