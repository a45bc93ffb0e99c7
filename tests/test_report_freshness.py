"""A careless sequence (issue 19 §9): `pullwarden ingest LOG`, then at once `pullwarden report
monthly`. The report reads the roll-ups; the command brings them up to date first, and a month
with no traffic at all is said to be empty instead of written as a report of zeros."""
from __future__ import annotations

import json

from click.testing import CliRunner

from cli.main import cli

BLOB = "sha256:" + "b" * 64
GIB = 1 << 30


def pull(day: int, ip: str, size: int) -> str:
    return (f'{ip} - - [{day:02d}/Nov/2026:09:30:00 +0000] "GET /v2/docker.io/library/nginx/blobs/{BLOB} HTTP/1.1" '
            f'200 {size} "-" "containerd/v1.7.22"')


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_a_report_right_after_ingest_counts_what_was_ingested(workdir):
    sizes = [(d, f"198.51.100.{d}", d * 3 * GIB) for d in range(1, 29)]
    (workdir / "access.log").write_text("".join(pull(*s) + "\n" for s in sizes))
    assert run("ingest", str(workdir / "access.log")).exit_code == 0
    res = run("report", "monthly", "--month", "2026-11", "--out", str(workdir / "out"), "--json")
    assert res.exit_code == 0, res.output
    fig = json.loads(res.stdout)
    assert fig["total_bytes"] == sum(s[2] for s in sizes) and fig["requests"] == len(sizes)
    written = json.loads((workdir / "out" / "pullwarden-report-2026-11.json").read_text())
    assert written["total_bytes"] == fig["total_bytes"]


def test_a_month_with_no_traffic_is_said_to_be_empty_not_reported_as_zero(workdir):
    (workdir / "access.log").write_text(pull(3, "198.51.100.3", GIB) + "\n")
    assert run("ingest", str(workdir / "access.log")).exit_code == 0
    res = run("report", "monthly", "--month", "2026-09", "--out", str(workdir / "out"))
    assert res.exit_code == 2
    assert "2026-09 (UTC): no traffic in the store for this month" in res.stderr
    assert "from 2026-11-03 to 2026-11-03" in res.stderr
    assert not (workdir / "out").exists()
