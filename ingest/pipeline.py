"""One ingest pass: files → chunks → events, rejects and proxy events, one transaction a chunk.

The chunk's events, its rejects, its proxy events and the file's new read offset commit
together, so a pass killed at any point leaves every line stored exactly once after the
next pass. Events carry no line number (numbering rows would force DuckDB to parse on one
core); a chunk that has rejects is parsed a second time, numbered, for those alone.
"""
from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import duckdb

from ingest import formats, forwarded, normalize, objectlogs
from core.geodb import GeoDB
from ingest.enrich import enrich_new
from ingest.sources import (Chunk, FP_LEN, Moved, SourceError, content_tail, discover, fingerprint, is_gzip,
                            pin, read_chunks, read_head, scan, settled, unchanged)

SNIFF_BYTES = 64 * 1024
IN_PLACE_MAX = 8 << 30      # a settled file up to this size is loaded in one transaction
READ_PIECE = 4 << 20        # bytes read, checked and written at a time to make up a chunk (see prefetch)

# Each line is one column: \x01 never occurs in a sanitized chunk, quotes mean nothing.
_READ = ("read_csv($src, delim='\x01', quote='', escape='', header=false, auto_detect=false, "
         f"strict_mode=false, new_line='\\n', max_line_size={formats.MAX_LINE}, buffer_size={4 * formats.MAX_LINE}, columns={{'line': 'varchar'}})")
