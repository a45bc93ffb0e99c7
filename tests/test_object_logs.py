"""Object-storage access logs (issue 13): S3, Aliyun OSS and Cloudflare Logpush lines go to
object_events, never to events; sniffed per file; signatures never stored; exactly once.

The parser case folders tests/cases/{s3-access,oss-access,logpush-json} are walked by
tests/test_parser_cases.py for format, rejects and line accounting; here their
`object_events` rows are checked. Golden files for the committed samples, as
tests/test_samples.py does for proxy logs:
    UPDATE_GOLDEN=1 python -m pytest tests/test_object_logs.py
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from ingest import formats, normalize, objectlogs
from tests.test_samples import dump

ROOT = Path(__file__).resolve().parents[1]
CASES = Path(__file__).parent / "cases"
SAMPLES = ROOT / "sample_logs" / "object-storage"
GOLDEN = Path(__file__).parent / "golden"
OBJECT_CASES = sorted(p.name for p in CASES.iterdir() if (p / "expected.json").exists()
                      and "object_events" in json.loads((p / "expected.json").read_text()))
SAMPLE_FILES = {"s3": next((SAMPLES / "s3").rglob("2024-*")), "oss": next((SAMPLES / "oss").glob("MyLog-*")),
                "logpush": next((SAMPLES / "logpush").glob("2024*"))}
COLUMNS = ["ts", "client_ip", "source", "bucket", "operation", "method", "status", "bytes", "object_size",
           "object_key", "registry", "repository", "digest", "requester_ip", "requester_image", "user_agent",
           "host", "uri", "referer", "request_id"]


def object_rows(r) -> list[dict]:
    rows = r.store.execute(f"select {', '.join(COLUMNS)} from object_events order by ts, client_ip, bytes")
    return [dict(zip(COLUMNS, row)) for row in rows]


def everything(r) -> str:
    """Every stored value of the tables a line can reach."""
    return json.dumps([[str(v) for v in row] for table in ("object_events", "events", "rejects", "proxy_events")
                       for row in r.store.execute(f"select * from {table}")])


def test_the_object_cases_are_there():
    assert OBJECT_CASES == ["logpush-json", "oss-access", "s3-access"]


@pytest.mark.parametrize("case", OBJECT_CASES)
def test_object_case(case, run):
    folder = CASES / case
    expected = json.loads((folder / "expected.json").read_text())
    r = run()
    report = r.ingest(folder / "input.log")
    assert report.files[0].format == expected["format"]
    got = object_rows(r)
    assert len(got) == len(expected["object_events"]), got
    for row, want in zip(got, expected["object_events"]):
        for key, value in want.items():
            plain = row[key].isoformat(sep=" ") if isinstance(row[key], datetime) else row[key]
            assert plain == value, (key, row)
    assert r.store.value("select count(*) from events") == 0          # today's figures do not change
    assert report.total("object_events") == len(got)
    stored = everything(r)
    for secret in expected["absent"]:
        assert secret not in stored, secret
    # the rejected lines are kept, scrubbed, with their line numbers
    assert [n for n, _, _ in r.rejects()] == [n for n, _ in expected["rejects"]]


@pytest.mark.parametrize("name", list(SAMPLE_FILES))
def test_sample_parses_as_recorded(name, run):
    r = run()
    report = r.ingest(SAMPLE_FILES[name])
    assert report.files[0].format == name
    snap = {"columns": COLUMNS,
            "object_events": [[v if isinstance(v, (int, float, str)) or v is None else str(v) for v in row.values()]
                              for row in object_rows(r)],
            "rejects": [list(row) for row in r.rejects()]}
    golden = GOLDEN / f"object-storage__{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(dump(snap))
    assert snap == json.loads(golden.read_text())
    assert report.total("lines") == len(snap["object_events"]) + len(snap["rejects"])
    assert "[scrubbed]" in everything(r) and "Signature=[scrubbed]" in everything(r)


def test_the_three_stores_agree_on_the_bytes(run):
    """The samples log the same downloads three ways: the same bytes, requesters and digests."""
    totals = {}
    for name, path in SAMPLE_FILES.items():
        r = run(db=f"{name}.duckdb")
        r.ingest(path)
        totals[name] = r.store.execute("""
            select sum(bytes) filter (where method = 'GET'), count(distinct digest),
                   count(*) filter (where requester_ip <> client_ip) from object_events""")[0]
    assert totals["s3"] == totals["oss"] == totals["logpush"]
    assert totals["s3"][2] == 3                 # the relayed links


def test_auto_picks_each_format_per_file(run, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, path in SAMPLE_FILES.items():
        (folder / f"{name}.log").write_bytes(path.read_bytes())
    (folder / "access.log").write_bytes((ROOT / "sample_logs" / "nginx-main" / "access.log").read_bytes())
    r = run()
    report = r.ingest(folder)
    assert {Path(f.path).stem: f.format for f in report.files} == {
        "s3": "s3", "oss": "oss", "logpush": "logpush", "access": "main"}
    assert r.store.value("select count(*) from events") == report.files[0].events   # access.log sorts first


@pytest.mark.parametrize("sample", ["nginx-main/access.log", "nginx-combined/access.log.1", "crproxy/crproxy.log",
                                    "nginx-json/access.json", "custom-format/access.txt"])
def test_proxy_logs_are_never_taken_for_object_logs(sample, run):
    r = run()
    normalize.install(r.store)
    objectlogs.install(r.store)
    lines = [x for x in (ROOT / "sample_logs" / sample).read_text().splitlines() if x.strip()][:200]
    assert objectlogs.sniff(r.store, lines) is None
    counts = r.store.execute(f"""
        with lines as (select unnest($s::varchar[]) as line)
        select {', '.join(f'count(*) filter (where coalesce({c}, false))' for c in objectlogs._SNIFF.values())}
        from lines""", {"s": lines})[0]
    assert counts == (0, 0, 0)           # not one line, not only a minority


def test_object_logs_are_not_taken_for_proxy_logs(run):
    """Forced past the object sniffer, the proxy sniffer finds nothing in the S3 sample, so a
    store's log can only ever be read as what it is."""
    r = run()
    normalize.install(r.store)
    lines = SAMPLE_FILES["s3"].read_text().splitlines()
    assert formats.sniff(r.store, lines) is None


