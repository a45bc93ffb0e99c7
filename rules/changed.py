"""Whom a fresh pass judges: every entity whose features may have moved since the last pass.

A feature moves with the entity's own new events, and with the object store's downloads it
asked for (their log arrives late); with the window's start passing an hour (its oldest events
leave: a share can rise, a ban condition become true, with no new event of its own); and, by
what it ``reads`` (rules/features.py), with its ASN's traffic (a neighbour changes a fair
share), with the whole mirror's (byte_share) or with the decisions against it as the window
passes them. So a group (entity kind, window) judges the entities of the new events and
downloads, of the hours that left its window since the last pass, of the ASNs either touched
when it reads ASN-wide features, every entity its mirror-wide rules could match on the cheap
features (rules/prefilter.py) when it reads the mirror's, and of the decisions its window's
start passed when it reads decisions. A new feature needs nothing here beyond its
declaration: ``reads`` says which of these it follows.

The judged entities go into a temp table that the feature queries semi-join in every scan of
the rollups (judging_only): a list_contains over tens of thousands of entities per row was
quadratic."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rules import features, objectjoin, prefilter


@dataclass(frozen=True)
class Fresh:
    """A fresh pass: it judges the entities of the events stored after seq ``after`` up to
    ``upto`` (the events' insertion order, migration 12), and those whose windows moved since
    ``last``, the previous pass's time (None: judge the new events' entities only). ``since``
    is the time of the last full pass. ``objects_after``/``objects_upto``: the same for the
    object store's downloads (object_events' seq), which arrive late and move the features of
    the clients that asked for them (bytes; relay_downloads) with no new event of theirs."""
    after: int
    upto: int
    since: datetime
    last: datetime | None = None
    objects_after: int = -1
    objects_upto: int = -1


# The entities that events in a range of seq belong to, per kind, keyed as features.py keys them.
CHANGED = """
    create or replace temp table changed_entities as
    with {o}e as (select distinct client_ip, remote_user, registry, repository from events
               where seq > $after and seq <= $upto and ts >= $oldest
               union {objects}),
    ips as (select distinct client_ip from e where client_ip is not null)
    select 'address' as kind, client_ip as entity from ips
    union all select distinct 'prefix', px.prefix from ips join ip_prefix px on px.ip = ips.client_ip
    union all select distinct 'asn', cast(gi.asn as varchar) from ips join ip_info gi on gi.ip = ips.client_ip
              where gi.asn is not null
    union all select distinct 'user', remote_user from e where remote_user is not null
    union all select distinct 'image', registry || '/' || repository from e
              where registry is not null and repository is not null
"""


# Whom new object-store downloads count for (rules/objectjoin.py): the client the signed URL's
# referer names, the downloading address (unjoined), and every client whose 307 for the same
# blob the join may have picked (up to a link's life before the download; a superset).
OBJECTS = """
    select distinct who, null, registry, repository from (
        select o.requester_ip as who, o.registry, o.repository from o where o.requester_ip is not null
        union all select o.client_ip, o.registry, o.repository from o)
    union select distinct r.client_ip, r.remote_user, r.registry, r.repository from events r
    where r.ts >= (select min(ts) from o) - to_seconds($link) and r.ts <= (select max(ts) from o) + to_seconds($skew)
      and r.kind = 'blob' and r.method = 'GET' and r.status between 300 and 399 and r.status <> 304
      and r.digest in (select digest from o)
