"""The DuckDB store: one connection, one ``execute()``, one schema plus numbered migrations.

DuckDB lets one process write a file and, while it does, no other process may open it;
``open_store`` turns that lock conflict into a plain sentence with the holder's pid.
"""
from __future__ import annotations

import logging
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import duckdb

log = logging.getLogger("pullwarden.sql")


class StoreBusy(Exception):
    """Another process holds the DuckDB file."""


class StoreError(Exception):
    """The DuckDB file cannot be used: not a database, damaged, a directory, unreachable. The
    message names the file and says what to do."""


def _unusable(path: str, e: Exception) -> StoreError:
    text = str(e).removeprefix("IO Error: ")
    hint = ("restore it from a backup, or move it away and let pullwarden start a new one"
            if Path(path).is_file() else "give --db a file path (PULLWARDEN_DB, or `db` in pullwarden.toml)")
    return StoreError(f"{path}: cannot use it as the database: {text} ({hint})")


# Version 1 of the schema; never edit it, add a migration.
# Times are UTC without a zone (TIMESTAMP): every stage works in event time, and UTC keeps
# the hour buckets of rollups unambiguous across daylight-saving changes.
SCHEMA = """
create table if not exists schema_version (version integer not null);

create sequence if not exists file_ids start 1;

-- One row per log file ever seen, keyed by a fingerprint of its first bytes, not its name:
-- a renamed (rotated) file keeps its row, a truncated one gets a new row.
create table if not exists files (
    file_id integer primary key default nextval('file_ids'),
    path varchar not null,            -- where it was last seen
    fingerprint varchar not null,     -- sha256 of the first fp_len bytes of its content
    fp_len integer not null,
    compressed boolean not null,
    format varchar not null,
    read_offset bigint not null default 0,   -- bytes of (decompressed) content consumed
    lines bigint not null default 0,
    events bigint not null default 0,
    rejects bigint not null default 0,
    proxy_events bigint not null default 0,
    first_seen timestamp not null,
    last_read timestamp not null
);

-- A compressed file read to its end, by path, size and mtime: never opened again. Its lines
-- count in the files row of the stream it belongs to (a .gz of access.log shares its row).
create table if not exists archives_read (
    path varchar not null,
    size bigint not null,
    mtime double not null,
    file_id integer not null
);

-- One row per request. client_ip is the effective client: the direct peer, or the first
-- X-Forwarded-For hop when the peer is a trusted proxy.
create table if not exists events (
    ts timestamp not null,
    client_ip varchar not null,
    peer_ip varchar not null,
    forwarded_for varchar,
    remote_user varchar,
    method varchar,
    status smallint,
    bytes bigint,
    request_time double,
    user_agent varchar,
    host varchar,
    cache_status varchar,
    registry varchar,
    repository varchar,
    kind varchar not null,         -- manifest blob tags referrers catalog token ping upload other
    reference varchar,             -- tag or digest of a manifest request
    digest varchar,                -- blob digest
    uri varchar,                   -- request target, scrubbed; kept only for kinds other than manifest/blob/tags/referrers
    location varchar,              -- redirect target (scrubbed), when logged
    file_id integer not null       -- events carry no line number: numbering rows would serialize the parse
);

create table if not exists rejects (
    file_id integer not null,
    line_no bigint not null,
    reason varchar not null,
    line varchar
);

-- The proxy's own application log (CRProxy's slog JSON) arriving on the access-log stream.
create table if not exists proxy_events (
    ts timestamp,
    level varchar,
    msg varchar,
    remote_addr varchar,
    attrs json,
    file_id integer not null,
    line_no bigint not null
);

create table if not exists user_agents (
    user_agent varchar primary key,
    family varchar not null,
    version varchar,
    upstream_client varchar
);

create table if not exists ip_info (
    ip varchar primary key,
    asn integer,
    as_org varchar,
    country varchar
);

create sequence if not exists run_ids start 1;
create table if not exists ingest_runs (
    run_id integer primary key default nextval('run_ids'),
    started_at timestamp not null,
    seconds double not null,
    files integer not null,
    lines bigint not null,
    events bigint not null,
    rejects bigint not null
);
"""

