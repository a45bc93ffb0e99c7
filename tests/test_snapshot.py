"""The policy snapshot is rebuilt from what changed; it must always equal a build from scratch,
and its chain of differences must lead from any version to the current one."""
from __future__ import annotations

import gzip
import json
import threading
from datetime import datetime, timedelta

from hypothesis import HealthCheck, example, given, settings, strategies as st

from core.settings import load
from core.store import open_store
from enforcer.snapshot import Publisher, small_sections

T0 = datetime(2026, 11, 27, 12, 0, 0)
VALUES = ["192.0.2.1", "192.0.2.2", "198.51.100.0/24", "64500", "alice"]
SCOPE = {"192.0.2.1": "ip", "192.0.2.2": "ip", "198.51.100.0/24": "range", "64500": "asn", "alice": "user"}

op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(VALUES), st.sampled_from(["ban", "throttle", "boost"]),
              st.integers(1, 6), st.booleans()),
    st.tuples(st.just("revoke"), st.integers(0, 30)),
    st.tuples(st.just("extend"), st.integers(0, 30), st.integers(1, 4)),
    st.tuples(st.just("hold"), st.integers(0, 30)),         # the circuit breaker's: kept, never enforced
    st.tuples(st.just("approve"), st.integers(0, 30)),
    st.tuples(st.just("wait"), st.integers(1, 4)),
    st.tuples(st.just("allow"), st.integers(1, 3)),        # a small section, with its own expiry
    st.tuples(st.just("image"),),
    st.tuples(st.just("restart"),),                         # a new Publisher over the same store
    st.tuples(st.just("refresh"),),
    st.tuples(st.just("publish"),),
    st.tuples(st.just("publish"),),
)


class Clock:
    def __init__(self):
        self.t = T0

    def __call__(self):
        return self.t


def scratch(store, now) -> dict:
    """The entries in force, computed the slow obvious way from the decisions table."""
    out: dict = {"bans": {}, "assignments": {}}
    rows = store.execute("""select id, scope, value, effect, tier, coalesce(rule, 'manual'), reason, until
                            from decisions where revoked_at is null and not simulated and held is null and until > ?
                            order by until, id""", [now])
    for id_, scope, value, effect, tier, rule, reason, until in rows:
        key = f"{scope}:{value}"
        entry = (id_, scope, value, until.isoformat(), reason, rule)
        if effect == "ban":
            out["bans"][key] = entry                        # ordered by until: the longest wins
        elif key not in out["assignments"] or out["assignments"][key][6] == "boost" or effect == "throttle":
            out["assignments"][key] = (*entry, effect, tier)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=3, max_size=30))
@example(ops=[("add", "192.0.2.1", "ban", 1, False), ("publish",), ("wait", 2), ("publish",)])         # an expiry
@example(ops=[("add", "alice", "boost", 5, False), ("publish",), ("add", "alice", "throttle", 1, False), ("publish",),
              ("wait", 2), ("publish",)])                  # a throttle beats a boost, until it ends
@example(ops=[("add", "192.0.2.2", "ban", 2, False), ("add", "192.0.2.2", "ban", 4, False), ("publish",), ("revoke", 1),
              ("publish",), ("extend", 0, 3), ("publish",)])
@example(ops=[("add", "192.0.2.1", "ban", 2, False), ("publish",), ("hold", 0), ("publish",), ("approve", 0),
              ("publish",)])
