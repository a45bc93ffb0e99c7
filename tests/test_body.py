"""GET /v1/policy's body written again only where the content changed (enforcer/body.py): byte
for byte the body of the same content written whole, its JSON the text the one-by-one writer
gave, one gzip member that gzip itself reads, and a change deflates only the chunks it touches."""
from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
import threading
import zlib
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii as _q

import pytest

from enforcer import body as body_mod
from enforcer.body import render, write
from enforcer.entries import Entries, Entry
from tests.enforcer_helpers import import_bans

HEAD = {"version": 7, "generated_at": "2026-11-27T12:00:00", "max_age": 30}
SMALL = {"tiers": {"heavy": {"requests_per_minute": 120}}, "allowlist": ["203.0.113.9"],
         "images": {"allowed": [], "blocked": ["docker.io/x/*"], "unlimited": []}}


def reference(head: dict, content: dict) -> bytes:
    """The policy's JSON as the writer before chunks wrote it: the head's members, the sections
    in name order, each entry as Entry.as_json() in key order, one at a time."""
    out = [json.dumps(head)[:-1]]
    for section in sorted(content):
        value = content[section]
        if section not in ("bans", "assignments"):
            out.append(f',"{section}":{json.dumps(value, sort_keys=True)}')
            continue
        pairs = sorted(value.items(), key=lambda kv: kv[0].encode())
        out.append(f',"{section}":{{' + ",".join(f"{_q(k)}:{e.as_json()}" for k, e in pairs) + "}")
    return ("".join(out) + "}").encode()


def entry(key: str, n: int, rng: random.Random) -> Entry:
    if key.startswith("ip:192.0.2.") or n % 11 == 0:
        return Entry(key, n, f"2026-11-28T{n % 24:02d}:00:00", f"{n % 3} requests", rng.choice(["r", "manual"]),
                     rng.choice(["throttle", "boost"]), rng.choice([None, "heavy"]))
    return Entry(key, n, f"2026-11-28T{n % 3:02d}:00:00", "bench import", rng.choice(["bench", "cdn"]))


