"""Files that start alike are told apart by what follows: a file is the rest of one read before
only when it repeats the bytes before that one's offset. Whatever the order they are met in
(plain or .gz, side by side, one after the other, rotated), every line of each is stored once."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

PROBE = '10.9.9.9 - - [20/Nov/2024:00:00:{s:02d} +0000] "GET /v2/ HTTP/1.1" 200 0 "-" "kube-probe/1.31" "-"'
LINE = '{ip} - - [20/Nov/2024:00:01:00 +0000] "GET /v2/library/nginx/manifests/{n} HTTP/1.1" 200 {n} "-" "containerd/v1.7.22" "-"'


def probes() -> str:
    """The same first lines in every node's log: a load balancer's health checks."""
    text = "".join(PROBE.format(s=s) + "\n" for s in range(30))
    assert len(text) > 2048
    return text


def lines(ip: str, start: int, stop: int) -> str:
    return "".join(LINE.format(ip=ip, n=n) + "\n" for n in range(start, stop))


def node(n: int, start: int, stop: int) -> str:
    return probes() + lines(f"192.0.2.{n}", start, stop)


def gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


def stored(r) -> dict:
    """Requests per client: the probes and each node's own lines."""
    return dict(r.store.execute("select client_ip, count(*) from events group by 1"))


def test_two_nodes_compressed_logs_that_start_alike(run, workdir):
    logs = workdir / "logs"
    logs.mkdir()
    gz(logs / "node-a.log.2.gz", node(1, 0, 40))
    gz(logs / "node-b.log.2.gz", node(2, 40, 100))
    r = run()
    assert r.ingest(logs).total("lines") == 30 + 40 + 30 + 60
    assert stored(r) == {"10.9.9.9": 60, "192.0.2.1": 40, "192.0.2.2": 60}
    assert r.ingest(logs).total("lines") == 0


@pytest.mark.parametrize("order", ["plain first", "gz first"])
def test_one_nodes_log_and_anothers_archive_that_start_alike(run, workdir, order):
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    (workdir / "a" / "access.log").write_text(node(1, 0, 40))
    gz(workdir / "b" / "access.log.1.gz", node(2, 40, 100))
    folders = [workdir / "a", workdir / "b"]
    r = run()
    r.ingest(*(folders if order == "plain first" else folders[::-1]))
    assert stored(r) == {"10.9.9.9": 60, "192.0.2.1": 40, "192.0.2.2": 60}
    assert r.ingest(*folders).total("lines") == 0


def test_a_look_alike_of_a_file_that_is_gone_is_read_whole_and_said_so(run, workdir):
    a = workdir / "node-a.log"
    a.write_text(node(1, 0, 40))
    r = run()
    r.ingest(a)
    a.unlink()
    b = workdir / "node-b.log"
    b.write_text(node(2, 40, 100))
    report = r.ingest(b)
    assert report.total("lines") == 90
    assert any("node-b.log: starts like" in n and "node-a.log" in n for n in report.notices), report.notices
    assert stored(r) == {"10.9.9.9": 60, "192.0.2.1": 40, "192.0.2.2": 60}


def test_rotation_when_the_new_log_starts_like_the_old_one(run, workdir):
    logs = workdir / "logs"
    logs.mkdir()
    log = logs / "access.log"
    log.write_text(node(1, 0, 40))
    r = run()
    r.ingest(logs)
    with log.open("a") as f:                       # written after the last run, before logrotate
        f.write(lines("192.0.2.1", 40, 45))
    log.rename(logs / "access.log.1")
    log.write_text(node(2, 100, 160))
    report = r.ingest(logs)
    assert report.total("lines") == 5 + 90 and report.notices[1:] == []
    assert stored(r) == {"10.9.9.9": 60, "192.0.2.1": 45, "192.0.2.2": 60}
    with log.open("a") as f:
        f.write(lines("192.0.2.2", 160, 170))
    assert r.ingest(logs).total("lines") == 10
    assert sorted(n for (n,) in r.store.execute("select bytes from events where bytes > 0")) == \
        list(range(1, 45)) + list(range(100, 170))


