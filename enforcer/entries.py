"""A policy section's entries in force (bans, tier assignments), packed: a million bans held as
a dict of Entry tuples took 236 MB of Python objects (a tuple, a key string and an id per ban,
and the dict); packed into a few arrays sorted by key they take about 50 MB. Read as a
Mapping key -> Entry: a lookup is a binary search, an iteration is in key order and builds
each Entry as it goes."""
from __future__ import annotations

from array import array
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _q
from typing import Iterable, Iterator, NamedTuple


class Entry(NamedTuple):
    """A ban or tier assignment in force: the decision that wins for its entity. A tuple, not a
    dict, and the scope and value read from the key: 100,000 with their keys take 24 MB."""
    key: str                    # scope:value, as in the policy's JSON
    id: int
    until: str                  # ISO 8601, UTC
    reason: str
    rule: str
    effect: str | None = None   # assignments: throttle or boost
    tier: str | None = None

    @property
    def scope(self) -> str:     # ip range asn user
        return self.key.partition(":")[0]

    @property
    def value(self) -> str:
        return self.key.partition(":")[2]

    @classmethod
    def of(cls, d: dict) -> Entry:
        """From as_dict()'s form (a stored delta)."""
        return cls(f"{d['scope']}:{d['value']}", d["id"], d["until"], d["reason"], d["rule"], d.get("effect"),
                   d.get("tier"))

    def as_dict(self) -> dict:
        d = {"id": self.id, "scope": self.scope, "value": self.value, "until": self.until,
             "reason": self.reason, "rule": self.rule}
        if self.effect is not None:
            d["effect"], d["tier"] = self.effect, self.tier
        return d

    def as_json(self) -> str:
        """as_dict() as JSON with sorted keys, written directly: a rebuild writes 100,000."""
        common = (f'"id":{self.id},"reason":{_q(self.reason)},"rule":{_q(self.rule)},'
                  f'"scope":{_q(self.scope)}')
        if self.effect is None:
            return f'{{{common},"until":{_q(self.until)},"value":{_q(self.value)}}}'
        tier = "null" if self.tier is None else _q(self.tier)
        return (f'{{"effect":{_q(self.effect)},{common},"tier":{tier},"until":{_q(self.until)},'
                f'"value":{_q(self.value)}}}')


_FIELDS = ("until", "reason", "rule", "effect", "tier")     # Entry's string fields, kept as numbers
COPY_SLICE = 1 << 16     # offsets moved per C call when a version copies a run: ~3 ms with the GIL held


class Entries(Mapping):
    """Keys (UTF-8, sorted by their bytes: DuckDB's and Python's order) end to end in one
    bytes object; per entry its offset, its id, and its string fields as numbers into a table
    of the strings they take (a bulk import's one expiry, a rule's name: kept once)."""

    __slots__ = ("blob", "offsets", "ids", "columns", "strings", "index")

    def __init__(self, blob: bytes = b"", offsets=None, ids=None, columns=None, strings=None, index=None):
        self.blob = blob
        self.offsets = offsets if offsets is not None else array("q", [0])
        self.ids = ids if ids is not None else array("q")
        self.columns = columns if columns is not None else tuple(array("I") for _ in _FIELDS)
        self.strings = strings if strings is not None else [None]     # 0 stands for None
        self.index = index if index is not None else {None: 0}

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def build(cls, entries: Iterable[Entry], ordered: bool = False) -> Entries:
        """From Entry tuples; ``ordered``: they come in key order already (no sort, no list)."""
        b = Builder()
        for e in (entries if ordered else sorted(entries, key=lambda e: e.key.encode())):
            b.add(e.key, e.id, e.until, e.reason, e.rule, e.effect, e.tier)
        return b.done()

    def changed(self, removed: Iterable[str], upserted: Mapping[str, Entry]) -> Entries:
        """A copy without the keys ``removed`` and with ``upserted`` in (new keys or new values):
        the untouched runs between changed keys are copied whole, not entry by entry."""
        new = {k.encode(): e for k, e in upserted.items()}
        b, pos = Builder(self.strings, self.index), 0
        for key in sorted({k.encode() for k in removed} | new.keys()):
            i, there = self._find(key)
            b.copy(self, pos, i)
            pos = i + 1 if there else i         # the old one goes: removed, or replaced below
            if key in new:
                b.add_entry(new[key])
        b.copy(self, pos, len(self))
        return b.done()

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def _key_bytes(self, i: int) -> bytes:
        return self.blob[self.offsets[i]:self.offsets[i + 1]]

    def _find(self, key: bytes) -> tuple[int, bool]:
        """Where ``key`` is or would go, and whether it is there."""
        lo, hi = 0, len(self.ids)
        blob, offs = self.blob, self.offsets
        while lo < hi:
            mid = (lo + hi) // 2
            if blob[offs[mid]:offs[mid + 1]] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo, lo < len(self.ids) and blob[offs[lo]:offs[lo + 1]] == key

    def entry(self, i: int, key: str | None = None) -> Entry:
        s, c = self.strings, self.columns
        return Entry(key if key is not None else self._key_bytes(i).decode(), self.ids[i], s[c[0][i]], s[c[1][i]],
                     s[c[2][i]], s[c[3][i]], s[c[4][i]])

    def __getitem__(self, key: str) -> Entry:
        if not isinstance(key, str):
            raise KeyError(key)
        i, there = self._find(key.encode())
        if not there:
            raise KeyError(key)
        return self.entry(i, key)

    def __contains__(self, key) -> bool:
        return isinstance(key, str) and self._find(key.encode())[1]

    def __iter__(self) -> Iterator[str]:
        blob, offs = self.blob, self.offsets
        for i in range(len(self.ids)):
            yield blob[offs[i]:offs[i + 1]].decode()

    def items(self):
        return _Items(self)

    def values(self):
        return _Values(self)

    def block(self, prefix: str) -> range:
        """The positions of the keys that start with ``prefix`` (one scope: "ip:", "range:"),
        which sort together."""
        p = prefix.encode()
        lo = self._find(p)[0]
        hi = self._find(p[:-1] + bytes([p[-1] + 1]))[0] if p else len(self)
        return range(lo, hi)

    def values_in(self, positions: range) -> Iterator[Entry]:
        for i in positions:
            yield self.entry(i)

    def ended(self, at: str) -> list[str]:
        """The keys whose expiry (an ISO time) is ``at`` or before."""
        gone = {n for n in set(self.columns[0]) if self.strings[n] <= at}
        if not gone:
            return []
        blob, offs = self.blob, self.offsets
        return [blob[offs[i]:offs[i + 1]].decode() for i, n in enumerate(self.columns[0]) if n in gone]

    def untils(self) -> set[str]:
        """The distinct expiries of the entries."""
        return {self.strings[i] for i in set(self.columns[0])}


