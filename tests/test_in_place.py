"""Settled files are loaded in place (no copy); anything odd falls back to the sanitizing copy
and the result is the same."""
from __future__ import annotations

import time

import pytest

from ingest import pipeline
from tests.conftest import write

LINE = '198.51.100.{n} - - [20/Nov/2024:10:00:{n:02d} +0000] "GET /v2/ HTTP/1.1" 401 {n} "-" "curl/8.5.0" "-"'
LATER = lambda: time.time() + 60          # noqa: E731 - a clock at which every file here is settled


@pytest.fixture
def loads(monkeypatch):
    """Record whether each chunk was read in place or from a copy."""
    seen = []
    real = pipeline.Ingester._load_chunk

    def spy(self, select, src, *args):
        seen.append("copy" if "pullwarden-" in src else "in place")
        return real(self, select, src, *args)
    monkeypatch.setattr(pipeline.Ingester, "_load_chunk", spy)
    return seen


def test_settled_file_is_read_in_place(run, workdir, loads):
    log = write(workdir / "a.log", [LINE.format(n=n) for n in range(50)])
    r = run()
    report = r.ingest(log, clock=LATER)
    assert loads == ["in place"]
    assert report.total("lines") == report.total("events") == 50
    assert sorted(e["bytes"] for e in r.events()) == list(range(50))
    assert r.ingest(log, clock=LATER).total("lines") == 0


def test_a_settled_file_over_the_in_place_limit_is_read_in_chunks(run, workdir, loads):
    log = write(workdir / "a.log", [LINE.format(n=n) for n in range(50)])
    r = run(chunk_mb=1)
    report = r.ingest(log, clock=LATER, in_place_max=1000)        # as serve does, with its small chunks
    assert loads == ["copy"] and report.total("events") == 50


@pytest.mark.parametrize("damage, rejects", [
    (lambda b: b.replace(b"\n", b"\r\n"), 0),                              # CRLF
    (lambda b: b.replace(b"curl/8.5.0", b"curl/8.5.0 \xff", 1), 0),         # invalid UTF-8
    (lambda b: b.replace(b"curl/8.5.0", b"c\x01url", 1), 0),                # the reader's delimiter
    (lambda b: b[:-1], 0),                                                  # no final newline
    (lambda b: b.replace(b"curl/8.5.0", b"x" * 3_000_000, 1), 1),           # a line over the limit
])
def test_odd_bytes_take_the_copy_and_lose_nothing(run, workdir, loads, damage, rejects):
    log = workdir / "a.log"
    log.write_bytes(damage(write(workdir / "a.log", [LINE.format(n=n) for n in range(20)]).read_bytes()))
    r = run(format="main")
    report = r.ingest(log, clock=LATER)
    assert loads[-1] == "copy"
    assert report.total("lines") == 20
    assert report.total("events") == 20 - rejects and report.total("rejects") == rejects
    assert sorted(e["bytes"] for e in r.events()) == [n for n in range(20) if n >= rejects]


def test_a_file_that_changes_while_read_is_read_again_by_copy(run, workdir, loads, monkeypatch):
    log = write(workdir / "a.log", [LINE.format(n=n) for n in range(30)])
    calls = []

    def woke_once(path, stamp):
        calls.append(path)
        return len(calls) > 1
    monkeypatch.setattr(pipeline, "unchanged", woke_once)
    r = run()
    report = r.ingest(log, clock=LATER)
    assert loads == ["in place", "copy"]
    assert report.total("lines") == report.total("events") == 30
    assert r.store.value("select count(*) from events") == 30       # the first load was rolled back
    assert r.store.value("select lines from files") == 30
