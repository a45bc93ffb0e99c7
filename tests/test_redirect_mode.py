"""A redirect-mode mirror end to end (issue 13): every blob GET answered with a 307 to a signed
object-storage URL, the bytes in the stores' logs. A labelled week from the scenario generator
(sample_logs/scenarios.py ``generate_redirect``: S3, OSS and Logpush buckets, downloads in Range
parts, an older proxy node signing URLs without a referer, direct reads of the bucket, a reseller
handing its links on, a dual-stack client and a company with split egress) is ingested and judged
by the real command line, then read back through ``stats --json``, ``report monthly --json``, the
API and the dashboard's overview: the bytes are the generator's to the byte, for the mirror and for
every client that asked, and ``redirect-relay`` bans the reseller and no one legitimate. Ingesting
the stores' logs twice, or a record delivered twice, changes nothing. The committed sample
(sample_logs/redirect-mode/) gives the numbers its truth.yml records."""
from __future__ import annotations

import ipaddress
import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli.main import cli
from sample_logs.scenarios import MAY_THROTTLE, asn_networks, generate_redirect
from tests.test_enrich import build

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_logs" / "redirect-mode"
START = datetime(2024, 11, 18, tzinfo=UTC)
DAYS = 7
NOW = (START + timedelta(days=DAYS, hours=1)).replace(tzinfo=None)   # the last downloads end seconds after the week
TIB = 1 << 40
LOG_NAMES = {"s3": "mirror-blobs-logs/2024-11-18-00-00-00-5C3E6F7A8B9C0D1E",
             "oss": "MyLog-mirror-blobs2024-11-18-00-00-00-0001",
             "logpush": "20241118T000000Z_20241125T010000Z_4f1c2a8e"}


def invoke(*args, ok: bool = True):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env={})
    if ok:
        assert res.exit_code == 0, res.output
    return res


def write_logs(folder: Path, lines: list[str], objects: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "access.log").write_text("\n".join(lines) + "\n")
    for store, rows in objects.items():
        path = folder / store / LOG_NAMES[store]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(rows) + "\n")


def detect_daily(db, start: datetime, days: int) -> None:
    """A detection pass (roll-up, rules, decisions) at the end of every day, and one an hour later."""
    for k in range(1, days + 1):
        invoke("detect", "--db", db, "--now", (start + timedelta(days=k)).replace(tzinfo=None).isoformat())
    invoke("detect", "--db", db, "--now", (start + timedelta(days=days, hours=1)).replace(tzinfo=None).isoformat())


def stats(db) -> dict:
    return json.loads(invoke("stats", "--db", db, "--json").stdout)


def prefix(address: str) -> ipaddress._BaseNetwork:
    a = ipaddress.ip_address(address)
    return ipaddress.ip_network(f"{a}/{24 if a.version == 4 else 64}", strict=False)