# Numbered migrations: MIGRATIONS[n] upgrades a database at version n + 1 to n + 2.
MIGRATIONS: list[str] = [
    # 1 → 2: detection. Rollups are append-only partial aggregates of the events after a
    # watermark (events' rowid until migration 12, their seq since; the column keeps its name):
    # exact, incremental, and re-aggregated by the feature queries.
    """
    create table rollup_state (name varchar primary key, last_rowid bigint not null);

    create table facts_hourly (
        hour timestamp not null, client_ip varchar not null, user_agent varchar, remote_user varchar,
        registry varchar, repository varchar,
        requests bigint, manifest_gets bigint, manifest_heads bigint, blob_gets bigint,
        bytes bigint, blob_bytes bigint,
        s2xx bigint, s3xx bigint, s401 bigint, s403 bigint, s404 bigint, s429 bigint, s5xx bigint,
        catalog bigint, tags bigint, with_xff bigint
    );
    -- blob: hash(digest). Grouping 64-bit numbers instead of 71-character digests makes this,
    -- the largest rollup, about three times cheaper; features only need to tell blobs apart.
    create table blob_hourly (
        hour timestamp not null, client_ip varchar not null, remote_user varchar, blob ubigint not null,
        downloads bigint, bytes bigint
    );
    create table xff_hourly (
        hour timestamp not null, client_ip varchar not null, remote_user varchar, forwarded_for varchar not null,
        requests bigint
    );
    -- /24 of an IPv4 address, /64 of an IPv6 one
    create table ip_prefix (ip varchar primary key, prefix varchar not null);

    create sequence decision_ids start 1;
    create sequence decision_seq start 1;
    create table decisions (
        id bigint primary key default nextval('decision_ids'),
        seq bigint not null,                 -- bumped on every change, for pollers' deltas
        scope varchar not null,              -- ip range asn user
        value varchar not null,
        effect varchar not null,             -- ban throttle boost
        tier varchar,
        rule varchar,
        origin varchar not null,             -- rule manual import
        reason varchar not null,
        evidence json,
        created_at timestamp not null,
        until timestamp not null,
        revoked_at timestamp,
        simulated boolean not null default false
    );

    create table allowlist (
        kind varchar not null,               -- ip cidr asn user
        value varchar not null,
        reason varchar not null,
        created_at timestamp not null,
        until timestamp,
        primary key (kind, value)
    );

    -- What the rules found in each detection pass, enforced or not (tags and simulated rules too).
    create table findings (
        now timestamp not null, rule varchar not null, entity_kind varchar not null, entity varchar not null,
        window_name varchar not null, action varchar not null, simulated boolean not null,
        reason varchar not null, evidence json
    );

    create table detect_runs (
        now timestamp not null, ran_at timestamp not null, seconds double not null,
        findings integer not null, decisions integer not null, held varchar
    );
    """,
    # 2 → 3: enforcement. Policy snapshots are numbered and immutable; keys are stored as hashes.
    """
    create table tiers (
        name varchar primary key,
        requests_per_minute integer,         -- null: no limit
        concurrent integer,
        blob_bytes_per_second bigint,
        window_bytes bigint,
        window_seconds integer
    );
    insert into tiers values
        ('anonymous', 20, 10, 1048576, 1073741824, 7200),
        ('authenticated', 60, 20, 5242880, 10737418240, 7200),
        ('throttled', 5, 2, 262144, 268435456, 7200),
        ('heavy', 10, 4, 524288, 2147483648, 7200),
        ('unlimited', null, null, null, null, null);

    create table image_lists (
        list varchar not null,               -- allowed unlimited blocked
        pattern varchar not null,            -- CRProxy's: * one path segment, ** any depth
        reason varchar,
        added_at timestamp not null,
        primary key (list, pattern)
    );

    create table kv (key varchar primary key, value varchar not null);
    insert into kv values ('anonymous_tier', 'anonymous'), ('authenticated_tier', 'authenticated'),
                          ('monthly_budget_tib', '100');

    create sequence key_ids start 1;
    create table api_keys (
        id integer primary key default nextval('key_ids'),
        name varchar not null unique,
        role varchar not null,               -- proxy viewer admin
        key_hash varchar not null unique,    -- sha256 of the key; the key itself is shown once
        created_at timestamp not null,
        revoked_at timestamp
    );

    create table audit (
        ts timestamp not null, actor varchar not null, action varchar not null, target varchar,
        details json, reason varchar
    );

    -- each version's difference from the one before, so pollers get deltas across restarts
    create table policy_versions (
        version bigint primary key, generated_at timestamp not null, digest varchar not null, delta json not null
    );

    -- the latest version's whole content, so that after a restart the next version's
    -- difference is computed from it (a bouncer must still hear of what changed meanwhile)
    create table policy_latest (version bigint not null, content json not null);

    -- a CrowdSec bouncer's place in the policy history, per key
    create table bouncer_cursors (key_id integer primary key, version bigint not null, polled_at timestamp not null);
    """,
    # 3 → 4: the published bans and assignments as rows, changed by each version's difference,
    # so that a rebuild only looks at what changed and policy_latest keeps the small sections.
    """
    create table policy_entries (
        section varchar not null,            -- bans assignments
        key varchar not null,                -- scope:value
        id bigint not null, scope varchar not null, value varchar not null, until timestamp not null,
        reason varchar not null, rule varchar not null, effect varchar, tier varchar
    );
    """,
    # 4 → 5: held decisions and tier bursts.
    # A rule whose new bans in one pass exceed the circuit breaker's share has them written
    # with `held` set to the breaker's reason: kept and shown, never enforced, until an admin
    # approves (held back to null) or drops (revoked) them.
    # Tiers gain nginx's `burst` (requests taken at once above the rate); the stock tiers
    # move to limits that an ordinary pull never meets (README, "Tiers"), unless an operator
    # already changed them. Concurrent 192 (authenticated 384), not 48 (96): a Kubernetes node
    # pulling its 30 images at once after a restart keeps up to 85 blob downloads in flight with
    # containerd (3 per image) and 154 with CRI-O (6 per image); tests/test_tiers.py measured 67
    # and 101 through nginx, and 48 refused both nodes with 429.
    """
    alter table decisions add column held varchar;
    alter table tiers add column burst integer;
    update tiers set requests_per_minute = 300, burst = 600, concurrent = 192, blob_bytes_per_second = null,
                     window_bytes = 21474836480, window_seconds = 7200
      where name = 'anonymous' and requests_per_minute = 20 and concurrent = 10 and blob_bytes_per_second = 1048576
        and window_bytes = 1073741824 and window_seconds = 7200;
    update tiers set requests_per_minute = 600, burst = 1200, concurrent = 384, blob_bytes_per_second = null,
                     window_bytes = 107374182400, window_seconds = 7200
      where name = 'authenticated' and requests_per_minute = 60 and concurrent = 20
        and blob_bytes_per_second = 5242880 and window_bytes = 10737418240 and window_seconds = 7200;
    update tiers set requests_per_minute = 30, burst = 60, concurrent = 4, blob_bytes_per_second = 1048576,
                     window_bytes = 2147483648, window_seconds = 7200
      where name = 'throttled' and requests_per_minute = 5 and concurrent = 2 and blob_bytes_per_second = 262144
        and window_bytes = 268435456 and window_seconds = 7200;
    update tiers set requests_per_minute = 120, burst = 240, concurrent = 16, blob_bytes_per_second = 8388608,
                     window_bytes = 8589934592, window_seconds = 7200
      where name = 'heavy' and requests_per_minute = 10 and concurrent = 4 and blob_bytes_per_second = 524288
        and window_bytes = 2147483648 and window_seconds = 7200;
    """,
    # 5 → 6: a log file is known by its first bytes *and* the file they are in (device, inode):
    # two nodes' logs that start with the same lines are two files. Rows from before have none
    # and are matched by their bytes alone until they are read again.
    """
    alter table files add column dev bigint;
    alter table files add column inode bigint;
    """,
    # 6 → 7: the first bytes and the inode do not tell a .gz, or a file whose look-alike is gone,
    # from the rest of a file read before: tail_fp (sha256 of the up to 4 KiB of content before
    # read_offset) must be repeated by a file for reading to go on there. Null for rows from
    # before, which keep being matched without it.
    """
    alter table files add column tail_fp varchar;
    """,
    # 7 → 8: frozen monthly reports. A closed month's report is kept in the database, not in files
    # beside it: it travels with the file it was computed from (backups, copies), and while serve
    # holds the file the API serves it from here. Every output is kept as rendered, so a later
    # run gives the same bytes; inputs_sha256 tells whether the store still gives the same figures.
    """
    create table reports (
        month varchar not null,              -- YYYY-MM
        timezone varchar not null,           -- the report_timezone the month was cut in
        inputs_sha256 varchar not null,
        frozen_at timestamp not null,        -- kept here only, never inside the outputs
        json varchar not null, csv varchar not null, html varchar not null, pdf blob not null,
        primary key (month, timezone)
    );
    """,
    # 8 → 9: a finding is recorded once per episode, not once per pass. A pass that finds what an
    # earlier pass found for the same rule and entity, within the rule's window of it, updates
    # that row (last_seen, passes, the newest numbers); with passes every minute a day-long
    # storm was 1,440 rows of the same finding. `now` stays the time it was first found.
    """
    alter table findings add column last_seen timestamp;
    alter table findings add column passes integer default 1;
    update findings set last_seen = now, passes = 1;
    """,
    # 9 → 10: object-storage access logs (S3, OSS, Cloudflare Logpush), one row per request to
    # the store. Kept apart from events: a redirect-mode mirror's blob is a 307 in events and a
    # download here, and what counts once is decided when the two are joined, not by ingest.
    """
    create table object_events (
        ts timestamp not null,
        client_ip varchar not null,          -- the address that downloaded (the store's remote IP)
        source varchar not null,             -- the format: s3 oss logpush
        bucket varchar,
        operation varchar,                   -- REST.GET.OBJECT, GetObject; null in Logpush
        method varchar,
        status smallint,
        bytes bigint,                        -- body bytes sent
        object_size bigint,
        object_key varchar,                  -- URL-decoded
        registry varchar,                    -- from the referer's image, else the key's layout
        repository varchar,
        digest varchar,                      -- sha256:… of a blob (or manifest revision) key
        requester_ip varchar,                -- the signed URL's referer=<client-ip>:<host>/<image>
        requester_image varchar,             -- <host>/<image> from that referer
        user_agent varchar,
        host varchar,
        uri varchar,                         -- request target, signatures and credentials scrubbed
        referer varchar,                     -- the Referer header, scrubbed
        request_id varchar,                  -- the store's request id (Logpush: RayID)
        file_id integer not null
    );
    """,
    # 10 → 11: redirected blobs joined to the requests that asked for them (rules/objectjoin.py).
    # An object-store download is rolled up under the client that asked (not the address that
    # fetched the signed URL), once; the hour's object-store bytes and the part of them that
    # could not be joined to a request are kept apart so reports can say how much is which.
    # relay_hourly: downloads of a client's signed URLs from outside its /24 or /64.
    """
    alter table facts_hourly add column object_bytes bigint default 0;
    alter table facts_hourly add column unjoined_bytes bigint default 0;
    create table relay_hourly (
        hour timestamp not null, client_ip varchar not null, remote_user varchar, download_ip varchar not null,
        downloads bigint, bytes bigint
    );
    """,
    # 11 → 12: raw events are deleted after keep_events_days (core/retention.py), so the roll-ups'
    # watermark can no longer be DuckDB's rowid: a checkpoint after a delete merges thinned row
    # groups and renumbers the rows after them (2,000,000 events, 90% deleted: the largest rowid
    # fell from 1,999,999 to 1,549,999), and the next events would get rowids under the
    # watermark and never be rolled up. seq is given at insert by a sequence and never changes.
    # Rows from before keep their rowid as seq (rollup_state.last_rowid already counts in
    # those), and each sequence is moved past the largest of them.
    """
    create sequence event_seq start 1;
    alter table events add column seq bigint;
    update events set seq = rowid;
    select max(nextval('event_seq')) from range((select coalesce(max(rowid) + 1, 0) from events));
    alter table events alter column seq set default nextval('event_seq');

    create sequence object_event_seq start 1;
    alter table object_events add column seq bigint;
    update object_events set seq = rowid;
    select max(nextval('object_event_seq')) from range((select coalesce(max(rowid) + 1, 0) from object_events));
    alter table object_events alter column seq set default nextval('object_event_seq');
    """,
    # 12 → 13: enrichment's watermarks (ingest/enrich.py). Every ingest run looked up the user
    # agents and addresses of all events that user_agents / ip_info lacked: a scan of the whole
    # history every few seconds under serve (15 M events at 64 MB: about 2 s a run, and out of
    # memory as it grew). Now only the events after each watermark (their seq) are read.
    # name: '<what> <table>', what being user_agents or addresses. No row: from the start.
    # ip_retry: addresses a damaged database failed on; they have no ip_info row and are looked
    # up again by the next run with a database configured.
    """
    create table enrich_state (name varchar primary key, seq bigint not null);
    create table ip_retry (ip varchar primary key);
    """,
    # 13 → 14: redirected blobs, exact per client (issue 24; rules/objectjoin.py). A store's log
    # also holds the mirror's own calls — CRProxy's storage driver Stats every blob before a
    # redirect, a ListObjects (max-keys=1) on S3, OBS and OSS — and reads made with other
    # credentials (an operator's backup job), which no 307 handed out. requester (S3 Requester,
    # OSS Requester Aliyun ID) and auth_type (S3: AuthHeader or QueryString) tell them apart.
    # store_calls_hourly: the store's requests that are no client's download, kept visible.
    # exact_bytes / timed_bytes: of a client's object bytes, those joined by the signed URL's
    # referer or the downloader's own 307, and those matched by blob and time alone (an
    # estimate: S3 links carry no referer). Rows rolled up before this version have neither.
    """
    alter table object_events add column requester varchar;
    alter table object_events add column auth_type varchar;
    alter table facts_hourly add column exact_bytes bigint default 0;
    alter table facts_hourly add column timed_bytes bigint default 0;
    create table store_calls_hourly (
        hour timestamp not null, source varchar not null, bucket varchar, client_ip varchar not null,
        requester varchar, operation varchar, calls bigint, bytes bigint
    );
    """,
    # 14 → 15: which passes were full. The circuit breaker of a full pass counts the bans that
    # serve's fresh passes made since the previous full pass (rules/detect.py last_full_pass);
    # a restarted serve reads that pass's time here, where it knew it only in memory before.
    # kind: 'full' or 'fresh'; rows from before this version have none, and do not count.
    """
    alter table detect_runs add column kind varchar;
    """,
    # 15 → 16: a narrower event row (issue 22). peer_ip is stored only when it is not the client
    # (the peer is a trusted proxy and the client an X-Forwarded-For hop); null means the peer is
    # client_ip. It repeated client_ip on nearly every row: writing it cost 0.15 CPU s of the
    # 1.4 a million rows take to insert. Readers take coalesce(peer_ip, client_ip); rows from
    # before keep theirs, which reads the same.
    """
    alter table events alter column peer_ip drop not null;
    """,
]
VERSION = 1 + len(MIGRATIONS)


