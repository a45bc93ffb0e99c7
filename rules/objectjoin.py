"""Object-store downloads → hourly roll-ups, joined to the requests that asked for them.

A mirror that keeps blobs in object storage answers a blob GET with a 307 to a signed URL:
the proxy's log holds the redirect's few hundred bytes, the store's log the real bytes. What a
store's log holds is one of three things:

- a **download**: an object read (S3 ``REST.GET.OBJECT``, OSS ``GetObject``, a Logpush GET of
  an object key) through a signed link (a signature in the URI, not S3's ``AuthHeader``) that
  the mirror signed (its requester is one of the mirror's, or the log does not say). One pull's
  bytes, counted once (once per request id: stores deliver records twice) for the client that
  asked — the signed URL's ``referer=<client-ip>:<host>/<image>`` (CRProxy's OSS and OBS
  drivers add it; distribution's s3-aws driver, and so AWS S3 and R2, do not), else the proxy's
  307 for the same blob up to the link's life before it (``link_expires``), else the
  downloading address, *unjoined*;
- a **read with other credentials** (no signature in the URI, ``AuthHeader``, or another
  requester: an operator's backup job): no 307 handed it out, so it is counted for its own
  address, unjoined;
- the **mirror's own call**: a bucket operation (CRProxy's storage driver Stats every blob
  before a redirect: a ListObjects with max-keys=1, ``REST.GET.BUCKET``), a HEAD, a PUT filling
  the cache, or a read by the mirror's identity without a signed link (its bytes went out
  through the proxy and are in the proxy's log). Never a download or a client:
  ``store_calls_hourly`` counts them.

Among several 307s of one blob in a download's window, the one from the downloading address
comes first, then one from its /24 or /64, then one from its AS, then a 307 whose asker did not
fetch that blob itself (its link is still unused), then the nearest in time; a tie goes to the
307 logged before the download. A client's object bytes are *exact* (``exact_bytes``: the
referer, or its own 307) or matched *by time* alone (``timed_bytes``: an estimate).

When a 307 is found the request was already counted from the proxy's log, so the download
adds only bytes; without one it counts as the request too. The redirect's own bytes are not
served bytes (rollup.py leaves them out), so nothing is counted twice.

Ingest the proxy's log before, or with, the store's: stores deliver their logs minutes to
hours late, and a download rolled up before its 307 arrives falls back to its referer (same
client, without the 307's user agent and user) or, without one, stays unjoined.
"""
from __future__ import annotations

from datetime import timedelta

from core.values import prefix_of
from rules.watermark import advance, pending

LINK_EXPIRES = 1200    # CRProxy's --link-expires unset: the storage driver's 20 minutes (s3-aws, oss, obs)
SKEW_SECONDS = 60      # the proxy's and the store's clocks, and a 307 stamped when it ended
LEARN_SECONDS = 86400  # how far back the requesters that signed links are looked for


def roll_up_objects(store, batch: int | None = None, link_expires: int = LINK_EXPIRES,
                    requesters: list[str] | tuple = (), upto: int | None = None) -> int:
    """Roll up the object-store rows added since the last pass (none after seq ``upto``); returns
    how many rows were read. ``requesters``: the mirror's own identities (object_store_requesters;
    empty: learned)."""
    done = 0
    while n := _slice(store, batch, int(link_expires), [str(x) for x in requesters], upto):
        done += n
    return done


def _slice(store, batch: int | None, link: int, requesters: list[str], upto: int | None = None) -> int:
    todo = pending(store, "object_events", batch, upto)
    if todo is None:
        return 0
    last, top = todo
    n, lo_ts, hi_ts = store.execute("select count(*), min(ts), max(ts) from object_events where seq > ? and seq <= ?",
                                    [last, top])[0]
    p = {"lo": last, "hi": top, "tlo": lo_ts - timedelta(seconds=link),
         "thi": hi_ts + timedelta(seconds=SKEW_SECONDS), "join": link, "skew": SKEW_SECONDS,
         "slo": lo_ts - timedelta(seconds=LEARN_SECONDS), "requesters": requesters}
    with store.unit():
        store.execute(_NEW, {k: p[k] for k in ("lo", "hi", "tlo", "thi", "slo", "requesters")})
        store.execute("""
            insert into store_calls_hourly
            select date_trunc('hour', ts), source, bucket, client_ip, requester, operation, count(*), sum(bytes)
            from pw_new where kind = 'call' group by all""")
        _addresses(store, p["tlo"], p["thi"])
        store.execute(_JOINED, {k: p[k] for k in ("tlo", "thi", "join", "skew")})
        store.execute("""
            insert into facts_hourly (hour, client_ip, user_agent, remote_user, registry, repository,
                requests, manifest_gets, manifest_heads, blob_gets, bytes, blob_bytes,
                s2xx, s3xx, s401, s403, s404, s429, s5xx, catalog, tags, with_xff, object_bytes, unjoined_bytes,
                exact_bytes, timed_bytes)
            select date_trunc('hour', ts), who, user_agent, remote_user, registry, repository,
                count(*) filter (where not asked), 0, 0, count(*) filter (where not asked),
                sum(bytes), sum(bytes),
                count(*) filter (where not asked), 0, 0, 0, 0, 0, 0, 0, 0, 0,
                sum(bytes), coalesce(sum(bytes) filter (where how = 'unjoined'), 0),
                coalesce(sum(bytes) filter (where how = 'exact'), 0),
                coalesce(sum(bytes) filter (where how = 'timed'), 0)
            from pw_joined group by all""")
        store.execute("""
            insert into blob_hourly
            select date_trunc('hour', ts), who, remote_user, hash(digest),
                count(*) filter (where not asked), sum(bytes)
            from pw_joined where digest is not null group by all""")
        _relays(store)
        for t in ("pw_new", "pw_addr", "pw_joined"):
            store.execute(f"drop table {t}")
        advance(store, "object_events", top)
    return n


