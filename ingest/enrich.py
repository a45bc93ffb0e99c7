"""ASN and country per distinct client address (core.geodb reads the MaxMind-format
databases), and the class of each new user agent. Looked up once per new address into
``ip_info``; events are never rewritten.
"""
from __future__ import annotations

from core.geodb import GeoDB
from ingest.useragent import classify


# What is looked up, from which columns of which raw table. Object-store downloads are rolled
# up too (rules/objectjoin.py): their downloading and requesting addresses and user agents are
# looked up like the proxy's.
USER_AGENTS = {"events": ["user_agent"], "object_events": ["user_agent"]}
ADDRESSES = {"events": ["client_ip"], "object_events": ["client_ip", "requester_ip"]}
SLICE = 1_000_000       # seq numbers read per statement: a first pass over years of events stays small
FEW = 100_000           # up to this many seq numbers, a slice's distinct values are fetched and checked


def enrich_new(store, geo: GeoDB) -> dict[str, int]:
    """Classify new user agents and look up new addresses; returns how many of each.

    Only the events after each table's watermark (enrich_state, by seq: a checkpoint after
    retention's deletes renumbers rowids, never seq) are read, so a run costs what it added, not
    the history. The addresses' watermark moves only while a database is configured: the first
    run with one looks up every address seen before it. Addresses a damaged database failed on
    are kept in ip_retry and looked up again by the next run. Call it inside a unit of work: the
    rows and the watermarks are committed together."""
    # one scan per table for its newest seq, shared by both lookups
    tops = {table: store.value(f"select max(seq) from {table}") for table in USER_AGENTS}
    uas = 0
    for table, columns in USER_AGENTS.items():
        for values in _new_values(store, f"user_agents {table}", table, tops[table], columns,
                                  "user_agents", "user_agent"):
            _insert_columns(store, "user_agents", [(ua, *classify(ua)) for ua in values],
                            ["varchar", "varchar", "varchar", "varchar"])
            uas += len(values)
    ips = 0
    if geo.configured:
        retry = [ip for (ip,) in store.execute("delete from ip_retry returning ip")]
        ips += _look_up(store, geo, retry)
        again = set(retry)          # failed again: back in ip_retry, still without an ip_info row
        for table, columns in ADDRESSES.items():
            for values in _new_values(store, f"addresses {table}", table, tops[table], columns, "ip_info", "ip"):
                ips += _look_up(store, geo, [ip for ip in values if ip not in again])
    return {"user_agents": uas, "addresses": ips}


def _new_values(store, name: str, table: str, top: int | None, columns: list[str], known_table: str, key: str):
    """The distinct values of ``table``'s ``columns`` after watermark ``name``, up to seq ``top``,
    that ``known_table`` lacks, a slice of seq numbers at a time (the caller stores each slice's
    before the next is read, so a value is given once); the watermark then moves to ``top``."""
    last = store.value("select seq from enrich_state where name = ?", [name])
    last = -1 if last is None else last
    if top is None or top <= last:
        return
    union = " union all ".join(f"select {c} as v from {table} where seq > $lo and seq <= $hi" for c in columns)
    for lo in range(last, top, SLICE):
        hi = min(lo + SLICE, top)
        if hi - lo > FEW:
            # a long stretch (the first run, a backlog): the values the table lacks, by an anti
            # join that hashes the table, rather than each of its distinct values through Python
            new = [v for (v,) in store.execute(f"""
                select v from (select distinct v from ({union}) where v is not null) e
                where not exists (select 1 from {known_table} k where k.{key} = e.v)""", {"lo": lo, "hi": hi})]
        else:
            # what one ingest run added: its few distinct values, then the known ones among them by
            # a semi join that hashes those few and streams the table past them (the anti join
            # would hash every address ever seen: 300,000 of them took 70 ms a run, and growing)
            values = [v for (v,) in store.execute(f"select distinct v from ({union}) where v is not null",
                                                  {"lo": lo, "hi": hi})]
            known = {v for (v,) in store.execute(f"select {key} from {known_table} where {key} in "
                                                 "(select unnest(?::varchar[]))", [values])} if values else set()
            new = [v for v in values if v not in known]
        if new:
            yield new
    store.execute("insert or replace into enrich_state values (?, ?)", [name, top])


def _look_up(store, geo: GeoDB, ips: list[str]) -> int:
    """Store what the databases say of ``ips``; those a damaged database failed on go to ip_retry."""
    found, failed = [], []
    for ip in ips:
        if (got := geo.lookup(ip)) is None:
            failed.append(ip)
        else:
            found.append((ip, *got))
    if found:
        _insert_columns(store, "ip_info", found, ["varchar", "integer", "varchar", "varchar"])
    if failed:
        store.execute("insert or ignore into ip_retry select unnest(?::varchar[])", [failed])
    return len(ips)


def _insert_columns(store, table: str, rows: list[tuple], types: list[str]) -> None:
    """Insert many rows as one statement: each column is one bound list, unnested side by side."""
    columns = list(zip(*rows))
    select = ", ".join(f"unnest(${i}::{t}[])" for i, t in enumerate(types, 1))
    store.execute(f"insert into {table} select {select}", [list(c) for c in columns])
