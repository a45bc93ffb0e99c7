"""Object-store downloads → hourly roll-ups, joined to the requests that asked for them.

A mirror that keeps blobs in object storage answers a blob GET with a 307 to a signed URL:
the proxy's log holds the redirect's few hundred bytes, the store's log the real bytes. Each
store download (GET, 200 or 206, once per request id) is one pull's bytes, and it counts
once, for the client that asked:

1. the address in the signed URL's ``referer=<client-ip>:<host>/<image>`` (CRProxy adds it);
2. else the proxy's 307 for the same blob up to ``JOIN_SECONDS`` before the download (the
   life of a signed URL), one from the downloading address itself first, then the nearest;
3. else the downloading address, and the bytes are counted as *unjoined* (a direct read of
   the bucket, or a proxy log that was never ingested).

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

JOIN_SECONDS = 600     # a signed URL's life: CRProxy and the stores' SDKs sign for 10-20 minutes
SKEW_SECONDS = 60      # the proxy's and the store's clocks, and a 307 stamped when it ended


def roll_up_objects(store, batch: int | None = None) -> int:
    """Roll up the object-store rows added since the last pass; returns how many rows were read."""
    done = 0
    while n := _slice(store, batch):
        done += n
    return done


def _slice(store, batch: int | None) -> int:
    todo = pending(store, "object_events", batch)
    if todo is None:
        return 0
    last, top = todo
    n, lo_ts, hi_ts = store.execute("select count(*), min(ts), max(ts) from object_events where seq > ? and seq <= ?",
                                    [last, top])[0]
    p = {"lo": last, "hi": top, "tlo": lo_ts - timedelta(seconds=JOIN_SECONDS),
         "thi": hi_ts + timedelta(seconds=SKEW_SECONDS), "join": JOIN_SECONDS, "skew": SKEW_SECONDS}
    with store.unit():
        store.execute(_JOINED, p)
        store.execute("""
            insert into facts_hourly (hour, client_ip, user_agent, remote_user, registry, repository,
                requests, manifest_gets, manifest_heads, blob_gets, bytes, blob_bytes,
                s2xx, s3xx, s401, s403, s404, s429, s5xx, catalog, tags, with_xff, object_bytes, unjoined_bytes)
            select date_trunc('hour', ts), who, user_agent, remote_user, registry, repository,
                count(*) filter (where not asked), 0, 0, count(*) filter (where not asked),
                sum(bytes), sum(bytes),
                count(*) filter (where not asked), 0, 0, 0, 0, 0, 0, 0, 0, 0,
                sum(bytes), coalesce(sum(bytes) filter (where unjoined), 0)
            from pw_joined group by all""")
        store.execute("""
            insert into blob_hourly
            select date_trunc('hour', ts), who, remote_user, hash(digest),
                count(*) filter (where not asked), sum(bytes)
            from pw_joined where digest is not null group by all""")
        _relays(store)
        store.execute("drop table pw_joined")
        advance(store, "object_events", top)
    return n


# One row per new download, with who it is counted for. `asked`: a 307 in the proxy's log
# stands for this download's request. A store may deliver a log record twice (S3 says so):
# an earlier row with the same request id, time and store is the same request.
_JOINED = """
create temp table pw_joined as
with o as (
    select rowid as rid, * from object_events n
    where seq > $lo and seq <= $hi and method = 'GET' and status in (200, 206) and bytes > 0
      and not exists (select 1 from object_events d
                      where d.seq <= $lo and d.ts >= $tlo and d.ts <= $thi
                        and d.request_id = n.request_id and d.ts = n.ts and d.source = n.source)
    qualify request_id is null or row_number() over (partition by source, request_id, ts order by seq, rowid) = 1
),
r as (
    select client_ip, user_agent, remote_user, registry, repository, digest, ts,
        floor(epoch(ts) / $join)::bigint as slot
    from events
    where ts >= $tlo and ts <= $thi and kind = 'blob' and method = 'GET'
      and status between 300 and 399 and status <> 304 and digest is not null
),
-- a download's candidate 307s are in the time slots (a window long each) its window touches:
-- joining on (digest, slot) keeps a popular blob's pairs to its redirects of those minutes,
-- not every redirect of that blob in the batch
os as (
    select rid, digest, ts, client_ip, requester_ip,
        unnest(range(floor((epoch(ts) - $join) / $join)::bigint, floor((epoch(ts) + $skew) / $join)::bigint + 1)) as slot
    from o
),
-- the best 307 per download: the smallest struct, compared field by field (one from the
-- downloading address first, then the nearest, then the lowest address: the same on every run)
m as (
    select os.rid, min({'other': r.client_ip <> os.client_ip, 'gap': abs(epoch(os.ts) - epoch(r.ts)),
                        'client_ip': r.client_ip, 'user_agent': r.user_agent, 'remote_user': r.remote_user,
                        'registry': r.registry, 'repository': r.repository}) as b
    from os join r on r.digest = os.digest and r.slot = os.slot
        and r.ts >= os.ts - to_seconds($join) and r.ts <= os.ts + to_seconds($skew)
        and (os.requester_ip is null or r.client_ip = os.requester_ip)
    group by os.rid
)
select o.ts, o.client_ip as download_ip, o.digest, o.bytes,
    coalesce(m.b.client_ip, o.requester_ip, o.client_ip) as who,
    coalesce(m.b.user_agent, o.user_agent) as user_agent, m.b.remote_user as remote_user,
    coalesce(m.b.registry, o.registry) as registry, coalesce(m.b.repository, o.repository) as repository,
    m.rid is not null as asked,
    m.rid is null and o.requester_ip is null as unjoined,
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