# The new rows, once each (a store may deliver a log record twice, S3 says so: an earlier row
# with the same request id, time and store is the same request), and what each one is.
_NEW = r"""
create temp table pw_new as
with n as (
    select rowid as rid, ts, client_ip, source, bucket, operation, method, status, bytes, digest, registry,
        repository, requester_ip, user_agent, requester,
        -- S3/OBS and OSS name the operation; a Logpush GET of a key is a read unless it lists
        case when operation is not null then operation like '%.GET.OBJECT' or operation = 'GetObject'
             else method = 'GET' and coalesce(object_key, '') <> ''
                  and not regexp_matches(coalesce(uri, ''), '[?&](prefix|list-type|max-keys|delimiter|marker|continuation-token)=')
             end as object_read,
        uri ilike '%signature=%' and coalesce(auth_type, '') <> 'AuthHeader' as signed
    from object_events n
    where seq > $lo and seq <= $hi
      and not exists (select 1 from object_events d
                      where d.seq <= $lo and d.ts >= $tlo and d.ts <= $thi
                        and d.request_id = n.request_id and d.ts = n.ts and d.source = n.source)
      -- a record delivered twice in this batch: its first copy only (a hash aggregate of the
      -- few repeated ids, not a sort of the whole batch)
      -- (seq is one number a chunk: the row's own rowid tells two copies in one chunk apart)
      and not exists (select 1 from (select source, request_id, ts, min({'s': seq, 'r': rowid}) as first
                                     from object_events where seq > $lo and seq <= $hi and request_id is not null
                                     group by all having count(*) > 1) t
                      where t.source = n.source and t.request_id = n.request_id and t.ts = n.ts
                        and {'s': n.seq, 'r': n.rowid} > t.first)
),
-- the mirror's identities: as configured, else whoever signed the links read in the last day
signers as (
    select unnest($requesters::varchar[]) as requester
    union
    select distinct requester from object_events
    where len($requesters::varchar[]) = 0 and ts >= $slo and ts <= $thi and requester is not null
      and method = 'GET' and uri ilike '%signature=%' and coalesce(auth_type, '') <> 'AuthHeader'
)
select n.* exclude (object_read, signed),
    case when not coalesce(object_read, false) then 'call'
         when signed and (n.requester is null or s.requester is not null) then 'download'
         when not signed and s.requester is not null then 'call'
         else 'read' end as kind
from n left join signers s on s.requester = n.requester
"""


def _addresses(store, tlo, thi) -> None:
    """The /24 or /64 and AS of every address a download or a 307 near it came from: the 307s of a
    download's own network or AS come before others'."""
    ips = [ip for (ip,) in store.execute("""
        select distinct client_ip from pw_new where kind in ('download', 'read')
        union select distinct e.client_ip from events e
        where e.ts >= $tlo and e.ts <= $thi
          and e.kind = 'blob' and e.method = 'GET' and e.status between 300 and 399 and e.status <> 304
          and e.digest in (select digest from pw_new where kind = 'download')""", {"tlo": tlo, "thi": thi})]
    store.execute("""
        create temp table pw_addr as
        select a.ip, a.prefix, i.asn
        from (select unnest($1::varchar[]) as ip, unnest($2::varchar[]) as prefix) a
        left join ip_info i on i.ip = a.ip""", [ips, [prefix_of(ip) for ip in ips]])