"""

_NEW_OBJECTS = """o as (select ts, client_ip, requester_ip, digest, registry, repository from object_events
           where seq > $oafter and seq <= $oupto and ts >= $oldest),
    """


def prepare(store, fresh: Fresh, oldest: datetime, link: int = objectjoin.LINK_EXPIRES) -> None:
    """The entities of the new events and object-store downloads (changed_entities), of
    ``oldest`` or later: older ones (a late rotated file) are in no window that ends now.
    ``link``: how long a signed link lives (setting link_expires)."""
    p = {"after": fresh.after, "upto": fresh.upto, "oldest": oldest}
    o, objects = "", "select null, null, null, null where false"
    if fresh.objects_upto > fresh.objects_after:
        o, objects = _NEW_OBJECTS, OBJECTS
        p.update(oafter=fresh.objects_after, oupto=fresh.objects_upto, link=int(link),
                 skew=objectjoin.SKEW_SECONDS)
    sql = CHANGED.format(o=o, objects=objects)
    store.execute(sql, p)


def _window_moved(fresh: Fresh, now: datetime, window: str) -> tuple[datetime, datetime] | None:
    """[from, to): the hours that left the window since the last pass, or None."""
    if fresh.last is None:
        return None
    was, start = features.window_bounds(fresh.last, window)[0], features.window_bounds(now, window)[0]
    return (was, start) if was < start else None


def judge(store, fresh: Fresh, now: datetime, entity: str, window: str, rules, needed, hosting=()) -> int:
    """Fill the temp table ``judged`` with the entities of kind ``entity`` that a fresh pass
    judges over ``window`` for ``rules`` (of that kind and window), which need the features
    ``needed``; how many."""
    key, join = features._KEY[entity]
    reads = {features.READS[n] for n in needed}
    start, end = features.window_bounds(now, window)
    moved = _window_moved(fresh, now, window)
    p = {"kind": entity, "start": start, "end": end, "hosting": list(hosting)}
    parts = ["select entity from changed_entities where kind = $kind"]
    if moved:
        parts.append(f"""select {key} from facts_hourly t {join}
                         where t.hour >= $gone and t.hour < $went and {key} is not null""")
        p.update(gone=moved[0], went=moved[1])
    if "asn" in reads:
        # every entity with traffic from an address whose ASN's totals moved: an address with
        # new events, or with events in the hours that left the window
        gone = "or (t.hour >= $gone and t.hour < $went)" if moved else ""
        parts.append(f"""select {key} from facts_hourly t {join}
                         join ip_info g on g.ip = t.client_ip
                         where t.hour >= $start and t.hour < $end and {key} is not null and g.asn in (
                             select i.asn from facts_hourly t join ip_info i on i.ip = t.client_ip
                             where t.hour >= $start and t.hour < $end and (t.client_ip in (
                                 select entity from changed_entities where kind = 'address') {gone}))""")
    if "decisions" in reads and moved and entity in features.SCOPE_OF:
        # prior_decisions counts the decisions of the 7 days before the window's start
        parts.append("""select value from decisions where scope = $scope
                        and ((created_at >= $gone - interval 7 day and created_at < $went - interval 7 day)
                             or (created_at >= $gone and created_at < $went))""")
        p["scope"] = features.SCOPE_OF[entity]
    mirror = [r for r in rules if any(features.READS[n] == "mirror" for n in prefilter.reads(r.where))]
    if mirror:
        # a share of the whole mirror's traffic moves for everyone with anyone's new events or
        # with the hours that left the window: every entity that one of these rules could match
        # on the cheap features, the share among them (rules/prefilter.py); every entity of
        # the window when a rule's condition cannot be judged that way
        could = prefilter.condition(mirror)
        if could is None:
            parts.append(f"""select {key} from facts_hourly t {join}
                             where t.hour >= $start and t.hour < $end and {key} is not null""")
        else:
            cheap = features.features_sql(entity, needed=prefilter.cheap_needed(mirror, ()))
            parts.append(f"select entity from ({cheap}) where {could}")
    sql = "create or replace temp table judged as " + "\nunion\n".join(parts)
    store.execute(sql, {k: v for k, v in p.items() if f"${k}" in sql})
    return store.value("select count(*) from judged")


def judging_only(sql: str, entity: str) -> str:
    """A features query for the entities in the temp table ``judged``, each still over its whole
    window. The filter goes into each scan of the rollups (features_sql's scoped(): every part
    built on them groups by entity, and the totals read the rollups directly, so it removes
    other entities' rows only): on the outer select alone DuckDB cannot push it into the CTEs
    it materializes, and a fresh pass over 671 addresses on 2 M events took 5.2 s instead of
    0.7 s. The outer filter keeps the result right should the scans' text change (then only
    slower); a test checks that the inner one is applied."""
    key = features._KEY[entity][0]
    only = "(select entity from judged)"
    rows = _ROWS.get(entity, f"{key} in {{only}}").format(only=only)
    inner = sql.replace(f"and {key} is not null", f"and {key} is not null and {rows}")
    return f"select * from ({inner}) where entity in {only}"


# A prefix's or an ASN's rows picked by their addresses, so that the scan's join to ip_prefix
# or ip_info takes the judged rows only. (What an hourly pass's prefix group costs is the
# aggregation of the big prefixes that are active every hour, not this filter: bench/README.md.)
_ROWS = {"prefix": "t.client_ip in (select ip from ip_prefix where prefix in {only})",
         "asn": "t.client_ip in (select ip from ip_info where cast(asn as varchar) in {only})"}
