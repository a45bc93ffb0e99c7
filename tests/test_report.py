"""The monthly report: its figures equal direct SQL over the events to the byte, a closed month
is frozen (the same bytes on every run, locally and through a running serve), the outputs open
offline, and the what-if shows fewer bytes when the anonymous tier is tightened."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from core.settings import load
from core.store import open_store
from reports import archive, cost, monthly, render, whatif
from rules.rollup import roll_up
from tests.detect_helpers import add_events

NOW = datetime(2026, 12, 2, 12)
TIB = 1 << 40
IPS = [f"198.51.100.{n}" for n in range(1, 9)] + ["2001:db8::7"]
REGISTRIES = ["docker.io", "ghcr.io", "quay.io"]


def traffic(start=datetime(2026, 10, 1), end=NOW):
    """Deterministic traffic: every 3 hours each address pulls from a registry; sizes vary by
    address, hour and weekday; 198.51.100.1 pulls ten times more, and authenticated as ci."""
    rows, t, k = [], start, 0
    while t < end:
        for n, ip in enumerate(IPS):
            k += 1
            size = (1 + n) * (3 + t.weekday()) * (7 + t.hour) * 1_000_003 * (10 if n == 0 else 1)
            reg = REGISTRIES[(n + t.day) % 3]
            ua = ["docker/27.3.1 go/go1.22.7", "containerd/v1.7.20", "Go-http-client/1.1"][n % 3]
            rows.append((t, ip, ip, "ci" if n == 0 else None, "GET", 200, size, ua, reg, f"team{n % 4}/app",
                         "blob", f"sha256:{k:064x}", None))
            rows.append((t, ip, ip, "ci" if n == 0 else None, "GET", 200, 1500, ua, reg, f"team{n % 4}/app",
                         "manifest", None, None))
        t += timedelta(hours=3)
    return rows


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "r.duckdb"))
    add_events(s, traffic())
    s.execute("""insert into ip_info select ip, 64500 + (row_number() over (order by ip)) % 3, 'NET', 'DE'
                 from (select distinct client_ip as ip from events)""")
    s.execute("""insert into user_agents select distinct user_agent, split_part(user_agent, '/', 1), null, null
                 from events""")
    roll_up(s)
    yield s
    s.close()


def cfg(tmp_path, **kw):
    return load(None, {"db": str(tmp_path / "r.duckdb"), **kw}, environ={})


def sql(store, q, params=None):
    return store.execute(q, params or [])


def test_figures_equal_sql_over_the_events(store, tmp_path):
    fig = monthly.figures(store, "2026-11", "UTC", NOW)
    nov = "ts >= '2026-11-01' and ts < '2026-12-01'"
    assert fig["total_bytes"] == sql(store, f"select sum(bytes) from events where {nov}")[0][0]
    assert fig["requests"] == sql(store, f"select count(*) from events where {nov}")[0][0]
    assert not fig["partial"] and fig["projected_bytes"] == fig["total_bytes"]
    assert {r["key"]: r["bytes"] for r in fig["breakdowns"]["registry"]} == dict(
        sql(store, f"select registry, sum(bytes) from events where {nov} group by 1"))
    assert [(d["day"], d["bytes"]) for d in fig["daily"]] == [
        (d.isoformat(), b) for d, b in sql(store, f"select ts::date, sum(bytes) from events where {nov} group by 1 order by 1")]
    assert len(fig["daily"]) == 30
    top = sql(store, f"select client_ip, sum(bytes) b from events where {nov} group by 1 order by b desc")
    assert [(r["address"], r["bytes"]) for r in fig["top_consumers"]] == [tuple(r) for r in top]
    assert fig["top_consumers"][0]["address"] == "198.51.100.1"
    assert {r["key"]: r["bytes"] for r in fig["breakdowns"]["asn"]} == {str(a): b for a, b in sql(store, f"""
        select i.asn, sum(e.bytes) from events e join ip_info i on i.ip = e.client_ip where {nov} group by 1""")}
    tiers = {r["key"]: r["bytes"] for r in fig["breakdowns"]["tier"]}
    assert tiers == dict(sql(store, f"""select case when remote_user is null then 'anonymous' else 'authenticated' end,
                                        sum(bytes) from events where {nov} group by 1"""))
    octo = sql(store, "select sum(bytes) from events where ts >= '2026-10-01' and ts < '2026-11-01'")[0][0]
    assert fig["previous_month"]["total_bytes"] == octo and fig["previous_month"]["month"] == "2026-10"
    movers = sql(store, """
        with n as (select registry || '/' || repository k, sum(bytes) b from events
                   where ts >= '2026-11-01' and ts < '2026-12-01' group by 1),
             o as (select registry || '/' || repository k, sum(bytes) b from events
                   where ts >= '2026-10-01' and ts < '2026-11-01' group by 1)
        select coalesce(n.k, o.k), coalesce(n.b, 0), coalesce(o.b, 0) from n full join o using (k)
        order by abs(coalesce(n.b, 0) - coalesce(o.b, 0)) desc, 1 limit 10""")
    assert [(m["key"], m["bytes"], m["before"]) for m in fig["movers"]["image"]] == [tuple(r) for r in movers]
    assert {m["trend"] for m in fig["movers"]["image"]} <= {"up", "down", "flat"}
    assert fig["units"].startswith("bytes; TiB = 2^40 bytes")
    # in Tokyo the month begins at 15:00 UTC on the last day of October
    tokyo = monthly.figures(store, "2026-11", "Asia/Tokyo", NOW)
    assert tokyo["total_bytes"] == sql(store, """select sum(bytes) from events
        where ts >= '2026-10-31 15:00' and ts < '2026-11-30 15:00'""")[0][0]
    assert tokyo["daily"][0]["day"] == "2026-11-01"


def test_a_month_in_progress_is_partial_with_its_projection(store):
    fig = monthly.figures(store, "2026-12", "UTC", NOW)
    assert fig["partial"] and fig["as_of"] == "2026-12-02T10:00:00"        # the newest hour's end
    assert fig["total_bytes"] == sql(store, "select sum(bytes) from events where ts >= '2026-12-01'")[0][0]
    p = fig["projection"]
    assert p["low"] <= fig["projected_bytes"] <= p["high"] and "day-of-week" in p["method"]
    assert fig["projected_bytes"] > fig["total_bytes"] * 10
    sp = fig["same_point_last_month"]
    assert sp["until"] == "2026-11-02T10:00:00" and sp["bytes"] == sql(
        store, "select sum(bytes) from events where ts >= '2026-11-01' and ts < '2026-11-02 10:00'")[0][0]


def test_trend_and_tiered_cost():
    assert monthly.trend(105, 100) == "flat" and monthly.trend(106, 100) == "up"
    assert monthly.trend(94, 100) == "down" and monthly.trend(5, 0) == "new" and monthly.trend(0, 3) == "gone"
    c = cost.cost(15 * TIB, [[10, 90.0], [50, 80.0], [0, 70.0]], "EUR")
    assert c["amount"] == 10 * 90 + 5 * 80 and c["currency"] == "EUR"
    assert cost.cost(70 * TIB, ["10:90", "50:80", "0:70"], "EUR")["amount"] == 900 + 40 * 80 + 20 * 70
    assert cost.cost(70 * TIB, [[10, 90.0]], "EUR")["amount"] == 900 + 60 * 90      # past the last step
    assert cost.cost(TIB, [], "EUR") is None


def test_decision_impact_per_day_before_and_after(store):
    ip = "198.51.100.3"
    store.execute("""insert into decisions (seq, scope, value, effect, tier, rule, origin, reason, created_at, until)
                     values (1, 'ip', ?, 'throttle', 'throttled', 'heavy-user', 'rule', 'test', '2026-11-15', '2026-12-15')""",
                  [ip])
    fig = monthly.figures(store, "2026-11", "UTC", NOW)
    row = fig["decisions"]["rows"][0]
    before = sql(store, "select sum(bytes) from events where client_ip = ? and ts >= '2026-11-08' and ts < '2026-11-15'",
                 [ip])[0][0]
    after = sql(store, "select sum(bytes) from events where client_ip = ? and ts >= '2026-11-15' and ts < '2026-11-22'",
                [ip])[0][0]
    assert (row["bytes_before"], row["bytes_after"], row["in_force_at_end"]) == (before, after, True)
    assert row["bytes_per_day_before"] == round(before / 7) and row["bytes_per_day_after"] == round(after / 7)
    tiers = {r["key"]: r["bytes"] for r in fig["breakdowns"]["tier"]}
    assert tiers["throttled"] == sql(store, """select sum(bytes) from events where client_ip = ?
                                                and ts >= '2026-11-15' and ts < '2026-12-01'""", [ip])[0][0]


def test_a_closed_month_is_frozen_and_gives_the_same_bytes(store, tmp_path):
    c = cfg(tmp_path, price_per_tib=[[0, 80.0]])
    first = archive.build(store, "2026-11", c, NOW)
    assert first.frozen and not first.partial and not first.stale
    again = archive.build(store, "2026-11", c, NOW + timedelta(days=3))
    assert again.outputs == first.outputs and again.inputs_sha256 == first.inputs_sha256
    fig = json.loads(first.outputs["json"])
    assert render.to_html(fig).encode() == first.outputs["html"]          # rendering is a pure function
    assert render.to_pdf(render.to_html(fig)) == first.outputs["pdf"]
    assert first.outputs["pdf"].startswith(b"%PDF")
    page = first.outputs["html"].decode()
    assert page.count("<svg") == 3 and "<script" not in page and not re.search(r"(src|href)=\"https?://", page)
    assert "2<sup>40</sup> bytes" in page
    assert first.outputs["csv"].decode().splitlines()[0] == "section,path,value"
    assert f"total_bytes,total_bytes,{fig['total_bytes']}" in first.outputs["csv"].decode()
    assert {"total_bytes", "budget_bytes", "projected_bytes"} <= set(fig) and fig["cost"]["amount"] > 0
    # a late event: the frozen report stays (stale), --refresh replaces it
    add_events(store, [(datetime(2026, 11, 20), "203.0.113.9", "203.0.113.9", None, "GET", 200, 10**9, "docker/27",
                        "docker.io", "x/y", "blob", "sha256:ff", None)])
    roll_up(store)
    late = archive.build(store, "2026-11", c, NOW)
    assert late.stale and late.outputs == first.outputs
    fresh = archive.build(store, "2026-11", c, NOW, refresh=True)
    assert fresh.inputs_sha256 != first.inputs_sha256
    assert json.loads(fresh.outputs["json"])["total_bytes"] == fig["total_bytes"] + 10**9
    assert store.value("select count(*) from reports") == 1
    partial = archive.build(store, "2026-12", c, NOW)
    assert partial.partial and not partial.frozen and store.value("select count(*) from reports") == 1
    assert [m["month"] for m in archive.listing(store, "UTC")] == ["2026-12", "2026-11", "2026-10"]
    empty = archive.build(store, "2026-08", c, NOW)           # no logs read for it (yet): not frozen
    assert not empty.frozen and json.loads(empty.outputs["json"])["total_bytes"] == 0


def test_whatif_tightening_the_anonymous_tier_shows_fewer_bytes(store):
    as_is = whatif.whatif(store, "UTC", NOW, {}, "2026-11")
    anon = sql(store, """select sum(bytes) from events where ts >= '2026-11-01' and ts < '2026-12-01'
                         and remote_user is null""")[0][0]
    assert as_is["anonymous_bytes"] == anon and as_is["anonymous_bytes_after"] == anon   # stock limits cut nothing
    assert as_is["anonymous_bytes_at_current_limits"] == anon and as_is["tier"] == "anonymous"
    tight = whatif.whatif(store, "UTC", NOW, {"window_bytes": 100_000_000, "window_seconds": 7200}, "2026-11")
    assert tight["anonymous_bytes_after"] < anon and tight["used_bytes_after"] < tight["used_bytes"]
    capped = sql(store, """select sum(least(b, 100000000)) from (
        select client_ip, floor(epoch(ts) / 7200), sum(bytes) b from events
        where ts >= '2026-11-01' and ts < '2026-12-01' and remote_user is null group by all)""")[0][0]
    assert tight["anonymous_bytes_after"] == capped
    rate = whatif.whatif(store, "UTC", NOW, {"requests_per_minute": 1, "burst": 0}, "2026-11")
    assert rate["anonymous_bytes_after"] < anon             # each pull is 2 requests in one minute: half passes
    store.execute("insert into allowlist values ('ip', '198.51.100.2', 'office', '2026-11-01', null)")
    fewer = whatif.whatif(store, "UTC", NOW, {"window_bytes": 100_000_000, "window_seconds": 7200}, "2026-11")
    assert fewer["addresses_excluded"] == 1 and fewer["anonymous_bytes"] < anon


def test_report_monthly_command_locally_and_through_serve(store, tmp_path, workdir):
    from cli.main import cli
    from tests.enforcer_helpers import serving
    store.close()
    db = str(tmp_path / "r.duckdb")

    def run(*args, env=None):
        res = CliRunner().invoke(cli, ["report", "monthly", "--db", db, *args], env=env or {})
        assert res.exit_code == 0, res.output
        return res.output
    out = run("--month", "2026-11", "--out", str(tmp_path / "a"))
    assert "frozen, inputs sha256" in out and "pullwarden-report-2026-11.pdf" in out
    run("--month", "2026-11", "--out", str(tmp_path / "b"))
    kinds = ("json", "csv", "html", "pdf")
    files = {k: (tmp_path / "a" / f"pullwarden-report-2026-11.{k}").read_bytes() for k in kinds}
    assert files == {k: (tmp_path / "b" / f"pullwarden-report-2026-11.{k}").read_bytes() for k in kinds}
    assert json.loads(run("--month", "2026-11", "--json", "--out", str(tmp_path / "c")))["total_bytes"] > 0
    res = CliRunner().invoke(cli, ["keys", "create", "--role", "viewer", "--name", "v", "--db", db])
    viewer = res.stdout.strip()
    (workdir / "pullwarden.toml").write_text(f'db = "{db}"\n')
    with serving(workdir) as url:
        import httpx
        run("--month", "2026-11", "--out", str(tmp_path / "d"), env={"PULLWARDEN_API_KEY": viewer})
        assert files == {k: (tmp_path / "d" / f"pullwarden-report-2026-11.{k}").read_bytes() for k in kinds}
        listed = httpx.get(url + "/v1/stats/reports", headers={"X-Api-Key": viewer}).json()
        assert [m["month"] for m in listed if m["frozen"]] == ["2026-11"]
        r = httpx.get(url + "/v1/stats/budget", headers={"X-Api-Key": viewer}).json()
        assert r["month"] == "2026-12" and {"projection", "guard", "days_until_exhausted"} <= set(r)


def test_an_as_number_with_several_names_gets_one_label_every_time(store):
    store.execute("update ip_info set asn = 64999, as_org = 'NET ' || ip")     # every address: its own name
    labels = {monthly.figures(store, "2026-11", "UTC", NOW)["breakdowns"]["asn"][0]["label"] for _ in range(5)}
    assert labels == {"AS64999 NET 198.51.100.1"}


def test_a_bad_price_step_is_one_sentence():
    for bad in (["10"], [[10]], [["x", 1]], "10:90"):
        with pytest.raises(ValueError, match="price_per_tib: each step is"):
            cost.cost(TIB, bad if isinstance(bad, list) else [bad, "x"], "EUR")