def differences(got: dict, want: dict) -> dict:
    """Per address: (got, want) wherever they differ, to read in a failure."""
    return {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    root = tmp_path_factory.mktemp("redirect-week")
    lines, objects, actors, truth = generate_redirect(days=DAYS, start=START, seed=7, scale=0.1,
                                                      stores=("s3", "oss", "logpush"))
    write_logs(root / "logs", lines, objects)
    asn = build(root / "asn.mmdb", "GeoLite2-ASN", asn_networks())
    db = root / "db.duckdb"
    out = json.loads(invoke("ingest", root / "logs", "--db", db, "--asn-db", asn, "--json").stdout)
    formats = {Path(f["path"]).parent.name if f["format"] != "main" else "proxy": f["format"]
               for f in out["per_file"]}
    assert formats == {"proxy": "main", "mirror-blobs-logs": "s3", "oss": "oss", "logpush": "logpush"}
    assert out["rejected"] == 0
    assert out["object_events"] == sum(len(v) for v in objects.values())
    detect_daily(db, START, DAYS)
    return {"root": root, "db": db, "asn": asn, "actors": actors, "truth": truth, "objects": objects}


def test_the_generated_week_is_what_the_tests_need(week):
    """The generator's side, checked on its own rows: without these the tests below prove little."""
    truth, actors = week["truth"], week["actors"]
    rows = [r for store in truth.rows.values() for r in store]
    gets = [r for r in rows if r["method"] == "GET" and r["status"] in (200, 206)]
    assert truth.object_bytes == sum(r["bytes"] for r in gets) > 50 * truth.proxy_bytes   # the bytes are the store's
    assert any(r["status"] == 206 for r in gets) and any(r["method"] == "PUT" for r in rows)
    assert any(r["status"] == 403 for r in rows)
    no_referer = [r for r in gets if r["asker"] is None and not r["unsigned"]]
    assert 0.05 < len(no_referer) / len(gets) < 0.15
    assert 0 < truth.unjoined_bytes < truth.object_bytes / 100
    # each split-egress client downloads its own links from outside its /24 at least 10 times every
    # weekday: a relay rule that forgot the ASN would ban it
    for kind in ("split-egress-v6", "split-egress-corp"):
        [a] = [a for a in actors if a.kind == kind]
        asker = a.addresses[0]
        per_day: dict = {}
        for r in gets:
            if r["asker"] == asker and prefix(r["ip"]) != prefix(asker):
                per_day[r["ts"].date()] = per_day.get(r["ts"].date(), 0) + 1
        assert sum(n >= 10 for n in per_day.values()) >= 5, (kind, per_day)
    [relay] = [a for a in actors if a.kind == "redirect-relay"]
    assert relay.abusive and len(relay.relayed_to) >= 20


def test_totals_are_the_object_stores_bytes_to_the_byte(week):
    truth = week["truth"]
    s = stats(week["db"])
    want = truth.proxy_bytes + truth.object_bytes
    assert (s["bytes"], s["object_bytes"], s["unjoined_bytes"]) == (want, truth.object_bytes, truth.unjoined_bytes), \
        {"bytes": (s["bytes"], want), "object_bytes": (s["object_bytes"], truth.object_bytes),
         "unjoined_bytes": (s["unjoined_bytes"], truth.unjoined_bytes)}
    assert sum(d["bytes"] for d in s["days"]) == want

    out = week["root"] / "report"
    fig = json.loads(invoke("report", "monthly", "--db", week["db"], "--month", "2024-11", "--now", NOW.isoformat(),
                            "--json", "--out", out).stdout)
    got = (fig["total_bytes"], fig["object_bytes"], fig["unjoined_bytes"])
    assert got == (want, truth.object_bytes, truth.unjoined_bytes), got


def test_api_and_dashboard_show_the_same_bytes(week, monkeypatch):
    """Per client through /v1/stats/top, the totals through /v1/stats/overview and /v1/stats/budget,
    and the overview page the dashboard draws from them."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tests.dashboard_helpers import Server
    truth = week["truth"]
    want = truth.proxy_bytes + truth.object_bytes
    srv = Server(week["root"])
    try:
        srv.clock.t = NOW
        top = srv.get("/v1/stats/top", by="address", start=START.date().isoformat(),
                      end=(START + timedelta(days=DAYS + 1)).date().isoformat(), limit=1000)
        assert len(top["rows"]) < 1000 and top["total_bytes"] == want
        served = {r["entity"]: r["bytes"] for r in top["rows"]}
        assert served == truth.served, differences(served, truth.served)

        o = srv.get("/v1/stats/overview")
        assert sum(d["bytes"] for d in o["daily_totals"]) == want
        assert (o["object_bytes"], o["unjoined_bytes"]) == (truth.object_bytes, truth.unjoined_bytes)
        b = srv.get("/v1/stats/budget")
        assert b.get("used_bytes", b.get("bytes")) == want

        monkeypatch.setenv("PULLWARDEN_API_URL", srv.url)
        monkeypatch.setenv("PULLWARDEN_API_KEY", srv.keys["viewer"])
        st.cache_data.clear()
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=90)
        at.run()
        at.switch_page("views/overview.py").run()
        assert not at.exception, [e.value for e in at.exception]
        shown = next(m.value for m in at.metric if m.label == "Month to date (TiB)")
        assert shown == str(round(want / TIB, 3)), (shown, want)
    finally:
        srv.stop()


def test_redirect_relay_bans_the_reseller_and_no_one_legitimate(week):
    actors = week["actors"]
    rows = json.loads(invoke("decisions", "list", "--db", week["db"], "--json").stdout)
    bans = [d for d in rows if d["effect"] == "ban" and not d["simulated"] and not d.get("held")]

    def owners(value: str):
        if "/" in value:
            net = ipaddress.ip_network(value)
            return [a for a in actors if any(ipaddress.ip_address(ip) in net for ip in a.addresses)]
        return [a for a in actors if value in a.addresses]

    [relay] = [a for a in actors if a.kind == "redirect-relay"]
    by_relay = {d["value"] for d in rows if d["rule"] == "redirect-relay" and not d["simulated"]}
    assert by_relay == set(relay.addresses), by_relay
    assert not [d for d in rows if d["rule"] == "redirect-relay" and d.get("held")]
    # a range ban's collateral (the light user living in a rotation actor's /24) is the breaker's to
    # weigh, as in test_detect_scenarios; an address ban or a throttle of a legitimate client is wrong
    wrongly = {(a.name, d["rule"], d["value"]) for d in bans for a in owners(d["value"])
               if not a.abusive and not ("/" in d["value"] and a.kind == "light")}
    assert not wrongly
    throttled = {(a.name, d["rule"]) for d in rows if d["effect"] == "throttle" and not d["simulated"]
                 for a in owners(d["value"]) if not a.abusive and a.kind not in MAY_THROTTLE}
    assert not throttled
    split = [a for a in actors if a.kind.startswith("split-egress")]
    assert len(split) == 2 and not {d["value"] for d in rows} & {ip for a in split for ip in a.addresses}
    customers = {d["value"] for d in bans} & set(relay.relayed_to)
    assert not customers                        # the reseller's customers only downloaded what it asked for


def test_object_logs_twice_or_a_record_delivered_twice_change_nothing(tmp_path):
    lines, objects, _actors, truth = generate_redirect(days=1, start=START, seed=3, scale=0.05,
                                                       kinds={"light", "office-nat", "redirect-relay",
                                                              "split-egress-corp", "direct-read"},
                                                       stores=("s3", "oss"))
    write_logs(tmp_path / "logs", lines, objects)
    asn = build(tmp_path / "asn.mmdb", "GeoLite2-ASN", asn_networks())
    db = tmp_path / "db.duckdb"
    invoke("ingest", tmp_path / "logs", "--db", db, "--asn-db", asn)
    detect_daily(db, START, 1)
    first = stats(db)
    want = truth.proxy_bytes + truth.object_bytes
    assert (first["bytes"], first["object_bytes"], first["unjoined_bytes"]) == \
        (want, truth.object_bytes, truth.unjoined_bytes)

    again = json.loads(invoke("ingest", tmp_path / "logs", "--db", db, "--asn-db", asn, "--json").stdout)
    assert again["object_events"] == 0 and again["events"] == 0          # the same files: read already
    # the stores deliver a log record twice now and then (S3 says so): here as a later log object
    # repeating some of the hour's records, one of them twice, and a copy of a whole OSS log object
    rng = random.Random(5)
    s3 = objects["s3"]
    repeated = rng.sample(s3, 40)
    twice = tmp_path / "later" / "s3" / "mirror-blobs-logs" / "2024-11-18-23-00-00-0A1B2C3D4E5F6A7B"
    twice.parent.mkdir(parents=True)
    twice.write_text("\n".join(repeated + repeated[:1]) + "\n")
    copy = tmp_path / "later" / "oss" / "MyLog-mirror-blobs2024-11-18-23-00-00-0002"
    copy.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "logs" / "oss" / LOG_NAMES["oss"], copy)
    out = json.loads(invoke("ingest", tmp_path / "later", "--db", db, "--asn-db", asn, "--json").stdout)
    assert out["object_events"] == 41 + len(objects["oss"])              # stored as read ...
    detect_daily(db, START, 1)
    assert stats(db) == first                                            # ... and counted once


def test_the_committed_sample_gives_its_truth(tmp_path):
    truth = yaml.safe_load((SAMPLE / "truth.yml").read_text())
    shutil.copytree(SAMPLE, tmp_path / "sample", ignore=shutil.ignore_patterns("*.py", "*.yml", "*.md"))
    asn = build(tmp_path / "asn.mmdb", "GeoLite2-ASN", truth["asn_networks"])
    db = tmp_path / "db.duckdb"
    out = json.loads(invoke("ingest", tmp_path / "sample", "--db", db, "--asn-db", asn, "--json").stdout)
    assert out["rejected"] == 0 and {f["format"] for f in out["per_file"]} == {"main", "s3", "oss"}
    start = datetime.fromisoformat(truth["start"])
    detect_daily(db, start, 1)
    s = stats(db)
    assert (s["bytes"], s["object_bytes"], s["unjoined_bytes"]) == \
        (truth["proxy_bytes"] + truth["object_bytes"], truth["object_bytes"], truth["unjoined_bytes"])
    from core.store import open_store
    from reports import queries
    store = open_store(str(db))
    try:
        span = queries.Span(start.replace(tzinfo=None), start.replace(tzinfo=None) + timedelta(days=2))
        served = {r["entity"]: r["bytes"] for r in queries.top(store, "address", span, 1000)["rows"]}
        relay_bans = {v for v, in store.execute("select value from decisions where rule = 'redirect-relay'")}
    finally:
        store.close()
    assert served == truth["served"], differences(served, truth["served"])
    assert relay_bans == {a["addresses"][0] for a in truth["actors"] if a["kind"] == "redirect-relay"}


def test_the_committed_sample_is_what_its_script_writes(tmp_path):
    """sample_logs/redirect-mode/generate.py is seeded: running it again gives the committed files."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("redirect_sample", SAMPLE / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shutil.copytree(SAMPLE, tmp_path / "copy")
    mod.HERE = tmp_path / "copy"
    mod.main()
    for path in sorted(p for p in SAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        again = tmp_path / "copy" / path.relative_to(SAMPLE)
        assert again.read_bytes() == path.read_bytes(), path
    written = {p.relative_to(tmp_path / "copy") for p in (tmp_path / "copy").rglob("*") if p.is_file()}
    assert written == {p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file()}


def test_crproxy_s_own_log_gives_the_same_bytes(tmp_path):
    """CRProxy's gorilla log (clf: no user agent, no referer) in front of the bucket: the same join."""
    lines, objects, _actors, truth = generate_redirect(days=1, start=START, seed=11, scale=0.05, fmt="clf",
                                                       kinds={"light", "k8s-cluster", "redirect-relay",
                                                              "split-egress-v6", "direct-read"},
                                                       stores=("logpush",))
    assert all('" 307 ' in x for x in lines if "/blobs/" in x)
    write_logs(tmp_path / "logs", lines, objects)
    asn = build(tmp_path / "asn.mmdb", "GeoLite2-ASN", asn_networks())
    db = tmp_path / "db.duckdb"
    out = json.loads(invoke("ingest", tmp_path / "logs", "--db", db, "--asn-db", asn, "--json").stdout)
    assert {f["format"] for f in out["per_file"]} == {"clf", "logpush"} and out["rejected"] == 0
    detect_daily(db, START, 1)
    s = stats(db)
    assert (s["bytes"], s["object_bytes"], s["unjoined_bytes"]) == \
        (truth.proxy_bytes + truth.object_bytes, truth.object_bytes, truth.unjoined_bytes)
    from core.store import open_store
    from reports import queries
    store = open_store(str(db))
    try:
        span = queries.Span(START.replace(tzinfo=None), START.replace(tzinfo=None) + timedelta(days=2))
        served = {r["entity"]: r["bytes"] for r in queries.top(store, "address", span, 1000)["rows"]}
    finally:
        store.close()
    assert served == truth.served, differences(served, truth.served)


def test_s3_without_a_referer_every_byte_counted_once_and_the_report_says_how_sure(tmp_path):
    """AWS S3 (distribution's s3-aws driver) signs a plain GetObject: no referer. A day of a mirror
    whose one bucket is on S3, with the mirror's listing before every redirect, a backup job, and a
    reseller whose customers fetch its links up to 19 minutes later (the links live 20)."""
    lines, objects, actors, truth = generate_redirect(days=1, start=START, seed=17, scale=0.05, stores=("s3",),
                                                      no_referer=("s3",),
                                                      kinds={"light", "office-nat", "redirect-relay", "backup",
                                                             "split-egress-corp", "direct-read"})
    assert not any("referer=" in x for x in objects["s3"]) and truth.listings > 100
    write_logs(tmp_path / "logs", lines, objects)
    asn = build(tmp_path / "asn.mmdb", "GeoLite2-ASN", asn_networks())
    db = tmp_path / "db.duckdb"
    invoke("ingest", tmp_path / "logs", "--db", db, "--asn-db", asn)
    s = stats(db)
    assert (s["bytes"], s["object_bytes"], s["unjoined_bytes"]) == \
        (truth.proxy_bytes + truth.object_bytes, truth.object_bytes, truth.unjoined_bytes)
    assert s["exact_bytes"] + s["timed_bytes"] + s["unjoined_bytes"] == s["object_bytes"]
    calls = sum(r["method"] in ("PUT", "LIST") for r in truth.rows["s3"])
    own_reads = sum(r["unsigned"] and r["method"] == "GET" and r["status"] in (200, 206) for r in truth.rows["s3"])
    # requests: the proxy's, plus each read no 307 stands for; none of the mirror's calls
    assert s["store_calls"] == calls and s["requests"] == len(lines) + own_reads
    from core.store import open_store
    from reports import queries
    store = open_store(str(db))
    try:
        span = queries.Span(START.replace(tzinfo=None), START.replace(tzinfo=None) + timedelta(days=2))
        served = {r["entity"]: r["bytes"] for r in queries.top(store, "address", span, 1000)["rows"]}
        sure = {ip: (x, t) for ip, x, t in store.execute(
            "select client_ip, sum(exact_bytes), sum(timed_bytes) from facts_hourly group by all")}
    finally:
        store.close()
    assert "10.20.0.5" not in served
    [relay] = [a for a in actors if a.kind == "redirect-relay"]
    ip = relay.addresses[0]
    # every one of the reseller's late-fetched links is found inside the link's life, by time alone
    assert served[ip] == truth.served[ip] and sure[ip][1] > 0.8 * truth.served[ip]
    # an address whose object bytes are all exact has exactly its truth
    exact = [a for a, (x, t) in sure.items() if t == 0 and a in truth.served]
    assert len(exact) >= 10 and all(served.get(a, 0) == truth.served[a] for a in exact)
