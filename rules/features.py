"""Features per entity and window: the columns that rules are written against.

Every feature is declared here once, with what it means; rules/FEATURES.md is generated
from this list (`python -m rules.features > rules/FEATURES.md`) and a test keeps it in step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "48h": timedelta(hours=48),
           "7d": timedelta(days=7)}
ENTITIES = ("address", "prefix", "asn", "user", "image")
SCOPE_OF = {"address": "ip", "prefix": "range", "asn": "asn", "user": "user"}

@dataclass(frozen=True)
class Feature:
    """``reads``: whose traffic the value depends on besides the entity's own in the window, which
    tells a fresh pass whom to judge again when others' traffic moves (rules/changed.py):
    "entity" (only its own), "asn" (every address of its ASN), "mirror" (everyone's: every entity
    its rules could match on the cheap features, rules/prefilter.py), "decisions" (the decisions
    against it, as the window's start passes them)."""
    name: str
    doc: str
    reads: str = "entity"


FEATURES: tuple[Feature, ...] = (
    Feature("requests", "Requests in the window."),
    Feature("bytes", "Bytes served in the window (all kinds)."),
    Feature("pulls", "Manifest GETs: a pull as Docker Hub counts it (HEADs are free, blobs do not count)."),
    Feature("manifest_heads", "Manifest HEADs: version checks by containerd, kubelet, docker with a cached image."),
    Feature("blob_gets", "Blob GETs (any status)."),
    Feature("blob_bytes", "Bytes of blob downloads."),
    Feature("blobs", "Distinct blobs downloaded (not computed for images, like the three below)."),
    Feature("repeat_ratio", "Blob bytes ÷ bytes of the distinct blobs: 1 means every blob once, 30 means each "
                            "blob thirty times on average (no layer cache, or many clients behind one address)."),
    Feature("max_blob_downloads", "Most downloads of one blob."),
    Feature("max_blob_bytes", "Most bytes served for one blob (its size × its downloads)."),
    Feature("images", "Distinct images (registry/repository) requested."),
    Feature("pulls_per_image", "Pulls ÷ images."),
    Feature("max_image_pulls", "Most pulls of one image."),
    Feature("max_image_bytes", "Most bytes served for one image."),
    Feature("ua_strings", "Distinct user-agent strings."),
    Feature("docker_versions", "Distinct docker engine versions."),
    Feature("families", "Distinct client families (docker, containerd, podman, harbor, …)."),
    Feature("top_ua_share", "Share of requests sent by the most frequent user-agent string (0–1)."),
    Feature("cache_share", "Share of requests from pull-through caches (Harbor) (0–1)."),
    Feature("xff_values", "Distinct X-Forwarded-For values: downstream clients a proxy admits to."),
    Feature("xff_share", "Share of requests that carry X-Forwarded-For (0–1)."),
    Feature("active_hours", "Clock hours with at least one request."),
    Feature("blob_hours", "Clock hours with at least one blob GET: a CI job re-pulling all day shows 20+, "
                          "a cluster rollout 1–2."),
    Feature("hours_of_day", "Distinct hours of the day (0–23, UTC) with requests: 24 is a flat round-the-clock "
                            "profile, an office's working day shows 9–11."),
    Feature("pull_hours", "Distinct hours of the day (0–23, UTC) with pulls: a relay serving others pulls in "
                          "20–24, an office in its working day (9–11), a cluster at its rollouts (1–4). Unlike "
                          "hours_of_day, a kubelet's HEAD checks all day do not count."),
    Feature("quiet_share", "Share of the pulls made in the 8 quietest hours of the day (UTC hours, summed over "
                           "the window's days; the window's last hour, still under way live, left out): 0.33 "
                           "is perfectly flat, round the clock; people's rhythm gives less (home users about "
                           "0.07, an office 0)."),
    Feature("registries", "Distinct registries (docker.io, ghcr.io, …) of the images requested."),
    Feature("namespaces", "Distinct namespaces (registry/first path segment: docker.io/library, ghcr.io/actions) "
                          "of the images requested: a relay serves many unrelated ones, a team a few."),
    Feature("downloads_per_blob", "Blob downloads ÷ distinct blobs: like repeat_ratio, but by count, so it "
                                  "holds when a log has no blob bytes (CRProxy redirecting blobs to storage)."),
    Feature("redownload_hours", "Clock hours in which the entity downloaded a blob again (one it had downloaded "
                                "earlier in the window, or twice in that hour): a relay without a cache or a CI "
                                "job re-pulling all day show 20+, an office 11 at most, a cluster rollout 1–4, a "
                                "pull-through cache 0 (not computed for images)."),
    Feature("blobs_per_pull", "Blob GETs ÷ manifest GETs: what a pull goes on to fetch (a warm check fetches "
                              "none, a client without a layer cache every layer)."),
    Feature("asn_addresses", "Distinct addresses active in the entity's ASN in the window (0 without an ASN).",
            reads="asn"),
    Feature("asn_share", "The entity's share of its ASN's bytes in the window (0–1).", reads="asn"),
    Feature("relay_downloads", "Object-store downloads of the entity's signed URLs (redirect-mode mirrors: the "
                               "URL's referer names who asked) fetched from an address outside its /24 or /64 "
                               "and in another ASN: links handed on to someone else. A client whose IPv4 asks "
                               "and IPv6 downloads, or a company with split egress, stays in its own ASN and "
                               "does not count; neither do addresses without an ASN (no ASN database)."),
    Feature("relay_addresses", "Distinct addresses that fetched those handed-on links."),
    Feature("relay_bytes", "Bytes of those downloads."),
    Feature("error_responses", "Responses 401, 403, 404, 429 or 5xx."),
    Feature("errors", "Responses 403, 404, 429 or 5xx (the operator's own error rule counts these)."),
    Feature("error_share", "error_responses ÷ requests."),
    Feature("enum_requests", "Catalog and tags-list requests."),
    Feature("enum_share", "enum_requests ÷ requests."),
    Feature("byte_share", "Share of all bytes the mirror served in the window (0–1).", reads="mirror"),
    Feature("addresses", "Distinct client addresses (1 for an address; for a prefix, ASN or user, how many)."),
    Feature("asn", "The autonomous system (for a prefix, user or image: the one with most requests); null "
                   "without an ASN database."),
    Feature("hosting", "1 when that ASN is a cloud or hosting network (setting hosting_asns), else 0."),
    Feature("prior_decisions", "Enforced bans and throttles against this entity created in the 7 days before the "
                               "window starts (recidive: it was told, and keeps on); held ones do not count.",
            reads="decisions"),
)
NAMES = tuple(f.name for f in FEATURES)
READS = {f.name: f.reads for f in FEATURES}

_KEY = {
    "address": ("t.client_ip", ""),
    "prefix": ("px.prefix", "join ip_prefix px on px.ip = t.client_ip"),
    "asn": ("cast(gi.asn as varchar)", "join ip_info gi on gi.ip = t.client_ip"),
    "user": ("t.remote_user", ""),
    "image": ("t.registry || '/' || t.repository", ""),
}


# Where each feature comes from: the aggregate over facts_hourly (`a`) or one of the parts
# below, each a CTE and a join, included only when a rule needs one of its features.
_PARTS = {
    "blob": (("blobs", "repeat_ratio", "max_blob_downloads", "max_blob_bytes", "downloads_per_blob"),
             """b as (select entity, blob, sum(downloads) as downloads, sum(bytes) as bytes, min(hour) as first_hour
                     from ({blob_hourly}) group by all)""",
             """left join (select entity, count(*) as blobs, max(downloads) as max_blob_downloads,
                           max(bytes) as max_blob_bytes, sum(bytes) / nullif(sum(bytes / downloads), 0) as repeat_ratio,
                           sum(downloads) / count(*) as downloads_per_blob
                    from b where downloads > 0 group by all) bb using (entity)"""),
    "image": (("images", "pulls_per_image", "max_image_pulls", "max_image_bytes", "registries", "namespaces"),
              """img as (select entity, registry, repository, sum(manifest_gets) as pulls, sum(bytes) as bytes
                         from f where repository is not null group by all)""",
              """left join (select entity, count(*) as images, max(pulls) as max_image_pulls,
                            max(bytes) as max_image_bytes, count(distinct registry) as registries,
                            count(distinct registry || '/' || split_part(repository, '/', 1)) as namespaces
                            from img group by all) ii using (entity)"""),
    "redownload": (("redownload_hours",),
                   # an hour holds a re-download when it has more downloads than blobs first fetched in
                   # it: plain group-bys (one of them the blob part's) instead of a window over every
                   # (entity, blob, hour)
                   "rdh as (select entity, hour, sum(downloads) as downloads from ({blob_hourly}) group by all)",
                   """left join (select rdh.entity, count(*) as redownload_hours from rdh
                                 left join (select entity, first_hour as hour, count(*) as first from b
                                            where downloads > 0 group by all) rf using (entity, hour)
                                 where rdh.downloads > coalesce(rf.first, 0) group by all) rd using (entity)"""),
    "diurnal": (("pull_hours", "quiet_share"),
                # the window's last hour is still under way when detection runs live: a few minutes of
                # it would make a flat profile look quiet, so quiet_share leaves it out (23 of a
                # 24h window's hours of the day are judged, all 24 in longer windows)
                """ph as (select entity, hour, sum(manifest_gets) as p from f where manifest_gets > 0 group by all),
                   hod as (select entity, hour(hour) as h, sum(p) as p from ph
                           where hour < $end - interval 1 hour group by all)""",
                # an hour without pulls is one of the quietest: of n active hours out of `slots` (the
                # hours of the day judged), the n - (slots - 8) smallest count
                """left join (select entity, count(distinct hour(hour)) as pull_hours
                              from ph group by all) qh using (entity)
                   left join (select entity, case when count(*) > slots - 8 then
                                     list_sum(list_slice(list_sort(list(p)), 1, count(*) - (slots - 8))) / sum(p)
                                     else 0 end as quiet
                              from hod, (select least(24, date_diff('hour', $start, $end) - 1) as slots)
                              group by entity, slots) qq using (entity)"""),
    "ua": (("top_ua_share",),
           "ua as (select entity, user_agent, sum(requests) as r from f group by all)",
           "left join (select entity, max(r) as top from ua group by all) uu using (entity)"),
    "xff": (("xff_values",), "x as ({xff})", "left join x using (entity)"),
    "total": (("byte_share",),
              "total as (select sum(bytes) as bytes from facts_hourly where hour >= $start and hour < $end)",
              "cross join total"),
    "asn": (("asn", "hosting"),
            """asn as (select who.entity, arg_max(gi.asn, who.r) as asn
                       from (select entity, client_ip, sum(requests) as r from f group by all) who
                       join ip_info gi on gi.ip = who.client_ip group by all)""",
            "left join asn using (entity)"),
    "fair": (("asn_addresses", "asn_share"),
             """asn_total as (select gi.asn, sum(t.bytes) as bytes, count(distinct t.client_ip) as addresses
                             from facts_hourly t join ip_info gi on gi.ip = t.client_ip
                             where t.hour >= $start and t.hour < $end group by all)""",
             "left join asn_total an on an.asn = asn.asn"),
    # relay_hourly keeps every download from outside the asker's /24 or /64; same-ASN ones are
    # its own network (split egress, IPv4 asks and IPv6 downloads) and left out here, so a
    # refreshed ASN database judges the history again
    "relay": (("relay_downloads", "relay_addresses", "relay_bytes"),
              """rl as (select entity, sum(downloads) as downloads, count(distinct download_ip) as addresses,
                               sum(r.bytes) as bytes
                        from ({relay_hourly}) r
                        join ip_info asker on asker.ip = r.client_ip
                        join ip_info fetcher on fetcher.ip = r.download_ip
                        where asker.asn is not null and fetcher.asn is not null and asker.asn <> fetcher.asn
                        group by all)""",
              "left join rl using (entity)"),
    "prior": (("prior_decisions",),
              """prior as (select value as entity, count(*) as n from {decisions}
                           where scope = '{scope}' and not simulated and held is null
                             and effect in ('ban', 'throttle')
                             and created_at >= $start - interval 7 day and created_at < $start group by all)""",
              "left join prior using (entity)"),
}
_SELECT = {
    "blobs": "coalesce(bb.blobs, 0)", "repeat_ratio": "coalesce(bb.repeat_ratio, 0)",
    "max_blob_downloads": "coalesce(bb.max_blob_downloads, 0)", "max_blob_bytes": "coalesce(bb.max_blob_bytes, 0)",
    "images": "coalesce(ii.images, 0)",
    "pulls_per_image": "case when coalesce(ii.images, 0) = 0 then 0 else a.pulls / ii.images end",
    "max_image_pulls": "coalesce(ii.max_image_pulls, 0)", "max_image_bytes": "coalesce(ii.max_image_bytes, 0)",
    "top_ua_share": "coalesce(uu.top / a.requests, 0)", "cache_share": "a.cache_requests / a.requests",
    "xff_values": "coalesce(x.xff_values, 0)", "xff_share": "a.with_xff / a.requests",
    "error_share": "a.error_responses / a.requests", "enum_share": "a.enum_requests / a.requests",
    "byte_share": "coalesce(a.bytes / nullif(total.bytes, 0), 0)", "asn": "asn.asn",
    "hosting": "case when list_contains($hosting::integer[], asn.asn) then 1 else 0 end",
    "prior_decisions": "coalesce(prior.n, 0)",
    "relay_downloads": "coalesce(rl.downloads, 0)", "relay_addresses": "coalesce(rl.addresses, 0)",
    "relay_bytes": "coalesce(rl.bytes, 0)",
    "downloads_per_blob": "coalesce(bb.downloads_per_blob, 0)",
    "registries": "coalesce(ii.registries, 0)", "namespaces": "coalesce(ii.namespaces, 0)",
    "redownload_hours": "coalesce(rd.redownload_hours, 0)", "quiet_share": "coalesce(qq.quiet, 0)",
    "pull_hours": "coalesce(qh.pull_hours, 0)",
    "blobs_per_pull": "coalesce(a.blob_gets / nullif(a.pulls, 0), 0)",
    "asn_addresses": "coalesce(an.addresses, 0)", "asn_share": "coalesce(a.bytes / nullif(an.bytes, 0), 0)",
}
# Parts that read another part's CTE or join.
_REQUIRES = {"fair": "asn", "redownload": "blob"}
_NO_BLOBS = ("blob", "redownload", "relay")


# The aggregate over facts_hourly (`a`) per entity, each column computed only when a chosen
# feature reads it: DuckDB keeps every aggregate of a CTE, and the distinct counts cost most of
# a query that needs only sums (48h error counts over a day of 6 M events a week: 0.48 s CPU
# with all of them, 0.12 s without).
_AGGREGATES = {
    "requests": "sum(requests)", "bytes": "sum(bytes)", "pulls": "sum(manifest_gets)",
    "manifest_heads": "sum(manifest_heads)", "blob_gets": "sum(blob_gets)", "blob_bytes": "sum(blob_bytes)",
    "error_responses": "sum(s401 + s403 + s404 + s429 + s5xx)", "errors": "sum(s403 + s404 + s429 + s5xx)",
    "enum_requests": "sum(catalog + tags)", "with_xff": "sum(with_xff)",
    "active_hours": "count(distinct hour)", "hours_of_day": "count(distinct hour(hour))",
    "blob_hours": "count(distinct hour) filter (where blob_gets > 0)",
    "ua_strings": "count(distinct f.user_agent)",
    "docker_versions": "count(distinct case when u.family = 'docker' then u.version end)",
    "families": "count(distinct coalesce(u.family, 'other'))",
    "cache_requests": "sum(case when u.family = 'harbor' then requests else 0 end)",
    "addresses": "count(distinct client_ip)",
}


def features_sql(entity: str, decisions: str = "decisions", needed=None) -> str:
    """SELECT entity, <features> for one entity kind; parameters $start, $end, $hosting.
    ``decisions`` names the table recidive is counted in (a backtest keeps its own);
    ``needed`` limits the work to those features, their parts and aggregates (the others read null)."""
    key, join = _KEY[entity]

    def scoped(table: str) -> str:
        return (f"select {key} as entity, t.* from {table} t {join} "
                f"where t.hour >= $start and t.hour < $end and {key} is not null")

    xff = ("select null::varchar as entity, 0 as xff_values where false" if entity == "image" else
           f"select entity, count(distinct forwarded_for) as xff_values from ({scoped('xff_hourly')}) group by all")
    fill = {"blob_hourly": scoped("blob_hourly"), "relay_hourly": scoped("relay_hourly"), "xff": xff, "decisions": decisions,
            "scope": SCOPE_OF.get(entity, "image")}
    wanted = set(NAMES if needed is None else needed)
    # blob and relay rollups carry no image (only the digest's hash): an image has no blob features
    chosen = {p for p, (provides, _, _) in _PARTS.items() if wanted & set(provides)}
    chosen |= {_REQUIRES[p] for p in chosen if p in _REQUIRES}
    parts = [p for p in _PARTS if p in chosen and not (entity == "image" and p in _NO_BLOBS)]
    ctes = "".join(",\n" + _PARTS[p][1].format(**fill) for p in parts)
    joins = "\n".join(_PARTS[p][2] for p in parts)
    provided = {n for p in parts for n in _PARTS[p][0]}
    columns = []
    for n in NAMES:
        if n not in wanted:
            columns.append(f"null as {n}")
        elif n in _SELECT:
            part_feature = any(n in _PARTS[p][0] for p in _PARTS)
            columns.append(f"{_SELECT[n] if (n in provided or not part_feature) else 'null'} as {n}")
        else:
            columns.append(f"a.{n}")
    if entity == "address" and "addresses" in wanted:
        # an address is one address: its count(distinct client_ip) was a group-by over its rows for a 1
        columns[NAMES.index("addresses")] = "1 as addresses"
    read = set(re.findall(r"\ba\.([a-z_]+)", " ".join(columns))) | {"requests"}
    aggregates = ",\n        ".join(f"{sql} as {n}" for n, sql in _AGGREGATES.items() if n in read)
    agents = "left join user_agents u on u.user_agent = f.user_agent" if "u." in aggregates else ""
    return f"""
with f as ({scoped('facts_hourly')}),
a as (
    select f.entity, {aggregates}
    from f {agents}
    group by f.entity){ctes}
select a.entity, {", ".join(columns)}
from a
{joins}
"""


def params(sql: str, **values) -> dict:
    """The values a features query actually uses (DuckDB refuses unused parameters)."""
    return {k: v for k, v in values.items() if f"${k}" in sql}


def window_bounds(now: datetime, window: str) -> tuple[datetime, datetime]:
    """[start, end) of a window ending at ``now``, on whole hours: rollups are hourly, and
    the hour that contains ``now`` counts as seen."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end - WINDOWS[window], end


def compute(store, entity: str, window: str, now: datetime, hosting=(),
            where: str | None = None) -> list[dict]:
    start, end = window_bounds(now, window)
    sql = features_sql(entity)
    if where:
        sql = f"select * from ({sql}) where {where}"
    cols = ["entity", *NAMES]
    rows = store.execute(sql, {"start": start, "end": end, "hosting": list(hosting)})
    return [dict(zip(cols, r)) for r in rows]


def markdown() -> str:
    lines = ["# Features", "",
             "Rules are SQL boolean expressions over these columns, computed per entity (address, prefix — the",
             "/24 of an IPv4 address or the /64 of an IPv6 one —, asn, user, image) over a window (1h, 24h, 48h, 7d)",
             "that ends at the detection time. Generated from rules/features.py.", "",
             "| feature | meaning |", "|---|---|"]
    lines += [f"| `{f.name}` | {f.doc} |" for f in FEATURES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