def test_forced_format_and_exactly_once(run):
    r = run(format="s3")
    first = r.ingest(SAMPLE_FILES["s3"])
    again = r.ingest(SAMPLE_FILES["s3"])
    assert first.total("object_events") == 25 and first.total("rejects") == 1
    assert again.total("lines") == again.total("object_events") == again.total("rejects") == 0
    assert r.store.value("select count(*) from object_events") == 25
    assert r.store.value("select count(*) from rejects") == 1
    assert r.store.value("select format from files") == "s3"
    # the run's `events` are the events table's: an object-only run adds none there
    assert r.store.value("select sum(events) from ingest_runs") == 0


def test_appended_lines_are_read_once(run, tmp_path):
    lines = SAMPLE_FILES["oss"].read_text().splitlines(keepends=True)
    log = tmp_path / "oss-live.log"
    log.write_text("".join(lines[:10]))
    r = run()
    assert r.ingest(log).total("lines") == 10
    with log.open("a") as f:
        f.write("".join(lines[10:]))
    assert r.ingest(log).total("lines") == len(lines) - 10
    assert r.ingest(log).total("lines") == 0
    assert r.store.value("select count(*) from object_events") + r.store.value("select count(*) from rejects") == len(lines)


def test_a_malformed_line_is_a_reject_with_file_and_line(run):
    r = run()
    r.ingest(SAMPLE_FILES["logpush"])
    rows = r.store.execute("""select f.path, r.line_no, r.reason from rejects r join files f using (file_id)""")
    assert rows == [(str(SAMPLE_FILES["logpush"]), 4, "not a JSON object")]


def test_unknown_format_names_the_object_formats(run):
    from ingest.pipeline import Ingester, IngestError
    r = run(format="gcs")
    with pytest.raises(IngestError, match="object-storage logs: s3, oss, logpush"):
        Ingester(r.store, r.cfg)


@pytest.mark.parametrize("referer, ip, image, registry, repository", [
    ("203.0.113.7:docker.io/library/nginx", "203.0.113.7", "docker.io/library/nginx", "docker.io", "library/nginx"),
    ("203.0.113.7:docker.io/busybox", "203.0.113.7", "docker.io/busybox", "docker.io", "library/busybox"),
    ("2001:db8::1:docker.io/library/nginx", "2001:db8::1", "docker.io/library/nginx", "docker.io", "library/nginx"),
    ("[2001:DB8::1]:ghcr.io/a/b", "2001:db8::1", "ghcr.io/a/b", "ghcr.io", "a/b"),
    ("10.0.0.1:registry.local:5000/team/app", "10.0.0.1", "registry.local:5000/team/app", "registry.local:5000", "team/app"),
    ("::ffff:198.51.100.4:quay.io/x/y", "198.51.100.4", "quay.io/x/y", "quay.io", "x/y"),
    # CRProxy writes r.RemoteAddr: with --behind (gorilla ProxyHeaders) the bare address, without it
    # Go's host:port, the IPv6 one bracketed (net.JoinHostPort)
    ("203.0.113.7:51234:docker.io/library/nginx", "203.0.113.7", "docker.io/library/nginx", "docker.io",
     "library/nginx"),
    ("[2001:db8::1]:51234:ghcr.io/a/b", "2001:db8::1", "ghcr.io/a/b", "ghcr.io", "a/b"),
    ("2001:db8::1234:docker.io/library/nginx", "2001:db8::1234", "docker.io/library/nginx", "docker.io",
     "library/nginx"),
    ("999.1.1.1:docker.io/library/nginx", None, "docker.io/library/nginx", "docker.io", "library/nginx"),
    ("nonsense", None, None, None, None),
])
def test_the_signed_urls_referer(referer, ip, image, registry, repository, run, tmp_path):
    """CRProxy's referer=<client-ip>:<host>/<image>: the address as pullwarden spells it (an
    address that is not one is dropped, never guessed), the image as registry/repository."""
    from urllib.parse import quote
    line = json.dumps({"ClientIP": "192.0.2.1", "EdgeStartTimestamp": "2024-11-20T10:00:00Z",
                       "ClientRequestMethod": "GET", "EdgeResponseStatus": 200, "EdgeResponseBytes": 5,
                       "ClientRequestURI": f"/b/data?X-Amz-Signature=abc&referer={quote(referer, safe='')}"})
    log = tmp_path / "r.json"
    log.write_text(line + "\n")
    r = run()
    r.ingest(log)
    row = object_rows(r)[0]
    assert (row["requester_ip"], row["requester_image"], row["registry"], row["repository"]) == (
        ip, image, registry, repository)
    assert row["uri"] == f"/b/data?X-Amz-Signature=[scrubbed]&referer={quote(referer, safe='')}"
