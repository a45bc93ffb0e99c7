"""Redirected blobs (issue 13, item 3): a proxy's 307 and the object store's GET are one pull,
counted once, for the client that asked. Logs written here, ingested for real (S3 and OSS
lines from the sample generator's writers), rolled up, and read back through the roll-ups."""
from __future__ import annotations

import importlib.util
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rules.features import compute
from rules.objectjoin import LINK_EXPIRES
from rules.rollup import roll_up
from tests.conftest import write
from tests.test_enrich import build

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("objgen", ROOT / "sample_logs" / "object-storage" / "generate.py")
objgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(objgen)

T0 = datetime(2024, 11, 20, 10, 0, tzinfo=UTC)
UA = "docker/27.3.1 go/go1.22.7 os/linux arch/amd64"
PROXY = ('{ip} - - [{t:%d/%b/%Y:%H:%M:%S +0000}] "GET /v2/docker.io/library/nginx/blobs/sha256:{d} HTTP/1.1" '
         '{status} {n} "-" "{ua}" "-"')
MANIFEST = ('{ip} - - [{t:%d/%b/%Y:%H:%M:%S +0000}] "GET /v2/docker.io/library/nginx/manifests/1.27 HTTP/1.1" '
            '200 1500 "-" "{ua}" "-"')


def digest(n: int) -> str:
    return f"{n:064x}"


def download(t, ip, asker, d, nbytes, *, status=200, size=None):
    return {"ts": t, "ip": ip, "asker": asker, "image": "docker.io/library/nginx", "digest": d,
            "size": size or nbytes, "bytes": nbytes, "status": status, "ua": UA, "method": "GET"}


def rolled(r) -> dict[str, tuple]:
    roll_up(r.store)
    return {ip: (b, o, u) for ip, b, o, u in r.store.execute(
        """select client_ip, sum(bytes), sum(object_bytes), sum(unjoined_bytes) from facts_hourly
           group by all order by 1""")}


@pytest.fixture
def geo(tmp_path):
    return str(build(tmp_path / "asn.mmdb", "GeoLite2-ASN", {
        "198.51.100.0/24": {"autonomous_system_number": 64500, "autonomous_system_organization": "CORP"},
        "198.51.101.0/24": {"autonomous_system_number": 64500, "autonomous_system_organization": "CORP"},
        "2001:db8:1::/48": {"autonomous_system_number": 64500, "autonomous_system_organization": "CORP"},
        "203.0.113.0/24": {"autonomous_system_number": 64510, "autonomous_system_organization": "RESELL-CLOUD"},
        "192.0.2.0/24": {"autonomous_system_number": 64520, "autonomous_system_organization": "CUSTOMERS"},
    }))


def test_a_redirected_blob_counts_its_object_bytes_once_for_the_client_that_asked(run, workdir):
    rng = random.Random(1)
    t = T0
    proxy = write(workdir / "proxy" / "access.log", [
        MANIFEST.format(ip="198.51.100.7", t=t, ua=UA),
        PROXY.format(ip="198.51.100.7", t=t + timedelta(seconds=1), d=digest(1), status=307, n=312, ua=UA),
        PROXY.format(ip="198.51.100.8", t=t + timedelta(seconds=2), d=digest(2), status=307, n=298, ua=UA),
        PROXY.format(ip="198.51.100.9", t=t + timedelta(seconds=3), d=digest(3), status=200, n=7000, ua=UA),
    ])
    rows = [download(t + timedelta(seconds=2), "198.51.100.7", "198.51.100.7", digest(1), 40_000_000),
            # two Range requests for one blob: both parts are the asker's
            download(t + timedelta(seconds=3), "198.51.100.8", "198.51.100.8", digest(2), 6_000_000,
                     status=206, size=10_000_000),
            download(t + timedelta(seconds=4), "198.51.100.8", "198.51.100.8", digest(2), 4_000_000,
                     status=206, size=10_000_000)]
    store_log = write(workdir / "s3" / "mirror-blobs-logs" / "2024-11-20-10-00-00-AAAA",
                      objgen.s3_lines(rng, rows, damaged=False))
    r = run()
    r.ingest(proxy, store_log)
    got = rolled(r)
    # the redirect's 312 bytes are not served bytes: the manifest's 1500 and the object's bytes are
    assert got["198.51.100.7"] == (1500 + 40_000_000, 40_000_000, 0)
    assert got["198.51.100.8"] == (10_000_000, 10_000_000, 0)
    assert got["198.51.100.9"] == (7000, 0, 0)                  # a blob the proxy served itself
    # the 307s were the requests: the downloads add bytes, not requests or blob GETs
    assert r.store.execute("""select client_ip, sum(requests), sum(blob_gets), sum(s3xx) from facts_hourly
                              group by all order by 1""") == [
        ("198.51.100.7", 2, 1, 1), ("198.51.100.8", 1, 1, 1), ("198.51.100.9", 1, 1, 0)]
    # one download of each blob, with its real bytes
    assert r.store.execute("select client_ip, sum(downloads), sum(bytes) from blob_hourly group by all order by 1") == [
        ("198.51.100.7", 1, 40_000_000), ("198.51.100.8", 1, 10_000_000), ("198.51.100.9", 1, 7000)]
    assert roll_up(r.store) == 0
    assert rolled(r) == got                                    # a second pass adds nothing


