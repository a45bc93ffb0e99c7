"""Redirected blobs (issue 13, item 3): a proxy's 307 and the object store's GET are one pull,
counted once, for the client that asked. Logs written here, ingested for real (S3 and OSS
lines from the sample generator's writers), rolled up, and read back through the roll-ups."""
from __future__ import annotations

import importlib.util
import random
import re
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


def test_a_record_delivered_twice_in_one_log_object_counts_once(run, workdir):
    """Both copies arrive in one chunk, which shares one seq: told apart by the row itself."""
    rng = random.Random(6)
    rows = [download(T0 + timedelta(seconds=k), "198.51.100.7", "198.51.100.7", digest(k), 1_000_000 + k)
            for k in range(3)]
    lines = objgen.oss_lines(rng, rows, damaged=False)
    r = run()
    r.ingest(write(workdir / "oss" / "MyLog-mirror-blobs2024-11-20-10-00-00-0001", lines + lines[:1]))
    assert r.store.value("select count(distinct seq) from object_events") == 1
    want = sum(d["bytes"] for d in rows)
    assert rolled(r)["198.51.100.7"] == (want, want, 0)


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


# ---- issue 24: the mirror's own calls, other credentials, S3 without a referer, link lifetimes

MIRROR = "10.20.0.5"
CRPROXY = "arn:aws:iam::123456789012:user/crproxy"
BACKUP = "arn:aws:iam::123456789012:user/backup"


def stat(t, d, nbytes=512):
    """CRProxy's storage driver Stat-ing a blob before its redirect: ListObjects(prefix, max-keys=1)."""
    return {"ts": t, "ip": MIRROR, "asker": None, "image": "docker.io/library/nginx", "digest": d, "size": 0,
            "bytes": nbytes, "status": 200, "ua": "aws-sdk-go/1.44.327", "method": "LIST", "requester": CRPROXY}


def s3(rows, rng, referer: bool = True) -> list[str]:
    """S3 lines; without ``referer`` as AWS S3 writes them for CRProxy (distribution's s3-aws driver
    presigns a plain GetObject)."""
    lines = objgen.s3_lines(rng, [{"requester": CRPROXY, **d} if d["method"] == "GET" and not d.get("unsigned")
                                  else d for d in rows], damaged=False)
    if not referer:
        lines = [re.sub(r"&referer=[^& ]*", "", x) for x in lines]
        assert all("referer" not in x for x in lines)
    return lines