# One row per download to roll up, with who it is counted for and how surely. `asked`: a 307 in
# the proxy's log stands for this download's request.
_JOINED = """
create temp table pw_joined as
with o as (
    select rid, ts, client_ip, digest, bytes, user_agent, registry, repository, kind,
        case when kind = 'download' then requester_ip end as requester_ip
    from pw_new where kind in ('download', 'read') and status in (200, 206) and bytes > 0
),
r as (
    select rowid as eid, client_ip, user_agent, remote_user, registry, repository, digest, ts,
        floor(epoch(ts) / $join)::bigint as slot
    from events
    where ts >= $tlo and ts <= $thi and kind = 'blob' and method = 'GET'
      and status between 300 and 399 and status <> 304 and digest is not null
),
-- a download's candidate 307s are in the time slots (a link's life long each) its window
-- touches: joining on (digest, slot) keeps a popular blob's pairs to its redirects of those
-- minutes, not every redirect of that blob in the batch
os as (
    select rid, digest, ts, client_ip, requester_ip,
        unnest(range(floor((epoch(ts) - $join) / $join)::bigint, floor((epoch(ts) + $skew) / $join)::bigint + 1)) as slot
    from o where kind = 'download'
),
pairs as (
    select os.rid, os.ts as dts, os.client_ip as dip, r.*,
        case when r.client_ip = os.client_ip then 0
             when ra.prefix = da.prefix then 1
             when ra.asn = da.asn then 2 end as near
    from os join r on r.digest = os.digest and r.slot = os.slot
        and r.ts >= os.ts - to_seconds($join) and r.ts <= os.ts + to_seconds($skew)
        and (os.requester_ip is null or r.client_ip = os.requester_ip)
    left join pw_addr da on da.ip = os.client_ip
    left join pw_addr ra on ra.ip = r.client_ip
),
-- a 307 whose asker fetched that blob itself within the link's life has been used: a download
-- from elsewhere more likely holds another asker's link
used as (
    select distinct p.eid from (select * from pairs where near is null) p
    join object_events d on d.digest = p.digest and d.client_ip = p.client_ip
    where d.ts >= p.ts - to_seconds($skew) and d.ts <= p.ts + to_seconds($join)
      and d.method = 'GET' and d.status in (200, 206)
    union
    select distinct p.eid from (select * from pairs where near is null) p
    join object_events d on d.digest = p.digest and d.requester_ip = p.client_ip
    where d.ts >= p.ts - to_seconds($skew) and d.ts <= p.ts + to_seconds($join)
      and d.method = 'GET' and d.status in (200, 206)
),
-- the best 307 per download: the smallest struct, compared field by field (the same on every run)
m as (
    select p.rid, min({'near': coalesce(p.near, case when u.eid is null then 3 else 4 end),
                       'gap': abs(epoch(p.dts) - epoch(p.ts)), 'later': p.ts > p.dts,
                       'client_ip': p.client_ip, 'user_agent': p.user_agent, 'remote_user': p.remote_user,
                       'registry': p.registry, 'repository': p.repository}) as b
    from pairs p left join used u on u.eid = p.eid
    group by p.rid
)
select o.ts, o.client_ip as download_ip, o.digest, o.bytes,
    coalesce(m.b.client_ip, o.requester_ip, o.client_ip) as who,
    coalesce(m.b.user_agent, o.user_agent) as user_agent, m.b.remote_user as remote_user,
    coalesce(m.b.registry, o.registry) as registry, coalesce(m.b.repository, o.repository) as repository,
    m.rid is not null as asked,
    case when m.rid is null and o.requester_ip is null then 'unjoined'
         when o.requester_ip is not null or m.b.near = 0 then 'exact'
         else 'timed' end as how,
    o.requester_ip is not null as referred
from o left join m on m.rid = o.rid
"""


def _relays(store) -> None:
    """Downloads of a client's signed URLs from outside its /24 or /64 (different address
    families always are): whether the two are one network (same ASN) is judged at detection,
    when the ASN database may have been refreshed. Only the URL's own referer says who asked:
    a download matched to someone's 307 by time and blob alone is no evidence against them."""
    pairs = store.execute("select distinct who, download_ip from pw_joined where referred and who <> download_ip")
    apart = [(w, d) for w, d in pairs if (own := prefix_of(w)) is None or own != prefix_of(d)]
    if not apart:
        return
    store.execute("""
        insert into relay_hourly
        select date_trunc('hour', j.ts), j.who, j.remote_user, j.download_ip, count(*), sum(j.bytes)
        from pw_joined j join (select unnest($1::varchar[]) as who, unnest($2::varchar[]) as download_ip) a
            using (who, download_ip)
        where j.referred group by all""", [[w for w, _ in apart], [d for _, d in apart]])