def test_without_a_referer_the_307_for_the_same_blob_just_before_is_the_request(run, workdir):
    rng = random.Random(2)
    t = T0
    proxy = write(workdir / "proxy" / "access.log", [
        # another client asked for the same blob a moment earlier: the downloader's own 307 wins
        PROXY.format(ip="198.51.100.20", t=t, d=digest(5), status=307, n=300, ua="containerd/v1.7.22"),
        PROXY.format(ip="198.51.100.21", t=t + timedelta(seconds=30), d=digest(5), status=307, n=300, ua=UA),
        # asked from one address, fetched from another, no referer: the nearest 307 for the blob
        PROXY.format(ip="198.51.100.30", t=t + timedelta(seconds=60), d=digest(6), status=307, n=300, ua=UA),
        # a 307 older than a signed URL's life is not this download's
        PROXY.format(ip="198.51.100.40", t=t, d=digest(7), status=307, n=300, ua=UA),
    ])
    rows = [download(t + timedelta(seconds=40), "198.51.100.20", "x", digest(5), 1_000_000),
            download(t + timedelta(seconds=65), "198.51.100.31", "x", digest(6), 2_000_000),
            download(t + timedelta(seconds=LINK_EXPIRES + 5), "198.51.100.40", "x", digest(7), 3_000_000)]
    lines = [line.replace("&referer=x", "") for line in objgen.s3_lines(rng, rows, damaged=False)]
    assert all("referer" not in line for line in lines)
    r = run()
    r.ingest(proxy, write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-BBBB", lines))
    got = rolled(r)
    assert got["198.51.100.20"] == (1_000_000, 1_000_000, 0)
    assert got["198.51.100.21"] == (0, 0, 0)
    assert got["198.51.100.30"] == (2_000_000, 2_000_000, 0)
    assert "198.51.100.31" not in got
    # too late for the 307: the downloading address, unjoined, and it is the request itself
    assert got["198.51.100.40"] == (3_000_000, 3_000_000, 3_000_000)
    assert r.store.execute("select sum(requests) from facts_hourly where client_ip = '198.51.100.40'") == [(2,)]
    # no referer, no evidence of relaying against the client whose 307 was matched by time alone
    assert r.store.execute("select count(*) from relay_hourly") == [(0,)]


def test_a_record_the_store_delivers_twice_or_a_log_read_twice_counts_once(run, workdir):
    rng = random.Random(3)
    rows = [download(T0 + timedelta(seconds=k), "198.51.100.7", "198.51.100.7", digest(k), 1_000_000 + k)
            for k in range(5)]
    lines = objgen.oss_lines(rng, rows, damaged=False)
    first = write(workdir / "oss" / "MyLog-mirror-blobs2024-11-20-10-00-00-0001", lines)
    again = write(workdir / "oss" / "MyLog-mirror-blobs2024-11-20-10-00-00-0002", lines[1:3])
    r = run()
    r.ingest(first)
    r.ingest(first)                                            # the same file: nothing new
    r.ingest(again)                                            # the same records in another object
    assert r.store.value("select count(*) from object_events") == 7
    want = sum(d["bytes"] for d in rows)
    assert rolled(r)["198.51.100.7"] == (want, want, 0)        # no 307s ingested: the referer says who


def test_links_handed_on_to_another_network_are_relays_the_same_network_is_not(run, workdir, geo):
    rng = random.Random(4)
    t = T0
    asks, rows = [], []
    cases = [("203.0.113.5", [f"192.0.2.{k}" for k in range(10, 22)]),     # reseller → customers, other ASN
             ("198.51.100.50", ["2001:db8:1::50"] * 12),                     # its IPv4 asks, its IPv6 downloads
             ("198.51.100.60", ["198.51.101.60"] * 12)]                      # split egress, another /24, same ASN
    n = 0
    for asker, fetchers in cases:
        for fetcher in fetchers:
            n += 1
            asks.append(PROXY.format(ip=asker, t=t + timedelta(seconds=n), d=digest(100 + n), status=307, n=300,
                                     ua=UA))
            rows.append(download(t + timedelta(seconds=n + 2), fetcher, asker, digest(100 + n), 5_000_000))
    r = run(asn_db=geo)
    r.ingest(write(workdir / "proxy" / "access.log", asks),
             write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-CCCC", objgen.s3_lines(rng, rows, damaged=False)))
    got = rolled(r)
    assert got["203.0.113.5"] == (60_000_000, 60_000_000, 0)  # counted for the asker, not its customers
    assert not any(ip.startswith("192.0.2.") for ip in got)
    feats = {f["entity"]: f for f in compute(r.store, "address", "24h", T0.replace(tzinfo=None) + timedelta(hours=1))}
    assert (feats["203.0.113.5"]["relay_downloads"], feats["203.0.113.5"]["relay_addresses"]) == (12, 12)
    assert feats["203.0.113.5"]["relay_bytes"] == 60_000_000
    assert feats["198.51.100.50"]["relay_downloads"] == 0
    assert feats["198.51.100.60"]["relay_downloads"] == 0
