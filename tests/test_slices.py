"""serve reads a backlog in slices (Ingester max_bytes): each run stops after about that many
bytes, says there is more, and the next run goes on from there; every line lands once."""
from __future__ import annotations

import gzip
import time

import pytest

from tests.conftest import write

LINE = ('198.51.100.{a} - - [20/Nov/2024:10:{m:02d}:{s:02d} +0000] "GET /v2/library/nginx/manifests/{n} HTTP/1.1" '
        '200 {n} "-" "docker/24.0.7 go/go1.20.10" "-"')
LATER = lambda: time.time() + 60          # noqa: E731 - every file here is settled


@pytest.mark.parametrize("gz", [False, True])
def test_a_backlog_read_in_slices_lands_once(run, workdir, gz):
    lines = [LINE.format(a=n % 200, m=n // 60 % 60, s=n % 60, n=n) for n in range(30_000)]   # ~3.5 MB
    log = write(workdir / "access.log", lines)
    if gz:
        gzipped = workdir / "access.log.1.gz"
        gzipped.write_bytes(gzip.compress(log.read_bytes()))
        log.unlink()
        log = gzipped
    r = run(chunk_mb=1)
    runs = []
    while True:
        report = r.ingest(log, clock=LATER, in_place_max=1 << 20, max_bytes=1 << 20)
        runs.append(report.total("lines"))
        if not report.more:
            break
        assert len(runs) < 10
    assert len(runs) >= 3 and sum(runs) == 30_000
    assert sorted(b for (b,) in r.store.execute("select bytes from events")) == list(range(30_000))
    again = r.ingest(log, clock=LATER, in_place_max=1 << 20, max_bytes=1 << 20)
    assert again.total("lines") == 0 and not again.more
