"""Careless or hostile log input: a bad line or a bad file is reported and kept out, the rest
is stored, nothing blocks, nothing is left behind."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time

from tests.conftest import write

GOOD = '198.51.100.7 - - [20/Nov/2024:10:00:00 +0000] "GET /v2/library/nginx/manifests/latest HTTP/1.1" 200 512 "-" "docker/27.3.1"'


def line(addr: str) -> str:
    return GOOD.replace("198.51.100.7", addr, 1)


def test_lines_whose_client_address_is_not_one_are_rejects_with_the_reason(run, workdir):
    bad = ["999.1.1.1", "abc", "1.2.3.4,5.6.7.8", "fe80::1%eth0", "1.2.3", "2001:db8::1::2", "::ffff:1.2.3.999"]
    good = ["203.0.113.9", "2001:db8::1", "::ffff:192.0.2.1", "::"]
    path = write(workdir / "logs" / "access.log", [line(a) for a in bad + good])
    r = run()
    report = r.ingest(path)
    assert report.total("events") == len(good) and report.total("rejects") == len(bad)
    assert sorted(e["client_ip"] for e in r.events()) == sorted(["203.0.113.9", "2001:db8::1", "192.0.2.1", "::"])
    reasons = {line_no: reason for line_no, reason, _ in r.rejects()}
    assert reasons == {n + 1: f"client address {a} is not an IP address" for n, a in enumerate(bad)}


def test_a_gz_that_is_not_gzip_or_cut_short_is_reported_and_the_others_are_stored(run, workdir):
    logs = workdir / "logs"
    write(logs / "access.log", [GOOD])
    (logs / "old.log.2.gz").write_bytes(b"this is not gzip at all\n")
    (logs / "cut.log.3.gz").write_bytes(gzip.compress(("\n".join([GOOD] * 50) + "\n").encode())[:15])
    r = run()
    report = r.ingest(logs)
    errors = {os.path.basename(f.path): f.error for f in report.files if f.error}
    assert set(errors) == {"old.log.2.gz", "cut.log.3.gz"}, errors
    assert all("cannot read" in e for e in errors.values())
    assert report.total("events") == 1                                  # access.log is stored
    res = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "ingest", str(logs)],
                         cwd=workdir, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in res.stderr and "old.log.2.gz" in res.stdout + res.stderr


def test_a_fifo_is_skipped_with_a_line_and_nothing_blocks(workdir):
    logs = workdir / "logs"
    write(logs / "access.log", [GOOD])
    os.mkfifo(logs / "pipe.log")
    for target in (str(logs / "pipe.log"), str(logs)):
        started = time.monotonic()
        res = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "ingest", target],
                             cwd=workdir, capture_output=True, text=True, timeout=60)
        assert time.monotonic() - started < 30
        assert "not a regular file" in res.stdout + res.stderr and "Traceback" not in res.stderr
    assert "events 0" in res.stdout or "events 1" in res.stdout


def test_a_killed_pass_leaves_no_chunk_copies_behind_after_the_next_run(run, workdir):
    stale = workdir / ".pullwarden-tmp" / "pass-999999999-abc"
    stale.mkdir(parents=True)
    (stale / "chunk-1").write_bytes(b"x" * 1000)
    path = write(workdir / "logs" / "access.log", [GOOD])
    r = run()
    assert r.ingest(path).total("events") == 1
    assert not stale.exists()
    assert list((workdir / ".pullwarden-tmp").iterdir()) == []          # ours is gone too


def test_two_files_that_start_alike_are_two_files(run, workdir):
    """Two nodes' logs that begin with the same 2 KiB: every line of both, once, and a re-run adds nothing."""
    common = [GOOD.replace("10:00:00", f"10:00:{n:02d}") for n in range(20)]          # > 2 KiB alike
    assert len("\n".join(common)) > 2048
    a = write(workdir / "logs" / "node-a.log", common + [line(f"203.0.113.{n}") for n in range(1, 40)])
    b = write(workdir / "logs" / "node-b.log", common + [line(f"192.0.2.{n}") for n in range(1, 60)])
    r = run()
    report = r.ingest(workdir / "logs")
    assert report.total("events") == 20 + 39 + 20 + 59
    assert r.store.value("select count(*) from events") == 138
    assert r.ingest(workdir / "logs").total("lines") == 0
    with a.open("a") as f:                                                           # both grow
        f.write(line("203.0.113.99") + "\n")
    with b.open("a") as f:
        f.write(line("192.0.2.99") + "\n")
    assert r.ingest(workdir / "logs").total("events") == 2
    assert r.store.value("select count(distinct file_id) from events") == 2


def test_crproxy_log_as_gorilla_writes_it_with_both_application_logs(run, workdir):
    lines = [
        r'203.0.113.50 - - [20/Nov/2024:08:00:02 +0800] "GET /v2/docker.io/library/x\"y/tags/list HTTP/1.1" 404 19',
        r'203.0.113.50 - - [20/Nov/2024:08:00:03 +0800] "GET /v2/a\\b/manifests/latest HTTP/1.1" 404 19',
        '203.0.113.51 - - [20/Nov/2024:08:00:04 +0800] "GET /v2/docker.io/library/nginx/manifests/1.27 HTTP/2.0" 200 1573',
        '[cr proxy] 2024/11/20 11:02:07 redirect [https://registry-1.docker.io/v2/library/nginx/blobs/sha256:00]',
        '{"time":"2024-12-20T11:02:07.1+08:00","level":"INFO","msg":"exceed limit","remoteAddr":"203.0.113.9"}',
    ]
    path = write(workdir / "crproxy.log", lines)
    r = run(format="clf")
    report = r.ingest(path)
    assert (report.total("events"), report.total("rejects"), report.total("proxy_events")) == (3, 0, 2)
    # the image as the request named it, which is what the proxy checks: gorilla's \" and \\ (nginx's
    # \x22 and \x5C) decoded
    rows = r.store.execute("select repository, kind from events order by ts")
    assert rows[:2] == [('library/x"y', "tags"), ("library/a\\b", "manifest")]
    proxy = r.store.execute("select ts, level, msg, remote_addr from proxy_events order by line_no")
    assert proxy[0][2].startswith("redirect [https://registry-1.docker.io") and proxy[0][0].hour == 11
    assert proxy[1][1:] == ("INFO", "exceed limit", "203.0.113.9")


def test_an_ipv6_client_is_stored_in_one_spelling(run, workdir):
    spellings = {"2001:0DB8::0001": "2001:db8::1", "2001:db8:0:0:0:0:0:1": "2001:db8::1", "2001:db8::1": "2001:db8::1",
                 "::ffff:c000:201": "192.0.2.1", "::FFFF:192.0.2.1": "192.0.2.1", "::ffff:192.0.2.1": "192.0.2.1",
                 "2001:db8:0:1:1:1:1:1": "2001:db8:0:1:1:1:1:1", "fe80::": "fe80::"}
    path = write(workdir / "access.log", [line(a) for a in spellings])
    r = run()
    assert r.ingest(path).total("events") == len(spellings)
    assert sorted(e["client_ip"] for e in r.events()) == sorted(spellings.values())