def keys(rng: random.Random, n: int) -> list[str]:
    odd = ["asn:64500", "user:ci-bot", "user:\u00e9lodie", 'user:quo"te', "noscope", "ip:2001:db8::1"]
    return ([f"ip:10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in rng.sample(range(1 << 20), n)]
            + [f"range:10.{i}.0.0/16" for i in range(20)] + odd)


@pytest.mark.parametrize("begins", [0x3FF, 0x7])      # chunks of ~1,024 entries, and of ~8
def test_a_body_written_from_the_one_before_is_the_body_written_whole(monkeypatch, begins):
    monkeypatch.setattr(body_mod, "BEGINS", begins)
    rng = random.Random(begins)
    model = {"bans": {}, "assignments": {}}
    for n, k in enumerate(keys(rng, 6000)):
        model["bans" if n % 5 else "assignments"][k] = entry(k, n, rng)
    content = {**SMALL, **{s: Entries.build(m.values()) for s, m in model.items()}}
    before = write(HEAD, content)
    assert gzip.decompress(before.body) == reference(HEAD, model | SMALL)
    for step in range(40):
        changed = {}
        for s, m in model.items():
            live = list(m)
            kind = step % 4
            removed = rng.sample(live, min(len(live), rng.randint(0, 12)))
            if kind == 1:               # the first chunks whole: the next one begins the section (no comma)
                chunks = before.chunks[s]
                end = chunks[min(rng.randint(1, 3), len(chunks) - 1)].start if len(chunks) > 1 else b"~"
                removed = [k for k in live if k.encode() < end]
            elif kind == 2:             # keys that begin chunks: the chunk before ends elsewhere
                removed = [k for k in live if not zlib.crc32(k.encode()) & begins][:3]
            upserted = {k: entry(k, 100_000 + step * 100 + i, rng)
                        for i, k in enumerate(rng.sample(live, min(len(live), 5))
                                          + [f"ip:9.{step}.{i}.1" for i in range(rng.randint(0, 20))]
                                          + ([f"ip:0.0.0.{step}"] if kind == 3 else []))}
            if step == 30:              # a section emptied, then filled again
                removed, upserted = live, {}
            for k in removed:
                m.pop(k, None)
            m.update(upserted)
            content[s] = content[s].changed(removed, upserted)
            changed[s] = set(removed) | set(upserted)
        head = {**HEAD, "version": HEAD["version"] + step + 1}
        after = write(head, content, before.chunks, changed)
        whole = write(head, content)
        assert after.body == whole.body and after.digest == whole.digest
        assert gzip.decompress(after.body) == reference(head, model | SMALL)
        # only chunks a change fell in (or next to) were deflated again
        kept = {id(c) for cs in before.chunks.values() for c in cs}
        new = sum(id(c) not in kept for cs in after.chunks.values() for c in cs)
        assert new <= 2 * sum(map(len, changed.values())) + 4
        if step < 30:
            assert new < sum(map(len, after.chunks.values())) or begins == 0x3FF
        before = after


def test_the_body_is_one_gzip_member_that_gzip_reads(tmp_path):
    rng = random.Random(3)
    bans = {k: entry(k, n, rng) for n, k in enumerate(keys(rng, 5000))}
    content = {**SMALL, "bans": Entries.build(bans.values()), "assignments": {}}
    out = write(HEAD, content)
    d = zlib.decompressobj(31)
    assert d.decompress(out.body) == reference(HEAD, content | {"bans": bans}) and d.eof and not d.unused_data
    path = tmp_path / "policy.json.gz"
    path.write_bytes(out.body)
    if shutil.which("gzip"):
        subprocess.run(["gzip", "-t", str(path)], check=True)        # CRC-32 and length checked
        assert subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout == \
            gzip.decompress(out.body)
    # the same dict or packed: the same bytes
    assert render(HEAD, {**content, "bans": bans}) == out[:2]


def test_a_published_ban_deflates_a_chunk_not_the_policy(tmp_path):
    """Through the publisher at 50,000 bans: a new ban's version is the whole body's bytes, and
    takes its chunks from the version before but one or two."""
    from core.store import open_store
    from enforcer.snapshot import Publisher
    now = datetime(2026, 11, 27, 12, 0, 0)
    store = open_store(str(tmp_path / "db.duckdb"))
    import_bans(store, 50000, now)
    publisher = Publisher(store, threading.RLock(), lambda: now, 30)
    first = publisher.publish()
    chunks = {id(c) for c in first.chunks["bans"]}
    assert len(chunks) > 20
    store.execute("""insert into decisions (seq, scope, value, effect, rule, origin, reason, created_at, until)
                     values (nextval('decision_seq'), 'ip', '10.0.100.7x', 'ban', 'r', 'rule', 'why', ?, ?)""",
                  [now, now + timedelta(hours=1)])
    second = publisher.publish()
    assert second.version == first.version + 1 and "ip:10.0.100.7x" in second.content["bans"]
    assert sum(id(c) not in chunks for c in second.chunks["bans"]) <= 2
    head = {"version": second.version, "generated_at": now.isoformat(), "max_age": 30}
    assert second.body == render(head, second.content)[0]
    body = json.loads(gzip.decompress(second.body))
    assert len(body["bans"]) == 50_001 and body["bans"]["ip:10.0.100.7x"]["reason"] == "why"
    # more lifted than one stored delta holds (DELTA_STEP): recorded as several versions, and
    # the published one's body is still the whole content's
    store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id % 7 = 0", [now])
    third = publisher.publish()
    assert third.version > second.version + 1 and len(third.content["bans"]) == 50_001 - 50_001 // 7
    head = {"version": third.version, "generated_at": now.isoformat(), "max_age": 30}
    assert third.body == render(head, third.content)[0]
    assert len(json.loads(gzip.decompress(third.body))["bans"]) == len(third.content["bans"])
    store.close()