def test_a_file_written_again_from_the_same_first_lines_is_read_from_the_start(run, workdir):
    """Truncated and written again (or replaced in place) with the same first lines and more
    than was read before: the old offset is not where its new lines start."""
    log = workdir / "access.log"
    log.write_text(node(1, 0, 10))
    r = run()
    r.ingest(log)
    inode = os.stat(log).st_ino
    with log.open("r+") as f:
        f.truncate(0)
        f.write(node(2, 100, 160))
    assert os.stat(log).st_ino == inode
    report = r.ingest(log)
    assert report.total("lines") == 90
    assert any("no longer holds what was read of it" in n for n in report.notices), report.notices
    assert stored(r) == {"10.9.9.9": 60, "192.0.2.1": 10, "192.0.2.2": 60}
    assert r.ingest(log).total("lines") == 0


def test_a_row_from_before_the_tail_check_still_resumes(run, workdir):
    """A database upgraded from schema 6 has no tail_fp: appends are read from its offset."""
    log = workdir / "access.log"
    log.write_text(node(1, 0, 10))
    r = run()
    r.ingest(log)
    r.store.execute("update files set tail_fp = null")
    with log.open("a") as f:
        f.write(lines("192.0.2.1", 10, 15))
    assert r.ingest(log).total("lines") == 5
    assert r.store.value("select tail_fp is not null from files")       # filled in by the read
    assert stored(r) == {"10.9.9.9": 30, "192.0.2.1": 15}


@pytest.mark.parametrize("when", ["after it is identified", "before it is identified", "while it is matched"])
def test_numbered_rotation_in_the_middle_of_a_pass_stores_every_line_once(run, workdir, monkeypatch, when):
    """logrotate's numbered rotation renames every file at once (access.log -> .1 -> .2). Done
    while a pass goes from file to file, a path holds another file than the one planned there,
    or than the one identified a moment before: each file must still be read from its own
    offset, under whatever name it has when it is read."""
    from ingest.pipeline import Ingester
    folder = workdir / "logs"
    folder.mkdir()
    log = folder / "access.log"
    log.write_text(lines("192.0.2.1", 0, 40))
    (folder / "access.log.1").write_text(lines("192.0.2.2", 0, 50))
    r = run()
    r.ingest(folder)                                            # both read: 40 + 50
    log.write_text(log.read_text() + lines("192.0.2.1", 40, 60))   # the live log grows by 20

    def rotate():
        os.rename(folder / "access.log.1", folder / "access.log.2")
        os.rename(log, folder / "access.log.1")
        log.write_text(lines("192.0.2.3", 0, 100))                 # a new live log, longer than the old offset
    rotated, calls = [], []
    real = Ingester._match

    def match(self, head, path, here, verify=True):
        # the first call for access.log is the plan's, the second the read's, its first bytes
        # just taken
        calls.append(path.name)
        reading = path.name == "access.log" and calls.count("access.log") == 2
        if when == "before it is identified" and reading:
            rotated.append(path)
            rotate()
        found = real(self, head, path, here, verify)
        if when == "after it is identified" and reading:
            rotated.append(path)
            rotate()
        return found
    monkeypatch.setattr(Ingester, "_match", match)
    real_continues = Ingester._continues

    def continues(self, rec, path):
        # between the file's first bytes (taken from the open file) and the bytes before the
        # row's offset (read by path)
        if when == "while it is matched" and path.name == "access.log" and calls.count("access.log") == 2 \
                and not rotated:
            rotated.append(path)
            rotate()
        return real_continues(self, rec, path)
    monkeypatch.setattr(Ingester, "_continues", continues)
    first = r.ingest(folder)
    assert rotated
    r.ingest(folder)                                            # the next pass reads what was left
    r.ingest(folder)
    assert stored(r) == {"192.0.2.1": 60, "192.0.2.2": 50, "192.0.2.3": 100}, first
    # one row a file: a second row for a file (the same first bytes and inode) read from 0
    # would store it again, as soon as it came first in the match
    assert r.store.value("""select count(*) from (select fingerprint, inode from files
                            group by all having count(*) > 1)""") == 0