class _Items:
    def __init__(self, entries: Entries):
        self.e = entries

    def __len__(self) -> int:
        return len(self.e)

    def __iter__(self):
        e = self.e
        for i, key in enumerate(e):
            yield key, e.entry(i, key)


class _Values(_Items):
    def __iter__(self):
        e = self.e
        for i in range(len(e)):
            yield e.entry(i)


class Builder:
    """Entries appended in key order (a query's `order by key`, or a merge)."""

    def __init__(self, strings: list | None = None, index: dict | None = None):
        # the table of strings is shared with the Entries it grows from (only ever appended to)
        self.strings = strings if strings is not None else [None]
        self.index = index if index is not None else {None: 0}
        self.blob = bytearray()
        self.offsets = array("q", [0])
        self.ids = array("q")
        self.columns = tuple(array("I") for _ in _FIELDS)
        self.last, self.numbers = None, ()

    def _n(self, s) -> int:
        n = self.index.get(s)
        if n is None:
            n = self.index[s] = len(self.strings)
            self.strings.append(s)
        return n

    def add(self, key: str, id_: int, until: str, reason: str, rule: str, effect, tier) -> None:
        self.blob += key.encode()
        self.offsets.append(len(self.blob))
        self.ids.append(id_)
        fields = (until, reason, rule, effect, tier)
        if fields != self.last:         # rows in a row often share them all (a bulk import)
            self.last, self.numbers = fields, tuple(map(self._n, fields))
        for column, n in zip(self.columns, self.numbers):
            column.append(n)

    def add_entry(self, e: Entry) -> None:
        self.add(e.key, e.id, e.until, e.reason, e.rule, e.effect, e.tier)

    def copy(self, src: Entries, lo: int, hi: int) -> None:
        """Entries lo..hi of ``src`` (whose string table this one shares), whole."""
        if hi <= lo:
            return
        start, base = src.offsets[lo], len(self.blob)
        self.blob += src.blob[start:src.offsets[hi]]
        if base == start:
            self.offsets.extend(src.offsets[lo + 1:hi + 1])
        else:
            # moved by map() in C, not a generator: a new version copies a million offsets. In
            # slices: one C call holds the GIL throughout, and a million at once held the API's
            # polls for ~80 ms while detection published a version
            shift = (base - start).__add__
            for s in range(lo + 1, hi + 1, COPY_SLICE):
                self.offsets.extend(array("q", map(shift, src.offsets[s:min(s + COPY_SLICE, hi + 1)])))
        self.ids.extend(src.ids[lo:hi])
        for mine, theirs in zip(self.columns, src.columns):
            mine.extend(theirs[lo:hi])

    def done(self) -> Entries:
        strings, index = self.strings, self.index
        if len(strings) > 2 * len(self.ids) + 1024:
            strings, index = self._compact()
        return Entries(bytes(self.blob), self.offsets, self.ids, self.columns, strings, index)

    def _compact(self) -> tuple[list, dict]:
        """A table of only the strings still used: reasons of ended bans go with them."""
        used = sorted(set().union(*(set(c) for c in self.columns)) | {0})
        remap = {old: new for new, old in enumerate(used)}
        self.columns = tuple(array("I", map(remap.__getitem__, c)) for c in self.columns)
        strings = [self.strings[i] for i in used]
        return strings, {s: n for n, s in enumerate(strings)}
