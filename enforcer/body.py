"""GET /v1/policy's body: the policy's JSON, gzipped, written again for a new version only where
the content changed (a version that adds a ban to a million took 1.5 CPU s to write whole).

The bans and the assignments are cut into chunks of about a thousand entries, each deflated on
its own (enforcer/gzbody.py). A chunk begins at its section's first entry and at every key
whose CRC-32 has its low ten bits clear: where the chunks fall depends on the keys alone, so a
body written from the one before is byte for byte the body of the same content written whole,
and a ban added, changed or lifted changes the chunk it falls in (and the one before, when its
key begins a chunk)."""
from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_right
from json.encoder import encode_basestring_ascii as _q
from typing import Iterable, Iterator, NamedTuple
from zlib import crc32

from enforcer.entries import Entries
from enforcer.gzbody import Piece, gzip

ENTRIES = ("assignments", "bans")
BEGINS = 0x3FF          # a key whose CRC-32 has these bits clear begins a chunk: 1,024 entries on average
_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')       # a key that needs JSON escaping


class Chunk:
    """Entries ``count`` from the key ``start``, as `"key":{entry}` members joined by commas (with
    a comma before them unless they begin the section: ``lead``), deflated."""

    __slots__ = ("start", "count", "lead", "piece")

    def __init__(self, start: bytes, count: int, lead: bool, text: bytes):
        self.start, self.count, self.lead, self.piece = start, count, lead, Piece(text)


class Rendered(NamedTuple):
    body: bytes                 # the JSON, gzipped
    digest: str                 # of the content, the head left out
    chunks: dict                # section -> [Chunk]: for the next version's render


def render(head: dict, content: dict) -> tuple[bytes, str]:
    """The body of ``content`` written whole, and its digest."""
    return write(head, content)[:2]


def write(head: dict, content: dict, before: dict | None = None,
          changed: dict[str, Iterable[str]] | None = None) -> Rendered:
    """The JSON of GET /v1/policy: the head's members, then the sections in name order; sorted
    keys, entries as Entry.as_json() writes them. ``before``: the chunks of a version whose
    entries differ from ``content``'s only in the keys ``changed`` (section -> keys); the other
    chunks are taken from it as they are."""
    pieces = [Piece(json.dumps(head)[:-1].encode())]
    chunks: dict[str, list[Chunk]] = {}
    text: list[str] = []
    for section in sorted(content):
        value = content[section]
        if section not in ENTRIES:
            text.append(f',"{section}":{json.dumps(value, sort_keys=True)}')
            continue
        entries = value if isinstance(value, Entries) else Entries.build(value.values())
        old = (before or {}).get(section)
        keys = None if changed is None or section not in changed else {k.encode() for k in changed[section]}
        chunks[section] = _chunks(entries, old, keys) if old is not None and keys is not None else _fresh(
            entries, 0, len(entries))
        text.append(f',"{section}":{{')
        if chunks[section]:
            pieces.append(Piece("".join(text).encode()))
            pieces += [c.piece for c in chunks[section]]
            text = []
        text.append("}")
    pieces.append(Piece(("".join(text) + "}").encode(), last=True))
    digest = _digest(pieces[1:])
    return Rendered(gzip(pieces), digest, chunks)


def _digest(pieces: list[Piece]) -> str:
    """Of the content: the SHA-256 of its pieces' SHA-256s (a chunk kept is not read again)."""
    h = hashlib.sha256()
    for p in pieces:
        h.update(p.digest)
    return h.hexdigest()


def _chunks(entries: Entries, old: list[Chunk], changed: set[bytes]) -> list[Chunk]:
    """The chunks of ``entries``, those of ``old`` kept where no key of ``changed`` falls: in
    a chunk's keys, or on the key that begins the next one (the chunk would then end elsewhere)."""
    starts = [c.start for c in old]
    dirty = set()
    for key in changed:
        j = bisect_right(starts, key) - 1
        dirty.add(max(j, 0))
        if j > 0 and starts[j] == key:
            dirty.add(j - 1)
    out: list[Chunk] = []
    pos = 0
    for j, c in enumerate(old):
        if j in dirty:
            continue
        at, there = entries._find(c.start)
        assert there, c.start               # an unchanged key is still there
        if at > pos:
            out += _fresh(entries, pos, at)
        out.append(c if c.lead == (at > 0) else _fresh(entries, at, at + c.count)[0])
        pos = at + c.count
    if pos < len(entries):
        out += _fresh(entries, pos, len(entries))
    return out


def _fresh(entries: Entries, lo: int, hi: int) -> list[Chunk]:
    return [Chunk(start, count, at > 0, (b"," if at > 0 else b"") + text)
            for at, start, count, text in members(entries, lo, hi)]


def members(entries: Entries, lo: int, hi: int) -> Iterator[tuple[int, bytes, int, bytes]]:
    """The chunks of entries lo..hi (lo begins one): each one's position, first key, number of
    entries and `"key":{entry}` members joined by commas. Written by column, a scope at a time:
    the fields an entry shares with others (reason, rule, expiry) are written once; keys that
    need no escaping are copied as bytes."""
    blob, offs, ids, strings, columns = entries.blob, entries.offsets, entries.ids, entries.strings, entries.columns
    c0, c1, c2, c3, c4 = columns
    fast = hi > lo and not _UNSAFE.search(blob, offs[lo], offs[hi])
    begin, batch = lo, []
    i = lo
    while i < hi:
        scope = blob[offs[i]:offs[i + 1]].partition(b":")[0].decode()
        block = entries.block(scope + ":")
        stop = min(block.stop, hi) if i in block else i + 1     # a key without a scope's colon: alone
        skip = len(scope) + 1
        parts: dict[tuple, tuple[bytes, bytes]] = {}
        for j in range(i, stop):
            key = blob[offs[j]:offs[j + 1]]
            if j > begin and not crc32(key) & BEGINS:
                yield begin, blob[offs[begin]:offs[begin + 1]], j - begin, b",".join(batch)
                begin, batch = j, []
            if not fast:
                e = entries.entry(j)
                batch.append(f"{_q(e.key)}:{e.as_json()}".encode())
                continue
            numbers = (c0[j], c1[j], c2[j], c3[j], c4[j])
            shared = parts.get(numbers)
            if shared is None:
                until, reason, rule, effect, tier = (strings[n] for n in numbers)
                pre = b"" if effect is None else f'"effect":{_q(effect)},'.encode()
                mid = (f',"reason":{_q(reason)},"rule":{_q(rule)},"scope":{_q(scope)},'
                       + ("" if effect is None else f'"tier":{"null" if tier is None else _q(tier)},')
                       + f'"until":{_q(until)},"value":"').encode()
                shared = parts[numbers] = (pre, mid)
            batch.append(b'"%s":{%s"id":%d%s%s"}' % (key, shared[0], ids[j], shared[1], key[skip:]))
        i = stop
    if batch:
        yield begin, blob[offs[begin]:offs[begin + 1]], hi - begin, b",".join(batch)
