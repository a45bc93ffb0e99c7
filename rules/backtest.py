"""`pullwarden backtest`: replay detection hour by hour over stored history.

Each pack is replayed on its own, every rule treated as enforced (a simulated rule is what
one wants to try), with its decisions in a temporary table, so recidive counts that pack's
own earlier decisions and live decisions are never touched.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from rules import features
from rules.engine import Rule
from rules.features import SCOPE_OF
from rules.rollup import roll_up

BT_TABLE = "backtest_decisions"


def _decisions_table(store, made: list[dict]) -> None:
    """The pack's decisions so far, as a temporary table of this connection (recidive counts
    them): made again at each step, which may run on a connection of its own."""
    store.execute(f"""create or replace temp table {BT_TABLE} as
                      select unnest($scope::varchar[]) as scope, unnest($value::varchar[]) as value,
                             unnest($effect::varchar[]) as effect, unnest($at::timestamp[]) as created_at,
                             false as simulated, null::varchar as held""",
                  {"scope": [SCOPE_OF[d["entity_kind"]] for d in made], "value": [d["value"] for d in made],
                   "effect": [d["effect"] for d in made], "at": [d["created_at"] for d in made]})


def _replay(piece, settings, rules: list[Rule], start: datetime, end: datetime) -> list[dict]:
    """Decisions (as dicts) a pack would have made, hour by hour; each hour is one ``piece``."""
    groups: dict[tuple[str, str], list[Rule]] = defaultdict(list)
    for r in rules:
        if r.effect != "tag":
            groups[(r.entity, r.window)].append(r)
    active: dict[tuple[str, str], dict] = {}       # (rule, entity) -> its current decision
    count: dict[tuple[str, str], int] = defaultdict(int)
    made: list[dict] = []

    def hour(store, now: datetime) -> None:
        _decisions_table(store, made)
        for (entity, window), group in sorted(groups.items()):
            w_start, w_end = features.window_bounds(now, window)
            needed = set().union(*(r.uses for r in group))
            sql = features.features_sql(entity, BT_TABLE, needed)
            store.execute(f"create or replace temp table bt_feat as {sql}",
                          features.params(sql, start=w_start, end=w_end, hosting=list(settings.hosting_asns)))
            for rule in group:
                for (value,) in store.execute(f"select entity from bt_feat where ({rule.where})"):
                    key = (rule.name, value)
                    duration = rule.duration * (rule.escalation_factor ** count[key])
                    if rule.escalation_cap:
                        duration = min(duration, rule.escalation_cap)
                    current = active.get(key)
                    if current and current["until"] > now:
                        current["until"] = max(current["until"], now + duration)
                        continue
                    d = {"rule": rule.name, "pack": rule.pack, "action": rule.action, "effect": rule.effect,
                         "entity_kind": entity, "value": value, "created_at": now, "until": now + duration}
                    active[key] = d
                    count[key] += 1
                    made.append(d)
                    store.execute(f"insert into {BT_TABLE} values (?, ?, ?, ?, false, null)",
                                  [SCOPE_OF[entity], value, rule.effect, now])
        store.execute(f"drop table if exists bt_feat; drop table if exists {BT_TABLE}")   # memory, until the next step

    now = start
    while now < end:
        piece(lambda store, at=now: hour(store, at))
        now += timedelta(hours=1)
    return made


def _bytes(store, kind: str, value: str, start: datetime, end: datetime) -> int:
    who = {"address": "client_ip = $v", "prefix": "client_ip in (select ip from ip_prefix where prefix = $v)",
           "asn": "client_ip in (select ip from ip_info where cast(asn as varchar) = $v)",
           "user": "remote_user = $v"}[kind]
    return int(store.value(f"select coalesce(sum(bytes), 0) from facts_hourly where hour >= $s and hour < $e and {who}",
                           {"s": start, "e": end, "v": value}))


def backtest(store, settings, rules: list[Rule], start: datetime, end: datetime, roll: bool = True,
             piece=None) -> dict:
    """``roll``: bring the roll-ups up to date first (not on serve's reading connection: its
    ingest job rolls up). ``piece(fn)``: runs ``fn(store)``, one bounded piece of the work (an
    hour of the replay, a pack's bytes); serve gives each its own read, so a checkpoint or
    another reader waits for one piece, not for the whole backtest. Default: on ``store``."""
    piece = piece or (lambda fn: fn(store))
    if roll:
        piece(roll_up)
    by_pack: dict[str, list[Rule]] = defaultdict(list)
    for r in rules:
        by_pack[r.pack].append(r)
    report = {"from": start, "to": end, "rules": [], "packs": {},
              "bytes": int(piece(lambda s: s.value("""select coalesce(sum(bytes), 0) from facts_hourly
                                                      where hour >= ? and hour < ?""", [start, end])))}
    for pack, pack_rules in sorted(by_pack.items()):
        made = _replay(piece, settings, pack_rules, start, end)
        piece(lambda s, pack=pack, pack_rules=pack_rules, made=made: _pack_report(s, report, pack, pack_rules,
                                                                                   made, start, end))
    return report


def _pack_report(store, report: dict, pack: str, pack_rules: list[Rule], made: list[dict], start: datetime,
                 end: datetime) -> None:
    # a ban saves what the entity pulled while banned; overlapping bans count once
    banned: dict[tuple[str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    for d in made:
        if d["effect"] == "ban":
            banned[(d["entity_kind"], d["value"])].append((d["created_at"] + timedelta(hours=1),
                                                            min(d["until"], end)))
    saved_of = {}
    for key, spans in banned.items():
        spans.sort()
        merged: list[list[datetime]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        saved_of[key] = sum(_bytes(store, key[0], key[1], s, e) for s, e in merged if e > s)
    for rule in sorted(pack_rules, key=lambda r: r.name):
        mine = [d for d in made if d["rule"] == rule.name]
        entities = {(d["entity_kind"], d["value"]) for d in mine}
        spans = [(d["created_at"] + timedelta(hours=1), min(d["until"], end)) for d in mine]
        report["rules"].append({
            "rule": rule.name, "pack": pack, "action": rule.action, "entities": len(entities),
            "decisions": len(mine), "flagged": sorted(v for _, v in entities),
            "bytes": sum(_bytes(store, k, v, start, end) for k, v in entities),
            "bytes_saved": sum(_bytes(store, d["entity_kind"], d["value"], s, e)
                               for d, (s, e) in zip(mine, spans) if d["effect"] == "ban" and e > s)})
    report["packs"][pack] = {
        "entities": len({(d["entity_kind"], d["value"]) for d in made}),
        "banned": sorted(v for _, v in banned),
        "throttled": sorted({d["value"] for d in made if d["effect"] == "throttle"}),
        "bytes_saved": sum(saved_of.values())}
