"""Packed policy entries (enforcer/entries.py) read exactly as the dict of Entry tuples they
replace, through every change a publish makes; and a million of them fit in a fraction of it."""
from __future__ import annotations

import random

from enforcer import entries
from enforcer.entries import Entries, Entry
from tests.enforcer_helpers import import_bans


def entry(key: str, n: int, until: str = "2026-11-28T12:00:00", rule: str = "bench") -> Entry:
    effect, tier = ("throttle", "heavy") if n % 7 == 0 else (None, None)
    return Entry(key, n, until, f"reason {n % 5}", rule, effect, tier)


def test_a_packed_section_reads_as_the_dict_through_every_change():
    reads_as_the_dict_through_every_change()


def test_runs_copied_in_many_slices_read_as_the_dict(monkeypatch):
    # a version moves a run's offsets COPY_SLICE at a time (65,536: the GIL is let go between
    # slices); slices of 5 put every boundary case into a small section
    monkeypatch.setattr(entries, "COPY_SLICE", 5)
    reads_as_the_dict_through_every_change()


def reads_as_the_dict_through_every_change():
    rng = random.Random(7)
    keys = ([f"ip:10.0.{a}.{b}" for a in range(20) for b in range(0, 250, 3)] + [f"range:10.{a}.0.0/16" for a in range(40)]
            + ["asn:64500", "user:ci-bot", "user:\u00e9lodie", 'user:quo"te', "ip:2001:db8::1"])
    model = {k: entry(k, n) for n, k in enumerate(keys)}
    packed = Entries.build(model.values())
    for step in range(60):
        live = list(model)
        removed = rng.sample(live, rng.randint(0, 30))
        upserted = {k: entry(k, 10_000 + step * 100 + i, until=f"2026-11-{28 + step % 2}T{step % 24:02d}:00:00",
                             rule=rng.choice(["a", "b"]))
                    for i, k in enumerate(rng.sample(live, 10) + [f"ip:192.0.2.{step}-{j}" for j in range(rng.randint(0, 5))])}
        for k in removed:
            model.pop(k, None)
        model.update(upserted)
        packed = packed.changed(removed, upserted)
        assert len(packed) == len(model)
        assert list(packed) == sorted(model, key=str.encode)                  # in key order
        assert dict(packed.items()) == model
        assert [e.key for e in packed.values()] == list(packed)
    probe = rng.sample(list(model), 20) + ["ip:203.0.113.1", "zzz", "", "ip:"]
    for k in probe:
        assert (k in packed) == (k in model) and packed.get(k) == model.get(k)
    assert {e.key for e in packed.values_in(packed.block("range:"))} == {k for k in model if k.startswith("range:")}
    at = "2026-11-28T12:00:00"
    assert sorted(packed.ended(at)) == sorted(k for k, e in model.items() if e.until <= at)
    assert packed.untils() == {e.until for e in model.values()}


def test_strings_of_entries_that_are_gone_are_let_go():
    packed = Entries.build(entry(f"ip:10.0.0.{n}", n) for n in range(10))
    for step in range(3000):        # a new reason every time, as a rule's reasons with numbers are
        packed = packed.changed([], {"ip:10.0.0.1": Entry("ip:10.0.0.1", step, "2026-11-28T12:00:00",
                                                          f"{step} requests", "r")})
    assert len(packed.strings) < 2 * len(packed) + 1100 and packed["ip:10.0.0.1"].reason == "2999 requests"
    assert packed["ip:10.0.0.9"] == entry("ip:10.0.0.9", 9)


def test_a_published_policy_of_100k_bans_holds_under_a_third_of_the_dict(tmp_path):
    """The policy serve holds in memory, measured: 100,000 bans as a dict of Entry tuples were
    24 MB of Python objects (236 bytes a ban); packed, with the gzipped body, under 8 MB."""
    import threading
    import tracemalloc
    from datetime import datetime

    from core.store import open_store
    from enforcer.snapshot import Publisher
    now = datetime(2026, 11, 27, 12, 0, 0)
    store = open_store(str(tmp_path / "db.duckdb"))
    import_bans(store, 100000, now)
    publisher = Publisher(store, threading.RLock(), lambda: now, 30)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        version = publisher.publish()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(version.content["bans"]) == 100_000 and version.content["bans"]["ip:10.1.2.3"].id == 66052
    assert held < 8 << 20, held
    store.close()


def test_packed_entries_render_the_same_policy_bytes_as_the_dict():
    """GET /v1/policy's body and its digest, written from packed entries by column, are the
    bytes the dict of Entry tuples gives: bans and assignments, shared and odd fields."""
    from enforcer.snapshot import render
    bans = {k: entry(k, n, until=f"2026-11-28T{n % 24:02d}:00:00", rule=("a", "b", "manual")[n % 3])
            for n, k in enumerate([f"ip:10.0.{n >> 8}.{n & 255}" for n in range(2500)]
                                  + [f"range:10.{n}.0.0/16" for n in range(30)] + ["asn:64500", "user:ci-bot"])}
    assignments = {k: Entry(k, n, "2026-11-28T00:00:00", f"{n} req", "r", ("throttle", "boost")[n % 2],
                            None if n % 5 == 0 else "heavy")
                   for n, k in enumerate([f"ip:192.0.2.{n}" for n in range(200)] + ["user:\u00e9lodie", 'user:q"t'])}
    small = {"tiers": {"heavy": {"requests_per_minute": 120}}, "allowlist": [], "images": {}}
    head = {"version": 7, "generated_at": "2026-11-27T12:00:00", "max_age": 30}
    as_dicts = render(head, {**small, "bans": bans, "assignments": assignments})
    packed = render(head, {**small, "bans": Entries.build(bans.values()),
                           "assignments": Entries.build(assignments.values())})
    assert packed == as_dicts