LINES_FAST = f"select 0::bigint as line_no, line from {_READ}"
LINES_NUMBERED = f"select row_number() over () + $first_line - 1 as line_no, line from {_READ}"


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def scratch_dir(db: str) -> Path:
    """A folder for this pass's chunk copies beside the database (on its disk, not in a small
    /tmp), named with our pid; the folders of passes that died (kill -9) are removed first."""
    base = (Path(db).resolve().parent if db != ":memory:" else Path(tempfile.gettempdir())) / ".pullwarden-tmp"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob("pass-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"pass-{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class FileReport:
    path: str
    format: str
    lines: int = 0
    events: int = 0
    rejects: int = 0
    proxy_events: int = 0
    object_events: int = 0          # of `events`, the rows that went to object_events
    error: str | None = None


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)
    more: bool = False                  # stopped at max_bytes with more to read

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    def as_dict(self) -> dict:
        lines = self.total("lines")
        return {"files": len(self.files), "lines": lines, "events": self.total("events"),
                "rejected": self.total("rejects"), "proxy_events": self.total("proxy_events"),
                "object_events": self.total("object_events"),
                "seconds": round(self.seconds, 3),
                "lines_per_second": round(lines / self.seconds) if self.seconds > 0 else 0,
                "notices": self.notices, "per_file": [asdict(f) for f in self.files]}


class _Woke(Exception):
    """A file read in place changed while it was read, or needs fixing up: copy it instead."""


def shorten_long_lines(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    for n, line in enumerate(lines):
        if len(line) > formats.MAX_LINE:
            lines[n] = formats.OVERLONG + b"%d " % len(line) + line[:1024].replace(b"\x01", b"")
    path.write_bytes(b"\n".join(lines))


def prefetch(chunks: Iterator[Chunk], tmp: Path, size: int = 0, limit: int | None = None
             ) -> Iterator[tuple[Chunk, Path]]:
    """Read and write the next chunk on a thread while DuckDB loads this one (DuckDB lets go
    of the GIL). Three files take turns: one being loaded, one queued, one being written.
    ``size``: pieces are appended to one file until it holds that many bytes, so that a large
    chunk for DuckDB (serve catching up: 128 MiB) passes through Python a small piece at a time
    (a 64 MiB read took four times its size in copies, and held the GIL for each scan).
    ``limit``: no chunk is begun once this many bytes were handed on (a run that stops after
    max_bytes: serve's slices would otherwise read, check and write two chunks ahead for nothing)."""
    box: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item) -> bool:
        """Hand over, unless the consumer has gone (then a blocking put would never return)."""
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        n, group, out, handed = 0, None, None, 0
        try:
            for chunk in chunks:
                if group is None:
                    target = tmp / f"chunk-{n % 3}.log"
                    out, group = open(target, "wb"), Chunk(b"", chunk.end, 0)
                out.write(chunk.data)
                # the group ends where its last piece ends, with that piece's tail
                group.end, group.tail = chunk.end, chunk.tail
                group.lines, group.size = group.lines + chunk.lines, group.size + len(chunk.data)
                chunk.data = b""
                if group.size >= size:
                    out.close()
                    if not put((group, target)):
                        return
                    n, group, handed = n + 1, None, handed + group.size
                    if limit is not None and handed >= limit:
                        break
            if group is not None:
                out.close()
                if not put((group, target)):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            if out is not None:
                out.close()
            put((e, None))
            return
        put((None, None))

    worker = threading.Thread(target=produce, name="pullwarden-read", daemon=True)
    worker.start()
    try:
        while True:
            item, target = box.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item, target
    finally:
        stop.set()
        worker.join()


class IngestError(Exception):
    """Nothing was written: a path, format or database problem found before reading."""


def _format_of(value: str, json_fields: dict) -> formats.Format | objectlogs.ObjectFormat:
    """The format a file was first read with: a name, or the log_format string itself."""
    if value in objectlogs.NAMES:
        return objectlogs.get(value)
    if value in formats.NAMED:
        return formats.get_format(value, json_fields=json_fields)
    return formats.get_format(log_format=value)


def _format_label(fmt) -> str:
    return fmt.name if fmt.name in formats.NAMED or fmt.name in objectlogs.NAMES else fmt.template


def _sample(path: Path) -> list[str]:
    head = read_head(path, SNIFF_BYTES)
    lines = head.decode("utf-8", "backslashreplace").split("\n")
    if len(head) == SNIFF_BYTES:
        lines = lines[:-1]
    return [line for line in lines if line.strip()][:50]


class Ingester:
    def __init__(self, store, settings, progress: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.time, in_place_max: int = IN_PLACE_MAX,
                 max_bytes: int | None = None):
        self.store = store
        self.settings = settings
        self.in_place_max = in_place_max        # serve keeps it small: one transaction per file is fast, not lean
        self.max_bytes = max_bytes              # a run stops after about this much (report.more says so)
        self.progress = progress or (lambda n: None)
        self.clock = clock
        self.forced = None
        if settings.format in objectlogs.NAMES and not settings.log_format:
            self.forced = objectlogs.get(settings.format)
        elif settings.log_format or settings.format != "auto":
            try:
                self.forced = formats.get_format(settings.format, settings.log_format, settings.json_fields)
            except formats.FormatError as e:
                raise IngestError(f"{e}; object-storage logs: {', '.join(objectlogs.NAMES)}") from None
        try:
            self.geo = GeoDB(settings.asn_db, settings.country_db)
        except Exception as e:  # EnrichError carries the file name
            raise IngestError(str(e)) from None
        self.chain = forwarded.Chain(settings.trusted_proxies)
        hosts = settings.host_registries
        self.params = {"hosts": [h.lower() for h in hosts], "host_registries": [hosts[h] for h in hosts],
                       "default_registry": settings.default_registry}
        normalize.install(store, python=False)      # registered when a chunk asks (normalize.NEEDS_PYTHON)
        objectlogs.install(store)

    # -- planning: everything that can fail before a byte is written --------------------------
    def plan(self, patterns: list[str]) -> list[tuple[Path, dict | None, formats.Format]]:
        """What this pass reads. A file that cannot be read (not a regular file, a .gz that is
        not gzip or is cut short before its first lines) is left out and reported by run(),
        with why; the others are read."""
        self.skipped: list[tuple[str, str]] = []
        try:
            paths = discover(patterns, self.skipped)
        except SourceError as e:
            raise IngestError(str(e)) from None
        plan = []
        for path in paths:
            if is_gzip(path) and self._archive_done(path):
                continue
            try:
                head, here = pin(path)
            except SourceError as e:
                self.skipped.append((str(path), str(e).removeprefix(f"{path}: ")))
                continue
            if not head:
                continue
            # (a .gz is checked against the row when it is read: here that would decompress it twice)
            record, _ = self._match(head, path, here, verify=not is_gzip(path))
            if self.forced:
                fmt = self.forced
            elif record:
                fmt = _format_of(record["format"], self.settings.json_fields)
            else:
                try:
                    sample = _sample(path)
                except SourceError as e:    # a .gz whose first KiB is whole but cut short before 64 KiB
                    self.skipped.append((str(path), str(e).removeprefix(f"{path}: ")))
                    continue
                # object-storage logs first: their test is strict, and a proxy format's is a
                # count of lines it parses, which a store's line might pass
                fmt = (objectlogs.sniff(self.store, sample)
                       or formats.sniff(self.store, sample, self.settings.json_fields))
                if fmt is None:
                    raise IngestError(f"{path}: no known format fits its first lines; "
                                      "pass --format or --log-format")
            plan.append((path, record, fmt))
        return plan

    def _archive_done(self, path: Path) -> bool:
        st = path.stat()
        return bool(self.store.value("select count(*) from archives_read where path = ? and size = ? and mtime = ?",
                                     [str(path.resolve()), st.st_size, st.st_mtime]))

    def _match(self, head: bytes, path: Path, here: tuple, verify: bool = True) -> tuple[dict | None, dict | None]:
        """The row of the file whose content ``head`` starts (None for a new file), and a row
        that starts alike but that this file is not the rest of (for a notice), or None.
        ``here``: the (device, inode) the head was read from (sources.pin).

        Same first bytes are not enough: two nodes' logs may start with the same lines. A row
        is this file's when it is the same file (device and inode: a renamed, rotated log), or
        when the file the row knows is no longer what it was (a copytruncate copy: the original
        was emptied), or when this one is a .gz (a compressed copy of a log is that log) — and,
        in each case, when this file repeats the bytes before the row's offset: a look-alike
        that does not would be read from someone else's offset, its first lines lost."""
        cols = ["file_id", "fingerprint", "fp_len", "read_offset", "format", "path", "dev", "inode", "tail_fp"]
        rows = self.store.execute(f"select {', '.join(cols)} from files where fp_len <= ? order by fp_len desc",
                                  [len(head)])
        found = [rec for row in rows if fingerprint(head[:(rec := dict(zip(cols, row)))["fp_len"]]) == rec["fingerprint"]]
        same = [rec for rec in found if (rec["dev"], rec["inode"]) == here]
        moved = [rec for rec in found if rec not in same
                 and (rec["inode"] is None or is_gzip(path) or not self._still_there(rec))]
        for rec in same + moved:
            if not verify or self._continues(rec, path):
                return rec, None
        return None, (same + moved or [None])[0]

    def _continues(self, rec: dict, path: Path) -> bool:
        """Whether ``path`` holds what was read of the row's file: the same bytes before its offset."""
        if rec["tail_fp"] is None:      # a row from before tail_fp: a plain file at least as long
            return is_gzip(path) or rec["read_offset"] <= path.stat().st_size
        tail = content_tail(path, rec["read_offset"])
        return tail is not None and fingerprint(tail) == rec["tail_fp"]

    @staticmethod
    def _identity_now(path: Path) -> tuple | None:
        try:
            return _identity(path)
        except OSError:
            return None

    def _still_there(self, rec: dict) -> bool:
        """Whether the file a row knows is still at its path and still starts as it did."""
        path = Path(rec["path"])
        try:
            head, here = pin(path)
            return here == (rec["dev"], rec["inode"]) and fingerprint(head[:rec["fp_len"]]) == rec["fingerprint"]
        except (OSError, SourceError):
            return False

    # -- reading ---------------------------------------------------------------------------
    def run(self, patterns: list[str], plan: list | None = None) -> IngestReport:
        started = self.clock()
        plan = self.plan(patterns) if plan is None else plan
        report = IngestReport()
        self._notices = report.notices
        for path, why in getattr(self, "skipped", []):
            report.files.append(FileReport(path, "-", error=why))
        if not self.geo.configured:
            report.notices.append("no ASN or country database configured (asn_db, country_db): "
                                  "ASN and country stay empty")
        tmp = scratch_dir(self.store.path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pullwarden-scan")
        try:
            self._read, self._more = 0, False
            for path, _record, fmt in plan:
                if self._more:
                    report.more = True
                    break
                rep = FileReport(str(path), _format_label(fmt) if fmt.name != "custom" else "custom")
                report.files.append(rep)
                try:
                    self._read_file(path, fmt, rep, tmp)
                except Moved:
                    report.more = True      # rotated under us: the next pass reads it by its new name
                except SourceError as e:
                    rep.error = str(e)
            report.more = report.more or self._more
            with self.store.unit():
                enrich_new(self.store, self.geo)
                report.notices += self.geo.problems()
                report.seconds = self.clock() - started
                self.store.execute("""insert into ingest_runs (started_at, seconds, files, lines, events, rejects)
                                      values (?, ?, ?, ?, ?, ?)""",
                                   [datetime.fromtimestamp(started, timezone.utc).replace(tzinfo=None),
                                    report.seconds, len(report.files), report.total("lines"),
                                    report.total("events") - report.total("object_events"),
                                    report.total("rejects")])
        finally:
            self._pool.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
        return report

    def _chunks(self, path: Path, offset: int, tmp: Path, in_place: bool = True,
                expect: tuple | None = None) -> Iterator[tuple[Chunk, Path]]:
        """A settled file is read in place in one go; anything else (a live log, an append,
        a .gz, bytes that need sanitizing) is copied chunk by chunk. ``expect``: the file's
        (device, inode) when it was identified; another file at the path raises Moved."""
        stamp = settled(path, offset, self.clock(), self.in_place_max) if in_place else None
        if stamp and expect is not None and not is_gzip(path) and _identity(path) != tuple(expect):
            raise Moved(f"{path}: rotated while it was read: left for the next pass")
        if stamp:
            # the scan runs beside DuckDB's load; _load_chunk waits for it before deciding
            lines = self._pool.submit(scan, path)
            tail = content_tail(path, stamp[0]) or b""      # a changed file is caught by unchanged()
            yield Chunk(b"", stamp[0], lines, size=stamp[0], in_place=stamp, tail=tail), path
            return
        size = self.settings.chunk_mb << 20
        yield from prefetch(read_chunks(path, offset, min(size, READ_PIECE), now=self.clock(),
                                        expect=None if is_gzip(path) else expect), tmp, size,
                            limit=self.max_bytes - self._read if self.max_bytes else None)

    def _read_file(self, path: Path, fmt, rep: FileReport, tmp: Path, in_place: bool = True) -> None:
        head, here = pin(path)
        now = datetime.fromtimestamp(self.clock(), timezone.utc).replace(tzinfo=None)
        # Match again: a file read earlier in this pass (access.log.1 before access.log.1.gz)
        # may have created or advanced the row that this one shares.
        record, lookalike = self._match(head, path, here)
        # matching reads the bytes before a row's offset by path: a rotation meanwhile compared
        # another file's bytes, and this one would be taken for a new file and read again
        if not is_gzip(path) and self._identity_now(path) != here:
            raise Moved(f"{path}: rotated while it was read: left for the next pass")
        # Never read a look-alike from the other file's offset (its first lines would be lost):
        # it is read from the start, and said so unless it is simply the new log at a rotated path.
        # (An inode alone proves nothing: a deleted file's inode is given to the next new file.)
        if lookalike is not None and lookalike["path"] == str(path):
            if (lookalike["dev"], lookalike["inode"]) == here:
                self._notices.append(f"{path}: no longer holds what was read of it (truncated and written "
                                     "again): read from the start")
        elif lookalike is not None:
            self._notices.append(f"{path}: starts like {lookalike['path']} (read before) but is not the rest "
                                 "of it: read as a file of its own")
        ident = here if not is_gzip(path) else (None, None)
        if record is None:
            file_id = self.store.value("""
                insert into files (path, fingerprint, fp_len, compressed, format, first_seen, last_read, dev, inode,
                                   tail_fp)
                values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) returning file_id""",
                [str(path), fingerprint(head), len(head), is_gzip(path), _format_label(fmt), now, now, *ident,
                 fingerprint(b"")])
            offset = 0
        else:
            file_id, offset = record["file_id"], record["read_offset"]
            # A file that was shorter than FP_LEN when first seen gets its full fingerprint now;
            # the row keeps the plain file's path, where the stream goes on.
            self.store.execute("""update files set fingerprint = ?, fp_len = ?,
                                  path = case when ? then path else ? end,
                                  dev = case when ? then dev else ? end, inode = case when ? then inode else ? end
                                  where file_id = ?""",
                               [fingerprint(head[:FP_LEN]), min(len(head), FP_LEN), is_gzip(path), str(path),
                                is_gzip(path), ident[0], is_gzip(path), ident[1], file_id])
        select = normalize.checked(fmt.select_sql())
        kept = self.store.value("select count(*) from rejects where file_id = ?", [file_id])
        line = self.store.value("select lines from files where file_id = ?", [file_id])
        for chunk, chunk_file in self._chunks(path, offset, tmp, in_place, expect=here):
            try:
                try:
                    counts = self._commit_chunk(path, chunk, str(chunk_file), select, file_id, line, kept, fmt, now)
                except (duckdb.InvalidInputException, duckdb.NotImplementedException):
                    # a line longer than the reader's limit: replace it (in a copy, never in
                    # the operator's file) by a marker that the format SQL rejects with its
                    # length, and load the chunk again
                    if chunk.in_place:
                        raise _Woke() from None
                    shorten_long_lines(chunk_file)
                    counts = self._commit_chunk(path, chunk, str(chunk_file), select, file_id, line, kept, fmt, now)
            except _Woke:
                return self._read_file(path, fmt, rep, tmp, in_place=False)
            kept += counts["kept"]
            line += counts["lines"]
            rep.lines += counts["lines"]
            rep.events += counts["events"]
            rep.rejects += counts["rejects"]
            rep.proxy_events += counts["proxy"]
            rep.object_events += counts["object"]
            self.progress(chunk.size)
            self._read += chunk.size
            if self.max_bytes and self._read >= self.max_bytes:
                self._more = True           # the rest next time, from the offset just committed
                return
        if is_gzip(path):
            st = path.stat()
            self.store.execute("insert into archives_read values (?, ?, ?, ?)",
                               [str(path.resolve()), st.st_size, st.st_mtime, file_id])

    def _commit_chunk(self, path: Path, chunk: Chunk, src: str, select: str, file_id: int, line: int, kept: int,
                      fmt, now: datetime) -> dict:
        """One chunk's rows and the file's new offset, in one unit of work."""
        try:
            return self._commit_once(path, chunk, src, select, file_id, line, kept, fmt, now)
        except duckdb.InvalidInputException as e:
            if not normalize.needs_python(e):
                raise
            normalize.install(self.store, python=True)     # for this chunk and every later one
            return self._commit_once(path, chunk, src, select, file_id, line, kept, fmt, now)

    def _commit_once(self, path: Path, chunk: Chunk, src: str, select: str, file_id: int, line: int, kept: int,
                     fmt, now: datetime) -> dict:
        with self.store.unit():
            counts = self._load_chunk(select, src, file_id, line + 1, chunk.lines, kept, fmt)
            if chunk.in_place and not unchanged(path, chunk.in_place):
                raise _Woke()
            self.store.execute("""
                update files set read_offset = ?, tail_fp = ?, lines = lines + ?, events = events + ?,
                    rejects = rejects + ?, proxy_events = proxy_events + ?, last_read = ?,
                    where file_id = ?""",
                [chunk.end, fingerprint(chunk.tail), counts["lines"], counts["events"], counts["rejects"],
                 counts["proxy"], now, file_id])
        return counts

    def _load_chunk(self, select: str, src: str, file_id: int, first_line: int, lines: int | Future,
                    kept: int, fmt=None) -> dict:
        # seq, the roll-ups' watermark (migration 12), is one number a chunk, taken from the
        # table's sequence: a nextval for every row made the load half as fast again (200,000
        # lines: 1.2-1.4 s -> 1.9-2.0 s), and the roll-ups only need "added after"
        if getattr(fmt, "object_store", False):
            # an object store's rows: the store's remote IP is the client, no X-Forwarded-For
            seq = self.store.value("select nextval('object_event_seq')")
            events = self.store.value(f"""
                insert into object_events by name
                select *, $seq::bigint as seq from (
                    with lines as ({LINES_FAST}), parsed as ({select})
                    {objectlogs.rows_sql('parsed')})""",
                {"src": src, "file_id": file_id, "source": fmt.name, "seq": seq})
        else:
            params = {"src": src, "file_id": file_id, **self._trusted_peers(select, src), **self.params}
            seq = self.store.value("select nextval('event_seq')")
            events = self.store.value(f"""
                insert into events by name
                select *, $seq::bigint as seq from (
                    with lines as ({LINES_FAST}), parsed as ({select})
                    {normalize.events_sql('parsed')})""", {**params, "seq": seq})
        if isinstance(lines, Future):
            lines = lines.result()
            if lines is None:
                raise _Woke()
        counts = {"events": events, "rejects": 0, "proxy": 0, "kept": 0, "lines": lines,
                  "object": events if getattr(fmt, "object_store", False) else 0}
        if events == lines:
            return counts
        self.store.execute(f"""
            create or replace temp table chunk_extra as
            with lines as ({LINES_NUMBERED}), parsed as ({select})
            select line_no, dest, reason, line from parsed where dest <> 'event'""",
            {"src": src, "first_line": first_line})
        counts["rejects"] = self.store.value("select count(*) from chunk_extra where dest = 'reject'")
        counts["proxy"] = self.store.value("""
            insert into proxy_events
            select try_cast(json_extract_string(line, '$.time') as timestamptz)::timestamp,
                   json_extract_string(line, '$.level'), json_extract_string(line, '$.msg'),
                   coalesce(json_extract_string(line, '$.remoteAddr'), json_extract_string(line, '$.remote_addr')),
                   line::json, ?, line_no
            from chunk_extra where dest = 'proxy' and starts_with(line, '{')
            union all
            -- CRProxy v0.12: Go's log, "[cr proxy] 2024/11/20 11:02:07 msg" in the host's local time
            select try_strptime(substr(line, 12, 19), '%Y/%m/%d %H:%M:%S')::timestamp, null,
                   trim(substr(line, 31)), null, to_json(line), ?, line_no
            from chunk_extra where dest = 'proxy' and not starts_with(line, '{')""", [file_id, file_id])
        room = max(0, self.settings.rejects_kept_per_file - kept)
        counts["kept"] = self.store.value("""
            insert into rejects select ?, line_no, reason, line from chunk_extra
            where dest = 'reject' order by line_no limit ?""", [file_id, room])
        self.store.execute("drop table chunk_extra")
        return counts

    def _trusted_peers(self, select: str, src: str) -> dict:
        """For each (peer, X-Forwarded-For) of this chunk whose peer is one of our own proxies,
        the address the line charges (ingest/forwarded.py: the rightmost hop that is not ours;
        a client writes the left end of that header itself). Walked here, over the distinct
        values, rather than per row in SQL; the rows find theirs by a join."""
        out = {"xff_peer": [], "xff": [], "xff_client": []}
        if not self.chain.nets:
            return out
        rows = self.store.execute(f"""
            with lines as ({LINES_FAST}), parsed as ({select})
            select distinct pw_unmap(peer), forwarded_for
            from parsed where dest = 'event' and forwarded_for is not null""", {"src": src})
        for peer, forwarded_for in rows:
            client = self.chain.client(peer, forwarded_for)
            if client != peer:
                out["xff_peer"].append(peer)
                out["xff"].append(forwarded_for)
                out["xff_client"].append(client)
        return out


def waiting(store, patterns: list[str]) -> int:
    """Bytes of the sources that ingest has not read yet: each plain file's size past the offset
    its row has read (a file without a row: all of it), a .gz not yet read whole at its
    compressed size (an underestimate). From stat() and two small queries; nothing is opened."""
    try:
        paths = discover(patterns)
    except SourceError:
        return 0                # the ingest run says why
    read = {(dev, inode): offset for dev, inode, offset in
            store.execute("select dev, inode, read_offset from files where inode is not null")}
    archives = {path for (path,) in store.execute("select path from archives_read")}
    total = 0
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        if is_gzip(path):
            total += 0 if str(path.resolve()) in archives else st.st_size
        else:
            total += max(0, st.st_size - read.get((st.st_dev, st.st_ino), 0))
    return total
