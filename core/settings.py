"""Settings, declared once: name, type, default, help.

Precedence: built-in default < TOML file (``--config`` or ./pullwarden.toml) <
``PULLWARDEN_<NAME>`` environment variables < command-line flags. An unknown key is an
error that names the file and the line, never silently ignored.
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import values


class SettingsError(Exception):
    """A setting is unknown or has the wrong type; the message names where it came from."""


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("db", str, "./data/pullwarden.duckdb", "DuckDB file that holds events, rollups and decisions."),
    Setting("sources", list, [], "Log paths, directories or globs that ingest reads when no PATH is given."),
    Setting("format", str, "auto", "Log format: auto, combined, main, clf, nginx-json; object-storage access logs: s3, oss, logpush."),
    Setting("log_format", str, "", "An nginx log_format string; overrides `format` when set."),
    Setting("default_registry", str, "docker.io",
            "Registry assumed for paths without one (/v2/library/nginx/...), as docker's registry-mirrors sends."),
    Setting("host_registries", dict, {},
            "Host → registry map for one-host-per-registry mirrors, e.g. {\"docker.m.example.io\" = \"docker.io\"}."),
    Setting("trusted_proxies", list, [],
            "Addresses or CIDRs of our own load balancers: from them the client is the rightmost X-Forwarded-For "
            "hop that is not one of them (nginx realip with real_ip_recursive on)."),
    Setting("json_fields", dict, {},
            "nginx-json field names, event field → JSON key, e.g. {time = \"ts\", remote_addr = \"ip\"}."),
    Setting("asn_db", str, "", "MaxMind-format ASN database (GeoLite2-ASN, DB-IP ASN Lite or IPinfo Lite)."),
    Setting("country_db", str, "", "MaxMind-format country database (GeoLite2-Country, DB-IP Country Lite, IPinfo Lite)."),
    Setting("rejects_kept_per_file", int, 1000,
            "How many malformed lines per file are kept verbatim; all of them are counted."),
    Setting("chunk_mb", int, 128,
            "Ingest reads and commits logs in chunks of this many MiB (smaller: less memory, slower)."),
    Setting("follow_interval", float, 1.0, "Seconds between polls of the sources with --follow."),
    Setting("rules_dir", str, "",
            "Site rules folder: adds rules and replaces a shipped rule of the same name (shipped files stay as they are)."),
    Setting("hosting_asns", list, [16509, 14618, 8987, 15169, 396982, 8075, 45102, 37963, 45090, 132203, 136907,
                                   55990, 14061, 16276, 24940, 63949, 20473, 31898, 36352, 51167, 12876, 9009, 60068],
            "ASNs of cloud and hosting networks (feature `hosting`): AWS, Google, Azure, Alibaba, Tencent, Huawei, "
            "DigitalOcean, OVH, Hetzner, Linode, Vultr, Oracle and others."),
    Setting("link_expires", int, 1200,
            "Seconds a redirect-mode mirror's signed blob URL lives: CRProxy's --link-expires, unset there → the "
            "storage driver's 20 minutes (s3-aws, oss, obs). A store download without a referer is matched to a "
            "307 for its blob up to this long before it."),
    Setting("object_store_requesters", list, [],
            "The mirror's own identities in object-storage logs (S3 Requester, e.g. "
            "arn:aws:iam::123456789012:user/crproxy; OSS Requester Aliyun ID). A signed link read by another "
            "requester was not handed out by a 307 and counts for its own address. Empty: the requesters that "
            "signed the links read (the mirror signs them)."),
    Setting("breaker_share", float, 0.02,
            "Circuit breaker: in one detection pass, one rule's new bans may hit at most this share of the addresses "
            "active in the last 24 h (a range counts the addresses in it that do not take part in what it was "
            "banned for); a rule that would hit more has its new bans held for an admin, the other rules apply."),
    Setting("breaker_floor", int, 5,
            "Circuit breaker: one rule may always ban this many addresses in a pass, however small the mirror."),
    Setting("widest_ipv4", int, 16,
            "The widest IPv4 range a ban or an allowlist entry may cover, as a prefix length (16: a /16, 65,536 "
            "addresses); wider ones are refused (a rule's are held). A ban needs --force (audited) to go wider, "
            "or to cover loopback, link-local, this server or a trusted proxy; the whole space is always refused."),
    Setting("widest_ipv6", int, 32,
            "The widest IPv6 range a ban or an allowlist entry may cover, as a prefix length (32: a /32)."),
    Setting("now", str, "",
            "The time this run judges at: empty for the wall clock (live work), `latest` for the newest ingested "
            "event, or an ISO 8601 time (UTC unless it has an offset). Set it to replay old logs: every command of "
            "the replay (detect, decisions list, explain, allow, ban, unban, prune) then agrees on it. detect and "
            "admin changes refuse a time more than 5 minutes ahead of the wall clock."),
    Setting("host", str, "127.0.0.1", "Address `pullwarden serve` listens on."),
    Setting("port", int, 8080, "Port `pullwarden serve` listens on."),
    Setting("api_url", str, "",
            "The running server's URL, for commands while `pullwarden serve` holds the DuckDB file (default: the "
            "URL serve leaves beside the file, <db>.serve.json)."),
    Setting("api_key", str, "",
            "The key such commands present (an admin key for changes); better given as PULLWARDEN_API_KEY."),
    Setting("dashboard_port", int, 8501,
            "Port `pullwarden dashboard` (and `up`) serves the dashboard on, on loopback; it reaches the API at "
            "`api_url` with `api_key`."),
    Setting("upstream_checks_credentials", bool, False,
            "The upstream behind nginx (a registry with auth, or CRProxy with its token service) refuses a request "
            "whose basic-auth password or bearer token is bad, and gives no token to anonymous clients: nginx then "
            "gives a request with credentials the authenticated default tier. False: the anonymous one."),
    Setting("policy_max_age", int, 30, "Seconds a proxy may keep a policy before it polls again (the policy's max_age)."),
    Setting("ingest_interval", float, 10.0, "Seconds between tail-ingest runs of `sources` in serve."),
    Setting("detect_interval", float, 300.0,
            "Seconds between full detection passes in serve: every entity judged, decisions in force extended, "
            "the circuit breaker's whole view."),
    Setting("detect_fresh_interval", float, 5.0,
            "Inside serve, a fresh detection pass follows an ingest run that stored events, within this many seconds "
            "(and at most this often), and one when an hour begins: it judges only the entities with new events, or "
            "whose windows lost that hour, each over its whole window, so "
            "a ban follows the line that completes its evidence within about ingest_interval + this + the pass. "
            "0: only the full passes of detect_interval."),
    Setting("serve_memory_mb", int, 64,
            "DuckDB's memory limit inside serve between detection passes (it spills to disk beyond it). DuckDB's "
            "RSS is about this plus 100 MB of its own (the library, the database, untracked allocations)."),
    Setting("detect_memory_mb", int, 160,
            "DuckDB's memory limit inside serve during a detection pass, and for each hour of a backtest (the same "
            "feature queries). Measured at one thread: a feature query needs 95-119 MB whatever the data's size "
            "(the demo month: 115 MB; 15 M events over 7 days: 119 MB), and a whole pass fits in 128 MB on both; "
            "160 leaves room. A pass that does not fit is tried once more with twice as much, and the log says so; "
            "two at once (a pass and a backtest) get the sum."),
    Setting("serve_chunk_mb", int, 4,
            "Inside serve, ingest reads logs in chunks of at most this many MiB (chunk_mb applies when smaller): "
            "16 MiB chunks cost about 40 MB more peak RSS than 4 MiB, for about 10% more lines/s."),
    Setting("serve_duckdb_threads", int, 1,
            "DuckDB's threads inside serve: the jobs leave the other cores to the API, whose latency matters more."),
    Setting("serve_catchup_chunk_mb", int, 128,
            "Inside serve, while its sources are more than 64 MiB behind (a first start over a big log, a restart "
            "after an outage), ingest reads slices of this many MiB, each in one transaction, and rolls up the "
            "slices before beside it; serve_chunk_mb again once it is live."),
    Setting("serve_catchup_threads", int, 1,
            "DuckDB's threads for a catch-up slice's load (the roll-up beside it takes another core); "
            "serve_duckdb_threads again once it is live. More makes each slice's row groups partial, and the "
            "next checkpoint rewrites the rows around them (2 M lines: 12-13 CPU s on two threads, 9 on one), "
            "and two threads with the roll-up beside them ran out of the 96 MB of serve_catchup_memory_mb. "
            "They run at the jobs' lower CPU priority: the API's polls go first."),
    Setting("serve_catchup_memory_mb", int, 96,
            "DuckDB's memory limit inside serve while ingest catches up, for a slice's load and the roll-up beside "
            "it (2 M lines: both fit in 96 MB; 64 MB ran out); serve_memory_mb again once it is live."),
    Setting("publish_dir", str, "",
            "The writer: a folder (shared with the replicas, e.g. NFS or synced) into which serve writes each "
            "policy version and its proxy keys' hashes, atomically, for `serve --replica-of`. Empty: none."),
    Setting("replica_of", str, "",
            "Run serve as a read-only replica of the writer whose publish_dir this is: no DuckDB file, no jobs; "
            "/v1/policy, /v1/check and the CrowdSec stream from that folder, reloaded within a second of a "
            "change; admin and statistics routes answer 409 naming the writer."),
    Setting("publish_interval", float, 5.0,
            "Seconds between policy rebuilds in serve (expiries show up within this time)."),
    Setting("keep_days", int, 90,
            "Days of findings and ended decisions (by event time), and of the ingest and detection run log, that "
            "are kept (at least 8: recidive looks back 7 days); `pullwarden prune`, and daily in serve. Frozen "
            "reports and the audit log are kept whole; raw events go by keep_events_days, roll-ups by "
            "keep_rollups_days."),
    Setting("keep_events_days", int, 35,
            "Days of raw events (events, object_events, proxy_events; by event time) that are kept: 35 covers a "
            "month's report and a week of detection windows. Older ones are deleted by `pullwarden prune` and "
            "daily in serve, and only once rolled up: reports, the dashboard and detection read the hourly "
            "roll-ups, kept for keep_rollups_days (so does `stats`)."),
    Setting("keep_rollups_days", int, 400,
            "Days of hourly roll-ups (what the dashboard, the reports and detection read) that are kept: 400 keeps "
            "a year and its month before for comparisons. A month whose roll-ups are gone is served from its "
            "frozen report (serve freezes each month's on the 1st); older ones are deleted by `pullwarden prune` "
            "and daily in serve."),
    Setting("report_timezone", str, "UTC",
            "Time zone (IANA name, e.g. Europe/Berlin) in which the budget's months and days begin: the budget "
            "status, the guard and the monthly report. Days are cut at whole hours (the hourly roll-up)."),
    Setting("price_per_tib", list, [],
            "Cost of egress for the monthly report, tiered: steps [upto_tib, price] of a month's TiB (2^40 bytes), "
            "each TiB priced by the step it falls in, e.g. [[10, 90.0], [50, 80.0], [0, 70.0]] (0: no upper end; "
            "in the environment 10:90,50:80,0:70). Empty: no cost shown."),
    Setting("price_currency", str, "USD", "Currency of price_per_tib, printed next to costs."),
    Setting("budget_webhook", str, "",
            "URL the budget guard POSTs JSON to, once a month per level crossed (50%, 80%, projection over the "
            "budget, 100%). Empty: none."),
    Setting("budget_tighten", bool, False,
            "When the projection crosses the monthly budget, move anonymous traffic to budget_tighten_tier (audited "
            "as budget-guard; restored at the next month). False: simulated, the guard only says what it would do."),
    Setting("budget_tighten_tier", str, "heavy",
            "The tier the budget guard puts anonymous traffic in when it tightens (see budget_tighten)."),
    Setting("budget_check_interval", float, 300.0, "Seconds between budget guard checks in serve."),
)
BY_NAME = {s.name: s for s in SETTINGS}


@dataclass
class Settings:
    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def _coerce(setting: Setting, value: Any, where: str) -> Any:
    if setting.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if setting.type is list and isinstance(value, str):  # from the environment: comma-separated
        items = [v.strip() for v in value.split(",") if v.strip()]
        return [int(v) if v.isdigit() else v for v in items]
    if setting.type is bool and isinstance(value, str):       # from the environment
        if value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            return value.strip().lower() in ("1", "true", "yes", "on")
    if setting.type in (int, float) and isinstance(value, str):
        try:
            return setting.type(value)
        except ValueError:
            raise SettingsError(f"{where}: {setting.name} must be a {setting.type.__name__}, got {value!r}") from None
    if not isinstance(value, setting.type) or isinstance(value, bool) and setting.type is not bool:
        raise SettingsError(f"{where}: {setting.name} must be a {setting.type.__name__}, got {value!r}")
    check = CHECKS.get(setting.name)
    if check:
        try:
            return check(value)
        except ValueError as e:
            raise SettingsError(f"{where}: {setting.name}: {e}") from None
    return value


# Settings whose values reach a proxy's files (nginx's include) are held to the rule the agent
# checks them by: a bad one is refused here, with the file and line, not by every agent later.
CHECKS = {
    "default_registry": values.registry_host,
    "host_registries": lambda m: {values.registry_host(h): values.registry_host(r) for h, r in m.items()},
}


def _line_of(text: str, key: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip().split("=", 1)[0].strip().strip('"') == key:
            return n
    return 1


def load(config: str | None = None, overrides: dict[str, Any] | None = None,
         environ: dict[str, str] | None = None) -> Settings:
    """Resolve every setting. ``overrides`` are command-line values; None means "not given"."""
    environ = os.environ if environ is None else environ
    s = Settings({x.name: x.default for x in SETTINGS}, {x.name: "default" for x in SETTINGS})
    path = Path(config) if config else Path("pullwarden.toml")
    if config and not path.is_file():
        raise SettingsError(f"{path}: config file not found")
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{path}: {e}") from None
        for key, value in data.items():
            where = f"{path}:{_line_of(text, key)}"
            if key not in BY_NAME:
                raise SettingsError(f"{where}: unknown setting {key!r}")
            s.values[key] = _coerce(BY_NAME[key], value, where)
            s.origin[key] = str(path)
    for setting in SETTINGS:
        env = f"PULLWARDEN_{setting.name.upper()}"
        if env in environ:
            raw = environ[env]
            if setting.type is dict:           # a table: JSON in the environment
                try:
                    raw = json.loads(raw)
                except ValueError as e:
                    raise SettingsError(f"environment {env}: not a JSON object: {e}") from None
            s.values[setting.name] = _coerce(setting, raw, f"environment {env}")
            s.origin[setting.name] = env
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in BY_NAME:
            raise SettingsError(f"unknown setting {key!r}")
        s.values[key] = _coerce(BY_NAME[key], value, f"--{key.replace('_', '-')}")
        s.origin[key] = "flag"
    return s
