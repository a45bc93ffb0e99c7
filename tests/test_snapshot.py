"""The policy snapshot is rebuilt from what changed; it must always equal a build from scratch,
and its chain of differences must lead from any version to the current one."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta

from hypothesis import HealthCheck, example, given, settings, strategies as st

from core.settings import load
from core.store import open_store
from enforcer.snapshot import Publisher

T0 = datetime(2026, 11, 27, 12, 0, 0)
VALUES = ["192.0.2.1", "192.0.2.2", "198.51.100.0/24", "64500", "alice"]
SCOPE = {"192.0.2.1": "ip", "192.0.2.2": "ip", "198.51.100.0/24": "range", "64500": "asn", "alice": "user"}

op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(VALUES), st.sampled_from(["ban", "throttle", "boost"]),
              st.integers(1, 6)),
    st.tuples(st.just("revoke"), st.integers(0, 30)),
    st.tuples(st.just("extend"), st.integers(0, 30), st.integers(1, 4)),
    st.tuples(st.just("wait"), st.integers(1, 4)),
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
                            from decisions where revoked_at is null and until > ? order by until, id""", [now])
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
@example(ops=[("add", "192.0.2.1", "ban", 1), ("publish",), ("wait", 2), ("publish",)])         # an expiry
@example(ops=[("add", "alice", "boost", 5), ("publish",), ("add", "alice", "throttle", 1), ("publish",),
              ("wait", 2), ("publish",)])                  # a throttle beats a boost, until it ends
@example(ops=[("add", "192.0.2.2", "ban", 2), ("add", "192.0.2.2", "ban", 4), ("publish",), ("revoke", 1),
              ("publish",), ("extend", 0, 3), ("publish",)])
def test_rebuilt_from_changes_equals_built_from_scratch(tmp_path_factory, ops):
    db = tmp_path_factory.mktemp("snap") / "db.duckdb"
    store = open_store(str(db))
    clock = Clock()
    pub = Publisher(store, threading.RLock(), clock, load(None, {"db": str(db)}, environ={}).policy_max_age)
    seen = {0: {"bans": {}, "assignments": {}}}     # what a poller holds at each version
    v = pub.publish()
    seen[v.version] = {s: dict(v.content[s]) for s in ("bans", "assignments")}
    ids: list[int] = []
    for step in ops:
        if step[0] == "add":
            _, value, effect, hours = step
            ids.append(store.value("""
                insert into decisions (seq, scope, value, effect, tier, rule, origin, reason, created_at, until)
                values (nextval('decision_seq'), ?, ?, ?, ?, ?, 'rule', 'r', ?, ?) returning id""",
                [SCOPE[value], value, effect, None if effect == "ban" else "throttled", f"rule-{effect}", clock(),
                 clock() + timedelta(hours=hours)]))
        elif step[0] == "revoke" and ids:
            store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?",
                          [clock(), ids[step[1] % len(ids)]])
        elif step[0] == "extend" and ids:
            store.execute("update decisions set until = until + ?, seq = nextval('decision_seq') where id = ?",
                          [timedelta(hours=step[2]), ids[step[1] % len(ids)]])
        elif step[0] == "wait":
            clock.t += timedelta(hours=step[1])
        else:
            v = pub.publish()
            want = scratch(store, clock())
            got = {s: {k: tuple(e)[:6] if s == "bans" else tuple(e) for k, e in v.content[s].items()}
                   for s in ("bans", "assignments")}
            assert got == want
            seen[v.version] = {s: dict(v.content[s]) for s in ("bans", "assignments")}
    # every poller, from every version it may hold, reaches the current content by the deltas
    for since, held in seen.items():
        delta = pub.changes(since)
        if delta is None:
            assert since == 0                           # version 1 had nothing before it
            continue
        for s in ("bans", "assignments"):
            state = {k: e.as_dict() for k, e in held[s].items()}
            for gone in delta["remove"][s]:
                state.pop(gone["key"], None)        # may never have reached this poller
            for e in delta["upsert"][s]:
                state[f"{e['scope']}:{e['value']}"] = e
            assert state == {k: e.as_dict() for k, e in pub.current.content[s].items()}
    store.close()
