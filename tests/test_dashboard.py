"""Every dashboard page, run by Streamlit's AppTest against a live server (the demo month, 30
days, ~530k lines, judged at a pinned time), asserting on what the page shows: its figures are
the API's and SQL's, its tables the API's rows, its charts there. An empty database, an admin
acting with a reason (audited), and a viewer who gets no action buttons."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.dashboard_helpers import NOW, serve

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
TIB, GIB = 1 << 40, 1 << 30


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = serve(tmp_path_factory.mktemp("month"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def empty(tmp_path_factory):
    s = serve(tmp_path_factory.mktemp("empty"), data=False)
    yield s
    s.stop()


@pytest.fixture
def page(monkeypatch):
    def run(server, name: str, role: str = "viewer", state: dict | None = None) -> AppTest:
        monkeypatch.setenv("PULLWARDEN_API_URL", server.url)
        monkeypatch.setenv("PULLWARDEN_API_KEY", server.keys[role])
        st.cache_data.clear()           # each test reads the server as it is now
        at = AppTest.from_file(APP, default_timeout=90)
        at.run()
        for k, v in (state or {}).items():
            at.session_state[k] = v
        at.switch_page(f"views/{name}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at
    return run


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def sql(server, query: str, params=None):
    with server.services.lock:
        return server.store.execute(query, params)[0][0]


def test_overview_shows_today_the_month_and_what_is_in_force(srv, page):
    at = page(srv, "overview")
    o = srv.get("/v1/stats/overview")
    # the roll-up, not the events: the demo's last days are in redirect mode, their bytes in the buckets' logs
    today = sql(srv, "select sum(bytes) from facts_hourly where hour >= ? and hour < ?", [NOW.replace(hour=0), NOW])
    assert o["today"]["bytes"] == today
    assert metric(at, "Today (TiB)") == str(round(today / TIB, 3))
    bans = sql(srv, """select count(*) from decisions where effect = 'ban' and revoked_at is null and until > ?
                       and not simulated and held is null""", [NOW])
    assert bans and metric(at, "Bans / throttles in force").startswith(f"{bans} / ")
    b = srv.get("/v1/stats/budget")
    month = sql(srv, "select sum(bytes) from facts_hourly where hour >= ? and hour < ?", [NOW.replace(day=1, hour=0), NOW])
    assert metric(at, "Month to date (TiB)") == str(round(b.get("used_bytes", b["bytes"]) / TIB, 3)) \
        == str(round(month / TIB, 3))
    assert "Projected month end (TiB)" in [m.label for m in at.metric]
    charts = specs(at)
    assert len(charts) == 4                                # burn-up, daily by registry, requests, addresses
    assert "budget TiB" in json.dumps(charts[0]) and "registry" in json.dumps(charts[1])
    assert "ingest lag" in " ".join(c.value for c in at.caption)
    assert not at.error


def test_traffic_totals_and_the_previous_period(srv, page):
    at = page(srv, "traffic")
    t = srv.get("/v1/stats/traffic", start="2026-11-21", end="2026-11-28", bucket="hour")
    assert metric(at, "Requests") == f"{t['totals']['requests']:,}"
    assert metric(at, "TiB") == str(round(t["totals"]["bytes"] / TIB, 3))
    assert metric(at, "Unique addresses") == f"{t['totals']['addresses']:,}"
    assert len(specs(at)) == 2 and "previous period" in json.dumps(specs(at)[0])
    # a filter narrows it to what the API says for that filter
    at.text_input(key="traffic-registry").input("ghcr.io").run()
    g = srv.get("/v1/stats/traffic", start="2026-11-21", end="2026-11-28", bucket="hour", registry="ghcr.io")
    assert 0 < g["totals"]["requests"] < t["totals"]["requests"]
    assert metric(at, "Requests") == f"{g['totals']['requests']:,}"


def test_top_talkers_rows_and_opening_an_entity(srv, page):
    at = page(srv, "top")
    top = srv.get("/v1/stats/top", by="address", start="2026-11-21", end="2026-11-28", limit=50)
    df = at.dataframe[0].value
    assert len(df) == len(top["rows"]) == 50
    assert list(df["Address"][:3]) == [r["label"] or r["entity"] for r in top["rows"][:3]]
    assert list(df["GiB"][:3]) == [round(r["bytes"] / GIB, 2) for r in top["rows"][:3]]
    assert specs(at)
    # by /24 or /64: the fair share column (one heavy host or many behind a NAT)
    at.selectbox(key="top-by").select("prefix").run()
    prefixes = srv.get("/v1/stats/top", by="prefix", start="2026-11-21", end="2026-11-28", limit=50)["rows"]
    assert list(at.dataframe[0].value["GiB per address"][:3]) == [round(r["bytes_per_address"] / GIB, 2)
                                                                 for r in prefixes[:3]]
    # the demo's own ASN database: networks by name
    at.selectbox(key="top-by").select("asn").run()
    networks = srv.get("/v1/stats/top", by="asn", start="2026-11-21", end="2026-11-28", limit=50)["rows"]
    assert list(at.dataframe[0].value["ASN"]) == [r["label"] for r in networks]
    assert {"AS16509 AMAZON-02", "AS24940 HETZNER-ONLINE", "AS9808 CMNET", "AS4538 CERNET-AP"} <= {r["label"] for r in networks}
    at.selectbox(key="top-by").select("address").run()
    at.button(key="top-open-button").click().run()        # the first row, the biggest
    assert [t.value for t in at.title] == ["Entity"]
    assert at.session_state["entity-value"] == str(top["rows"][0]["entity"])


def test_entity_profile_verdicts_and_decisions(srv, page):
    value = sql(srv, "select value from decisions where scope = 'ip' and effect = 'ban' order by id limit 1")
    at = page(srv, "entity", state={"entity": {"kind": "address", "value": value}})
    e = srv.get("/v1/stats/entity", kind="address", value=value)
    assert metric(at, "GiB (7 days)") == str(round(e["totals"]["bytes"] / GIB, 2))
    assert metric(at, "Requests (7 days)") == f"{e['totals']['requests']:,}"
    assert specs(at)                                      # the hourly profile
    frames = [d.value for d in at.dataframe]
    verdicts = next(f for f in frames if "matches" in f.columns)
    assert verdicts["matches"].any()                      # the rule that banned it matches
    assert any("id" in f.columns and value in set(f["value"]) for f in frames)   # its decisions
    assert at.query_params["value"] == [value] or at.query_params["value"] == value


def test_review_lists_findings_and_an_admin_bans_with_a_reason(srv, page):
    at = page(srv, "review", role="admin")
    found = srv.get("/v1/stats/findings", limit=1000)
    shown = [f for f in found if not f["simulated"]]
    assert len(at.dataframe[-1].value) == len(shown)
    picked = next(x for x in at.selectbox(key="review-entity").options if x.startswith("address"))
    at.selectbox(key="review-entity").select(picked).run()
    # without a reason nothing happens
    at.button(key="review-ban-submit").click().run()
    assert any("reason is required" in e.value for e in at.error)
    at.text_input(key="review-ban-reason").input("seen in review: re-pulls all day")     # a form: sent on submit
    at.button(key="review-ban-submit").click().run()
    assert not at.error, [e.value for e in at.error]
    [row] = [a for a in srv.get("/v1/admin/audit", role="admin") if a["reason"] == "seen in review: re-pulls all day"]
    assert any("audited" in s.value for s in at.success)
    assert (row["actor"], row["action"], row["target"]) == ("admin", "add ban", "ip " + picked.split()[1])
    assert any(d["value"] == picked.split()[1] and d["origin"] == "manual"
               for d in srv.get("/v1/stats/decisions", active="true", effect="ban"))


def test_a_viewer_sees_no_action_buttons(srv, page):
    for name in ("review", "entity", "images"):
        state = {"entity": {"kind": "address", "value": "198.19.64.11"}} if name == "entity" else None
        at = page(srv, name, state=state)
        labels = {b.label for b in at.button}
        assert not labels & {"Ban", "Assign tier", "Allowlist", "Revoke", "Change the list",
                             "Apply to the held decisions"}, labels
        assert any("Read-only" in c.value for c in at.caption)


def test_decisions_and_audit(srv, page):
    at = page(srv, "decisions", role="admin")
    active = srv.get("/v1/stats/decisions", active="true", limit=5000)
    assert metric(at, "Decisions") == str(len(active))
    assert metric(at, "Bans") == str(sum(d["effect"] == "ban" for d in active))
    entities = {(d["scope"], d["value"]) for d in active}
    assert metric(at, "Entities") == str(len(entities)) and len(entities) < len(active)
    assert len(at.dataframe[0].value) == len(entities)                  # one row per entity ...
    assert len(at.dataframe[1].value) == len(active)                    # ... and each decision below
    twice = {v for _s, v in entities if sum(d["value"] == v for d in active) > 1}
    for row in at.dataframe[0].value.to_dict("records"):
        value = row["entity"].split(" ", 1)[1]
        assert set(row["rules"].split(", ")) == {d["rule"] or "(admin)" for d in active if d["value"] == value}
    assert twice
    at.text_input(key="dec-rule").input("tag-scanner").run()
    assert metric(at, "Decisions") == str(sum(d["rule"] == "tag-scanner" for d in active))
    viewer = page(srv, "decisions")
    assert any("shown to admin keys" in c.value for c in viewer.caption)


def test_rules_hits_and_backtest(srv, page):
    at = page(srv, "rules")
    rules = srv.get("/v1/stats/rules", start="2026-11-21", end="2026-11-28")
    assert metric(at, "Rules") == str(len(rules))
    assert metric(at, "Findings") == str(sum(r["findings"] for r in rules))
    assert len(at.dataframe[0].value) == len(rules)
    at.button(key="rules-backtest").click().run()
    bt = srv.get("/v1/stats/backtest")
    assert metric(at, "TiB saved in all") == str(round(sum(r["bytes_saved"] for r in bt["rules"]) / TIB, 3))


def test_images_editor_match_box_and_demand(srv, page):
    at = page(srv, "images", role="admin")
    assert metric(at, "Blocked") == "0"
    at.selectbox(key="images-list").select("blocked")
    at.text_area(key="images-patterns").input("docker.io/library/busybox")
    at.text_input(key="images-edit-reason").input("nobody should pull busybox from us")
    at.button(key="images-edit-submit").click().run()
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Blocked") == "1"                  # the page shows the change at once
    assert any("audited" in s.value for s in at.success)
    at.text_input(key="images-match").input("busybox:1.36").run()
    assert any("refused" in w.value and "busybox" in w.value for w in at.warning)
    demand = srv.get("/v1/stats/demand", start="2026-11-21", end="2026-11-28", limit=50)
    assert demand and demand[0]["image"] == "docker.io/library/busybox"      # pulled in the demo month
    assert len(at.dataframe[-1].value) == len(demand) and specs(at)
    # (the server's clock stands still: order among the audit rows of one instant is not kept)
    assert "nobody should pull busybox from us" in [a["reason"] for a in srv.get("/v1/admin/audit", role="admin")]


def test_budget_and_reports(srv, page):
    at = page(srv, "budget")
    b = srv.get("/v1/stats/budget")
    assert metric(at, "Month to date (TiB)") == str(round(b.get("used_bytes", b["bytes"]) / TIB, 3))
    assert metric(at, "Projected month end (TiB)") == str(round((b.get("projected_bytes") or 0) / TIB, 3))
    assert specs(at)                                       # the burn-up with the projection and the budget
    at.number_input(key="whatif-rpm").set_value(30)
    at.number_input(key="whatif-window").set_value(2)
    at.button(key="whatif-submit").click().run()
    w = srv.get("/v1/stats/budget/whatif", rpm=30, burst=600, window_gib=2)
    assert metric(at, "With the changed tier (TiB)") == str(round(w["projected_bytes_after"] / TIB, 3))
    assert w["projected_bytes_after"] < w["projected_bytes"]
    # a report: its figures on the page are the report's JSON
    assert at.selectbox(key="reports-month").value == "2026-11"
    at.button(key="reports-json").click().run()
    report = srv.get("/v1/stats/reports/2026-11.json")
    assert metric(at, "2026-11: total (TiB)") == str(round(report["total_bytes"] / TIB, 3))
    assert any(b.label == "Save JSON" for b in at.get("download_button"))
    assert not at.exception


PAGES = ["overview", "traffic", "top", "entity", "review", "decisions", "rules", "images", "budget"]


@pytest.mark.parametrize("name", PAGES)
def test_every_page_on_an_empty_database_says_what_to_do(empty, page, name):
    at = page(empty, name, role="admin")
    text = " ".join([i.value for i in at.info] + [c.value for c in at.caption])
    assert not at.error, [e.value for e in at.error]
    if name in ("overview", "traffic", "top", "review"):
        assert "pullwarden demo" in text and "sources" in text, text


def test_no_server_or_a_bad_key_says_what_to_do(srv, page, monkeypatch):
    from tests.enforcer_helpers import free_port

    class Gone:
        url, keys = f"http://127.0.0.1:{free_port()}", {"viewer": "pw_x"}
    at = page(Gone, "overview")
    assert any("cannot reach pullwarden" in e.value and "pullwarden serve" in e.value for e in at.error)

    class BadKey:
        url, keys = srv.url, {"viewer": "pw_not-a-key"}
    at = page(BadKey, "traffic")
    assert any("invalid API key" in e.value and "keys create" in e.value for e in at.error)
