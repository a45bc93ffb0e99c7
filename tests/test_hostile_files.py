"""Files that are not what they look like: each one is reported once and skipped, the others
are stored, and nothing of pullwarden's own is ever read as a log."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys

from tests.conftest import write

LINE = '198.51.100.{n} - - [20/Nov/2024:10:00:00 +0000] "GET /v2/ HTTP/1.1" 401 {n} "-" "curl/8.5.0" "-"'


def lines(count: int, start: int = 0) -> list[str]:
    return [LINE.format(n=n % 250) for n in range(start, start + count)]


def test_a_gz_cut_short_after_its_first_kib_is_a_per_file_error_when_sniffing(run, workdir):
    """Its first KiB decompresses, the 64 KiB read to sniff the format does not."""
    logs = workdir / "logs"
    write(logs / "access.log", lines(3))
    whole = gzip.compress(("\n".join(lines(2000)) + "\n").encode())
    (logs / "cut.log.2.gz").write_bytes(whole[:600])
    r = run()
    report = r.ingest(logs)
    errors = {os.path.basename(f.path): f.error for f in report.files if f.error}
    assert list(errors) == ["cut.log.2.gz"] and "cannot read" in errors["cut.log.2.gz"]
    assert report.total("events") == 3
    res = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "ingest", str(logs),
                          "--db", str(workdir / "cli.duckdb")], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "cut.log.2.gz" in res.stdout and "events 3" in res.stdout


def test_chunk_copies_beside_a_database_in_the_log_folder_are_never_read(run, workdir):
    """The database kept in the folder that is ingested: a live pass's copies (here one of
    this process, as a second pullwarden on another database file would have them) and a
    killed pass's copies are not logs."""
    write(workdir / "access.log", lines(5))
    live = workdir / ".pullwarden-tmp" / f"pass-{os.getpid()}-live"
    dead = workdir / ".pullwarden-tmp" / "pass-999999999-dead"
    for folder in (live, dead):
        write(folder / "chunk-0.log", lines(7, start=100))
    r = run()
    report = r.ingest(workdir)
    assert [os.path.basename(f.path) for f in report.files] == ["access.log"]
    assert sorted(e["bytes"] for e in r.events()) == list(range(5))
    assert live.exists() and not dead.exists()


def test_a_fifo_named_and_in_its_folder_is_reported_once(run, workdir):
    logs = workdir / "logs"
    write(logs / "access.log", lines(2))
    os.mkfifo(logs / "pipe.log")
    r = run()
    report = r.ingest(logs / "pipe.log", logs)
    assert [(os.path.basename(f.path), bool(f.error)) for f in report.files] == [("pipe.log", True), ("access.log", False)]
    assert report.total("events") == 2