def is_fatal(e: BaseException) -> bool:
    """DuckDB has invalidated the database (a failed checkpoint or WAL write, an internal error):
    every later statement fails the same way, and only opening the file again recovers."""
    return (isinstance(e, (duckdb.FatalException, duckdb.InternalException))
            or "database has been invalidated" in str(e))


class DiskFull(duckdb.OutOfMemoryException):
    """DuckDB's temporary files found no room on their disk. An OutOfMemoryException still, so
    what retries with more memory or answers 503 for one keeps doing so."""


def _temp_full(e: BaseException) -> bool:
    # DuckDB fixes max_temp_directory_size when the database opens (90% of the disk's free space
    # then) and says "Out of Memory" when its temporary files reach it
    return isinstance(e, duckdb.OutOfMemoryException) and "max_temp_directory_size" in str(e)


class Store:
    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, on_fatal=None):
        self.con = con
        self.path = path
        # called once with the first error that invalidated the database (serve exits on it)
        self.on_fatal = on_fatal
        self._depth = 0         # units of work open on this connection (see unit())

    def _failed(self, e: BaseException) -> BaseException:
        """What to raise for DuckDB's error ``e``: itself, or a plainer one."""
        if self.on_fatal is not None and is_fatal(e):
            self.on_fatal(e)
        if _temp_full(e) and not isinstance(e, DiskFull):
            return self._disk_full()
        return e

    def _disk_full(self) -> DiskFull:
        """Read the disk's free space again (DuckDB took it once, when the file was opened: a disk
        full then kept every later spill failing however much was freed since), and say what
        happened and where."""
        cur = self.con.cursor()
        try:
            temp = cur.execute("select current_setting('temp_directory')").fetchall()[0][0] or f"{self.path}.tmp"
            cur.execute("reset max_temp_directory_size")
            limit = cur.execute("select current_setting('max_temp_directory_size')").fetchall()[0][0]
        except duckdb.Error:
            temp, limit = f"{self.path}.tmp", "unknown"
        finally:
            cur.close()
        where = Path(temp).resolve()
        probe = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(probe).free >> 20
        return DiskFull(f"disk full: DuckDB's temporary files in {where} found no room ({free} MB free there now; "
                        f"its limit is read again: {limit}); free space on that disk, then try again")

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[tuple]:
        """Run one statement (or a script) with bound parameters and fetch its rows: a
        fetched result leaves the connection free for the next call."""
        start = time.perf_counter()
        try:
            return self.con.execute(sql, params or []).fetchall()
        except duckdb.Error as e:
            if (err := self._failed(e)) is not e:
                raise err from e
            raise
        finally:
            log.debug("%.3fs %s", time.perf_counter() - start, " ".join(sql.split())[:200])

    def records(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict]:
        """Rows as dicts keyed by column name (for JSON answers)."""
        start = time.perf_counter()
        try:
            cur = self.con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
        except duckdb.Error as e:
            if (err := self._failed(e)) is not e:
                raise err from e
            raise
        finally:
            log.debug("%.3fs %s", time.perf_counter() - start, " ".join(sql.split())[:200])

    def batches(self, sql: str, params: Sequence[Any] | dict | None = None, size: int = 5000):
        """Rows a batch at a time, on this connection (its temporary tables, its open
        transaction): a large result is never held as Python objects all at once. Consume it
        before the next call."""
        try:
            result = self.con.execute(sql, params or [])
            while rows := result.fetchmany(size):
                yield rows
        except duckdb.Error as e:
            if (err := self._failed(e)) is not e:
                raise err from e
            raise

    @contextmanager
    def unit(self):
        """One unit of work: a transaction, committed when the block ends and rolled back when
        anything in it raises (a DuckDB error, a bug, a stop), so the connection is never left
        in "Current transaction is aborted" for the next job or request. A unit inside another
        is part of it: the outer one commits or rolls back."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.execute("begin")
        self._depth = 1
        try:
            yield self
            self.execute("commit")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        try:
            self.con.execute("rollback")
        except duckdb.Error as e:
            # a failed commit has already ended the transaction ("no transaction is active");
            # an invalidated database cannot roll back at all, and says so through on_fatal
            self._failed(e)

    @contextmanager
    def reading(self):
        """This store over a connection of its own, for reads without the caller taking the
        store's lock: it sees what is committed (DuckDB's MVCC) and does not wait for a job's
        long write, so the API's lookups and statistics stay quick during an ingest run."""
        cur = self.con.cursor()
        try:
            cur.execute("set TimeZone = 'UTC'")        # a session setting: not inherited
            yield Store(cur, self.path, self.on_fatal)
        finally:
            cur.close()

    def value(self, sql: str, params: Sequence[Any] | dict | None = None) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.con.close()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_store(path: str, read_only: bool = False) -> Store:
    if path != ":memory:":
        if Path(path).is_dir():
            raise _unusable(path, IsADirectoryError("it is a directory"))
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _unusable(path, OSError(f"cannot create its folder: {e.strerror}")) from None
    try:
        con = duckdb.connect(path, read_only=read_only and Path(path).exists())
    except duckdb.IOException as e:
        pid = re.search(r"PID (\d+)", str(e))
        if "lock" in str(e).lower():
            who = f" (pid {pid.group(1)})" if pid else ""
            raise StoreBusy(f"{path} is held by another pullwarden process{who}; "
                            "stop it or go through its API") from None
        raise _unusable(path, e) from None
    except duckdb.Error as e:
        raise _unusable(path, e) from None
    store = Store(con, path)
    try:
        con.execute("set TimeZone = 'UTC'")
        # DuckDB's own progress bar writes to stdout during a long load: it would break --json
        con.execute("set enable_progress_bar = false")
        if not read_only:
            migrate(store)
        else:
            store.value("select count(*) from information_schema.tables")
    except duckdb.IOException as e:        # a damaged file can open and fail at its first read
        con.close()
        raise _unusable(path, e) from None
    return store


def migrate(store: Store) -> None:
    """SCHEMA is version 1 and stays frozen; every later change is a numbered migration."""
    exists = store.value("select count(*) from information_schema.tables where table_name = 'schema_version'")
    if not exists:
        # a new database: the schema and every migration in one transaction, one commit rather
        # than one a version (each commit waits for the disk: 0.15-0.2 s to create a database)
        with store.unit():
            store.execute(SCHEMA)
            for sql in MIGRATIONS:
                store.execute(sql)
            store.execute("insert into schema_version values (?)", [VERSION])
        return
    current = store.value("select max(version) from schema_version")
    if current > VERSION:
        raise RuntimeError(f"{store.path} has schema version {current}, newer than this pullwarden ({VERSION})")
    for n in range(current - 1, len(MIGRATIONS)):
        with store.unit():
            store.execute(MIGRATIONS[n])
            store.execute("update schema_version set version = ?", [n + 2])