def test_rebuilt_from_changes_equals_built_from_scratch(tmp_path_factory, ops):
    db = tmp_path_factory.mktemp("snap") / "db.duckdb"
    store = open_store(str(db))
    clock = Clock()
    max_age = load(None, {"db": str(db)}, environ={}).policy_max_age
    pub = Publisher(store, threading.RLock(), clock, max_age)
    seen = {}                                       # what a poller holds at each version
    v = pub.publish()
    seen[v.version] = json.loads(gzip.decompress(v.body))
    images = 0
    ids: list[int] = []
    for step in ops:
        if step[0] == "add":
            _, value, effect, hours, simulated = step
            ids.append(store.value("""
                insert into decisions (seq, scope, value, effect, tier, rule, origin, reason, created_at, until, simulated)
                values (nextval('decision_seq'), ?, ?, ?, ?, ?, 'rule', 'r', ?, ?, ?) returning id""",
                [SCOPE[value], value, effect, None if effect == "ban" else "throttled", f"rule-{effect}", clock(),
                 clock() + timedelta(hours=hours), simulated]))
        elif step[0] == "revoke" and ids:
            store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?",
                          [clock(), ids[step[1] % len(ids)]])
        elif step[0] == "extend" and ids:
            store.execute("update decisions set until = until + ?, seq = nextval('decision_seq') where id = ?",
                          [timedelta(hours=step[2]), ids[step[1] % len(ids)]])
        elif step[0] in ("hold", "approve") and ids:
            store.execute("update decisions set held = ?, seq = nextval('decision_seq') where id = ?",
                          ["breaker" if step[0] == "hold" else None, ids[step[1] % len(ids)]])
        elif step[0] == "wait":
            clock.t += timedelta(hours=step[1])
        elif step[0] == "allow":
            store.execute("insert or replace into allowlist values ('ip', ?, 'x', ?, ?)",
                          [f"203.0.113.{step[1]}", clock(), clock() + timedelta(hours=step[1])])
        elif step[0] == "image":
            images += 1
            store.execute("insert into image_lists values ('blocked', ?, 'x', now())", [f"docker.io/x{images}/*"])
        elif step[0] == "refresh":
            pub.refresh()
        else:
            if step[0] == "restart":
                pub = Publisher(store, threading.RLock(), clock, max_age)
            v = pub.publish()
            want = scratch(store, clock())
            got = {s: {k: (e.id, e.scope, e.value, e.until, e.reason, e.rule) + ((e.effect, e.tier) if s != "bans" else ())
                       for k, e in v.content[s].items()} for s in ("bans", "assignments")}
            assert got == want
            body = json.loads(gzip.decompress(v.body))
            assert {s: body[s] for s in want} == {s: {k: e.as_dict() for k, e in v.content[s].items()} for s in want}
            assert {s: body[s] for s in small_sections(store, clock())} == small_sections(store, clock())
            if v.version in seen:                           # a number names one content, restarts too
                assert {k: seen[v.version][k] for k in body if k != "generated_at"} == \
                    {k: body[k] for k in body if k != "generated_at"}
            seen[v.version] = body
    # every poller, from every version it may hold, reaches the current content by the deltas
    for since, held in seen.items():
        delta = pub.changes(since)
        if delta is None:                               # only across a version built with nothing to compare
            assert not all(getattr(pub.history.get(n), "has_delta", False) for n in range(since + 1, pub.current.version + 1))
            continue
        now = json.loads(gzip.decompress(pub.current.body))
        state = {s: dict(held[s]) for s in ("bans", "assignments")} | \
            {s: held[s] for s in ("allowlist", "default_tiers", "images", "tiers")}
        for s in ("bans", "assignments"):
            for gone in delta["remove"][s]:
                state[s].pop(gone["key"], None)     # may never have reached this poller
            for e in delta["upsert"][s]:
                state[s][f"{e['scope']}:{e['value']}"] = e
        state.update(delta["sections"])
        assert state == {s: now[s] for s in state}
    store.close()


def test_unzipped_holds_a_piece_not_the_rest_of_the_body():
    """GET /v1/policy to a client that does not take gzip unpacks the held body as it is sent:
    each download must hold about a piece, not a copy of the rest of the body (18 MB at 1 M
    bans, a copy per client sending at once)."""
    import random
    import tracemalloc

    from enforcer.snapshot import unzipped
    text = random.Random(7).randbytes(3 << 20).hex().encode()      # 6 MB that gzip only halves
    body = gzip.compress(text, 6)
    assert len(body) > 3 << 20
    tracemalloc.start()
    try:
        pieces = 0
        out = []
        for piece in unzipped(body):
            assert len(piece) <= 1 << 18
            out.append(len(piece))
            pieces += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(out) == len(text) and pieces >= len(text) >> 18
    assert peak < 1 << 20, f"{peak:,} bytes held at once while unpacking a {len(body):,}-byte body"
    assert b"".join(unzipped(body)) == text