def test_the_mirror_s_listing_before_each_redirect_is_no_download_and_no_client(run, workdir):
    rng = random.Random(24)
    asks, rows = [], []
    for k in range(20):
        t = T0 + timedelta(seconds=10 * k)
        asks.append(PROXY.format(ip="198.51.100.7", t=t, d=digest(k), status=307, n=300, ua=UA))
        rows += [stat(t, digest(k)), download(t + timedelta(seconds=2), "198.51.100.7", "198.51.100.7", digest(k),
                                              1_000_000)]
    r = run()
    r.ingest(write(workdir / "proxy" / "access.log", asks),
             write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-DDDD", s3(rows, rng)))
    assert r.store.value("select count(*) from object_events where operation = 'REST.GET.BUCKET'") == 20
    got = rolled(r)
    assert MIRROR not in got                                   # the mirror is no client
    assert got["198.51.100.7"] == (20_000_000, 20_000_000, 0)  # not a byte of the listings
    # the 307s were the requests: the listings add none
    assert r.store.value("select sum(requests) from facts_hourly") == 20
    # the mirror's calls, counted where one can see them
    assert r.store.execute("select client_ip, requester, operation, sum(calls), sum(bytes) from store_calls_hourly "
                           "group by all") == [(MIRROR, CRPROXY, "REST.GET.BUCKET", 20, 20 * 512)]


def test_reads_with_the_operator_s_own_key_are_its_own_never_a_client_s(run, workdir):
    """A backup job reads blobs with its own access key (AuthHeader, no signature in the URI, another
    requester) a minute after clients' 307s for them: no 307 handed those reads out."""
    rng = random.Random(25)
    asks, rows = [], []
    for k in range(5):
        t = T0 + timedelta(seconds=30 * k)
        asks.append(PROXY.format(ip="198.51.100.8", t=t, d=digest(40 + k), status=307, n=300, ua=UA))
        rows += [stat(t, digest(40 + k)),
                 download(t + timedelta(seconds=1), "198.51.100.8", None, digest(40 + k), 2_000_000),
                 {**download(t + timedelta(seconds=60), "10.20.0.9", None, digest(40 + k), 7_000_000),
                  "unsigned": True, "requester": BACKUP, "ua": "rclone/v1.68.1"}]
    # the mirror reading a blob with its own key (it served that one itself: the proxy's 200 has the bytes)
    rows.append({**download(T0 + timedelta(seconds=200), MIRROR, None, digest(40), 2_000_000), "unsigned": True,
                 "requester": CRPROXY, "ua": "aws-sdk-go/1.44.327"})
    r = run()
    r.ingest(write(workdir / "proxy" / "access.log", asks),
             write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-EEEE", s3(rows, rng, referer=False)))
    got = rolled(r)
    assert got["198.51.100.8"] == (10_000_000, 10_000_000, 0)
    assert got["10.20.0.9"] == (35_000_000, 35_000_000, 35_000_000)    # its own, unjoined
    assert MIRROR not in got
    assert r.store.execute("""select sum(requests) from facts_hourly where client_ip = '10.20.0.9'""") == [(5,)]
    assert r.store.execute("select operation, sum(calls) from store_calls_hourly group by all order by 1") == [
        ("REST.GET.BUCKET", 5), ("REST.GET.OBJECT", 1)]


def test_s3_without_a_referer_joins_late_relay_fetches_within_the_link_s_life(run, workdir, geo):
    """AWS S3 links carry no referer: the join is by blob and time. A reseller's customers fetch its
    links up to 19 minutes later (CRProxy's links live 20); another client asks for the same blob in
    between and fetches it itself at once."""
    rng = random.Random(26)
    asks, rows = [], []
    for k in range(6):
        t = T0 + timedelta(minutes=3 * k)
        asks.append(PROXY.format(ip="203.0.113.5", t=t, d=digest(60 + k), status=307, n=300, ua=UA))
        # a light user asks for the same blob later and downloads it itself, seconds after
        asks.append(PROXY.format(ip="198.51.100.70", t=t + timedelta(minutes=11), d=digest(60 + k), status=307,
                                 n=300, ua=UA))
        rows.append(download(t + timedelta(minutes=11, seconds=3), "198.51.100.70", None, digest(60 + k),
                             1_000_000))
        # the reseller's customer, in another AS, 13-18 minutes after the reseller's 307
        rows.append(download(t + timedelta(minutes=13 + k), f"192.0.2.{10 + k}", None, digest(60 + k), 9_000_000))
    r = run(asn_db=geo)
    r.ingest(write(workdir / "proxy" / "access.log", sorted(asks, key=lambda x: x.split("[")[1])),
             write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-FFFF", s3(rows, rng, referer=False)))
    got = rolled(r)
    assert got["203.0.113.5"] == (54_000_000, 54_000_000, 0)
    assert got["198.51.100.70"] == (6_000_000, 6_000_000, 0)
    assert not any(ip.startswith("192.0.2.") for ip in got)
    # how sure: the light user's own 307 is exact, the reseller's bytes are matched by time alone
    assert r.store.execute("""select client_ip, sum(exact_bytes), sum(timed_bytes), sum(unjoined_bytes)
                              from facts_hourly where object_bytes > 0 group by all order by 1""") == [
        ("198.51.100.70", 6_000_000, 0, 0), ("203.0.113.5", 0, 54_000_000, 0)]


def test_a_307_from_the_downloader_s_network_beats_a_nearer_one_and_a_tie_never_goes_to_a_later_307(
        run, workdir, geo):
    rng = random.Random(27)
    t = T0 + timedelta(minutes=30)
    asks = [
        # the downloader's /64 asked 5 minutes before; a stranger 10 s before
        PROXY.format(ip="2001:db8:1::50", t=t - timedelta(minutes=5), d=digest(80), status=307, n=300, ua=UA),
        PROXY.format(ip="203.0.113.9", t=t - timedelta(seconds=10), d=digest(80), status=307, n=300, ua=UA),
        # the downloader's AS (another /24) 8 minutes before; a stranger 20 s before
        PROXY.format(ip="198.51.101.60", t=t - timedelta(minutes=8), d=digest(81), status=307, n=300, ua=UA),
        PROXY.format(ip="203.0.113.10", t=t - timedelta(seconds=20), d=digest(81), status=307, n=300, ua=UA),
        # a tie: two strangers, 5 s before and 5 s after the download (the later one has the lower address)
        PROXY.format(ip="203.0.113.200", t=t - timedelta(seconds=5), d=digest(82), status=307, n=300, ua=UA),
        PROXY.format(ip="203.0.113.100", t=t + timedelta(seconds=5), d=digest(82), status=307, n=300, ua=UA),
    ]
    rows = [download(t, "2001:db8:1::77", None, digest(80), 3_000_000),
            download(t, "198.51.100.99", None, digest(81), 4_000_000),
            download(t, "192.0.2.50", None, digest(82), 5_000_000)]
    r = run(asn_db=geo)
    r.ingest(write(workdir / "proxy" / "access.log", sorted(asks, key=lambda x: x.split("[")[1])),
             write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-ABAB", s3(rows, rng, referer=False)))
    got = {ip: b for ip, (b, _o, _u) in rolled(r).items() if b}
    assert got == {"2001:db8:1::50": 3_000_000, "198.51.101.60": 4_000_000, "203.0.113.200": 5_000_000}


@pytest.mark.parametrize("link_expires, who", [(None, "203.0.113.5"), (300, "192.0.2.10")])
def test_the_join_looks_back_as_long_as_the_links_live(run, workdir, link_expires, who):
    """CRProxy's --link-expires, once in settings: a link signed for 5 minutes cannot have been
    fetched 10 minutes later; with the drivers' 20 minutes it can."""
    rng = random.Random(28)
    r = run(**({"link_expires": link_expires} if link_expires else {}))
    r.ingest(write(workdir / "proxy" / "access.log",
                   [PROXY.format(ip="203.0.113.5", t=T0, d=digest(90), status=307, n=300, ua=UA)]),
             write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-CDCD",
                   s3([download(T0 + timedelta(minutes=10), "192.0.2.10", None, digest(90), 8_000_000)], rng,
                      referer=False)))
    roll_up(r.store, settings=r.cfg)
    assert r.store.execute("select client_ip, sum(object_bytes) from facts_hourly where object_bytes > 0 "
                           "group by all") == [(who, 8_000_000)]


def test_links_signed_by_another_identity_are_its_own_once_the_mirror_s_is_known(run, workdir):
    """object_store_requesters names the mirror's identity: a link the backup job signed for itself
    (QueryString, its own requester) was not handed out by a 307, however near one is."""
    rng = random.Random(29)
    t = T0
    rows = [download(t + timedelta(seconds=2), "198.51.100.8", None, digest(95), 2_000_000),
            {**download(t + timedelta(seconds=30), "10.20.0.9", None, digest(95), 2_000_000), "requester": BACKUP}]
    r = run(object_store_requesters=[CRPROXY])
    r.ingest(write(workdir / "proxy" / "access.log",
                   [PROXY.format(ip="198.51.100.8", t=t, d=digest(95), status=307, n=300, ua=UA)]),
             write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-EFEF", s3(rows, rng, referer=False)))
    roll_up(r.store, settings=r.cfg)
    assert r.store.execute("""select client_ip, sum(object_bytes), sum(unjoined_bytes) from facts_hourly
                              where object_bytes > 0 group by all order by 1""") == [
        ("10.20.0.9", 2_000_000, 2_000_000), ("198.51.100.8", 2_000_000, 0)]


def test_the_overview_api_splits_object_bytes_by_how_sure_their_client_is(workdir, geo):
    """/v1/stats/overview, as `stats` and /v1/stats/days: of the object bytes, those joined exactly
    (a client's own 307), by blob and time alone (S3 links carry no referer: a reseller's
    customers fetching its links minutes later), and to no request (a backup job's own reads)."""
    import httpx

    from ingest.pipeline import Ingester
    from reports.queries import daily_totals
    from tests.enforcer_helpers import Enforcer
    rng = random.Random(26)
    asks, rows = [], []
    for k in range(6):
        t = T0 + timedelta(minutes=3 * k)
        asks.append(PROXY.format(ip="203.0.113.5", t=t, d=digest(60 + k), status=307, n=300, ua=UA))
        asks.append(PROXY.format(ip="198.51.100.70", t=t + timedelta(minutes=1), d=digest(90 + k), status=307,
                                 n=300, ua=UA))
        rows.append(download(t + timedelta(minutes=1, seconds=3), "198.51.100.70", None, digest(90 + k), 1_000_000))
        rows.append(download(t + timedelta(minutes=13 + k), f"192.0.2.{10 + k}", None, digest(60 + k), 9_000_000))
        rows.append({**download(t + timedelta(minutes=40), "10.20.0.9", None, digest(60 + k), 7_000_000),
                     "unsigned": True, "requester": BACKUP, "ua": "rclone/v1.68.1"})
    write(workdir / "proxy" / "access.log", sorted(asks, key=lambda x: x.split("[")[1]))
    write(workdir / "s3" / "logs" / "2024-11-20-10-00-00-FFFF", s3(rows, rng, referer=False))
    srv = Enforcer(workdir, asn_db=geo)
    try:
        with srv.services.lock:
            Ingester(srv.store, srv.cfg).run([str(workdir / "proxy"), str(workdir / "s3")])
            roll_up(srv.store)
            days = daily_totals(srv.store)
        r = httpx.get(srv.url + "/v1/stats/overview", headers=srv.headers("viewer"), timeout=30)
        assert r.status_code == 200
        o = r.json()
        split = (6_000_000, 54_000_000, 42_000_000)            # exact, by time, not joined
        assert (o["exact_bytes"], o["timed_bytes"], o["unjoined_bytes"]) == split
        assert o["object_bytes"] == sum(split)
        assert (o["today"]["exact_bytes"], o["today"]["timed_bytes"], o["today"]["unjoined_bytes"]) == split
        [day] = o["daily_totals"]
        assert (day["exact_bytes"], day["timed_bytes"], day["unjoined_bytes"]) == split
        # the same figures as `stats` (and /v1/stats/days) give
        assert (days["exact_bytes"], days["timed_bytes"], days["unjoined_bytes"]) == split
    finally:
        srv.stop()
