"""The dashboard in a real browser: `pullwarden dashboard` (a real streamlit server) against a live
API over the demo month, driven by Debian's Chromium through Playwright; the figures read from
the rendered page are the API's. One screenshot is saved (tests/artifacts/, not in git)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from core.countries import NAMES
from tests.dashboard_helpers import NOW, dashboard_process, serve

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TIB = 1 << 40

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=".ci/run installs chromium; not here")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    srv = serve(tmp_path_factory.mktemp("month"))
    try:
        with dashboard_process(srv, tmp_path_factory.mktemp("cwd")) as url:
            yield srv, url
    finally:
        srv.stop()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        tab = browser.new_page(viewport={"width": 1500, "height": 1300})
        yield tab
        browser.close()


def size(n: int) -> str:
    return f"{n / TIB:,.3f} TiB" if n >= TIB else f"{n / (1 << 30):,.2f} GiB"


def metric(page, label: str) -> str:
    """The value under a metric's label, as the browser renders it."""
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    box.first.wait_for(timeout=60_000)
    return box.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_the_dashboard_in_chromium(dashboard, page):
    srv, url = dashboard
    page.goto(url, wait_until="domcontentloaded")
    # Overview: today and month to date, as the API says
    budget = srv.get("/v1/stats/budget")
    overview = srv.get("/v1/stats/overview")
    assert metric(page, "Month to date (TiB)") == str(round(budget.get("used_bytes", budget["bytes"]) / TIB, 3))
    assert metric(page, "Today (TiB)") == str(round(overview["today"]["bytes"] / TIB, 3))
    # the first screen tells the story: over budget with the guard's (simulated) action, the bytes from
    # the buckets' logs, AS and country breakdowns with names, one line per decided entity
    assert budget["projected_bytes"] > budget["budget_bytes"]
    guard = budget["guard"]
    assert guard["action"]["simulated"] and guard["action"]["tier"] == "heavy"
    warning = page.get_by_text(re.compile(r"over its budget of ")).first.inner_text()
    assert f"Budget guard: {guard['action_text']}." in warning
    assert "would move anonymous traffic from tier anonymous to heavy (simulated" in warning
    assert metric(page, "Budget guard") == guard["level"] in ("projected", "100%")
    assert overview["object_bytes"] > 0 and overview["unjoined_bytes"] > 0
    objects = page.get_by_text(re.compile(r"of it from object-storage logs")).first.inner_text()
    assert f"{overview['object_bytes'] / TIB:,.3f} TiB of it from object-storage logs" in objects
    # and how sure each byte's client is (the demo's links carry a referer, or are fetched by
    # the client that asked: none by time alone; tests/test_object_join.py has S3's relay customers)
    exact, timed, unjoined = overview["exact_bytes"], overview["timed_bytes"], overview["unjoined_bytes"]
    assert exact > 0 and exact + timed + unjoined == overview["object_bytes"]
    assert (f": {size(exact)} joined to the client exactly (the link's referer or the client's own 307), "
            f"{size(timed)} by blob and time alone (an estimate), {size(unjoined)} not joined to a request") in objects
    assert "rolled up before" not in objects
    for by in ("asn", "country"):
        top = srv.get("/v1/stats/top", by=by, limit=6)["rows"]
        cell = page.locator(f'[data-testid="stDataFrame"]:has([role="gridcell"]:text-is("{top[0]["label"]}"))')
        cell.first.wait_for(state="attached", timeout=30_000)
    assert srv.get("/v1/stats/top", by="asn", limit=6)["rows"][0]["label"].startswith("AS")
    # countries by name, as GeoLite2 spells them, with the code (the waits above found them on the page)
    first = srv.get("/v1/stats/top", by="country", limit=6)["rows"][0]
    assert first["label"] == f"{NAMES[first['entity']]} ({first['entity']})"
    active = srv.get("/v1/stats/decisions", active="true", limit=5000)
    entities = {(d["scope"], d["value"]) for d in active}
    assert len(entities) < len(active)              # two rules decided one address: one line for it
    page.get_by_text(f"In force: {len(entities)} entities, {len(active)} decisions").wait_for(timeout=30_000)
    twice = sorted(v for v in {d["value"] for d in active} if sum(d["value"] == v for d in active) > 1)
    both = {d["rule"] for d in active if d["value"] == twice[0]}
    assert len(both) > 1

    def rules_cells() -> list[set]:
        """The rule lists in the page's tables' cells."""
        page.locator('[role="gridcell"]').first.wait_for(state="attached", timeout=30_000)
        return [set(c.split(", ")) for c in page.locator('[role="gridcell"]').all_text_contents() if "-" in c]
    assert both in rules_cells()
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=60_000)     # the stacked daily chart
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-overview.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000

    # Top talkers: the first row is the API's biggest address
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Top talkers", exact=True).click()
    page.get_by_role("heading", name="Top talkers").wait_for(timeout=60_000)
    top = srv.get("/v1/stats/top", by="address", start="2026-11-21", end="2026-11-28", limit=50)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
    # the grid draws on a canvas; its cells are also in the DOM for screen readers
    first = page.locator('[data-testid="stDataFrame"] [role="gridcell"]').filter(
        has_text=re.compile(r"^\d+\.\d+\.\d+\.\d+$|:")).first
    first.wait_for(state="attached", timeout=30_000)
    assert first.text_content().strip() == top["rows"][0]["entity"]
    caption = page.get_by_text(re.compile(r"in all from")).first.inner_text()
    total = top["total_bytes"]
    assert (f"{total / TIB:,.3f} TiB" if total >= TIB else f"{total / (1 << 30):,.2f} GiB") in caption
    page.screenshot(path=str(ARTIFACTS / "dashboard-top.png"), full_page=True)

    # selecting the first row (its checkbox, drawn on the grid's canvas) opens the entity
    grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    page.mouse.click(grid["x"] + 15, grid["y"] + 36 + 18)
    biggest = top["rows"][0]["entity"]
    page.get_by_role("heading", name=f"address {biggest}").wait_for(timeout=60_000)
    assert f"value={biggest}" in page.url                 # a link to this view
    entity = srv.get("/v1/stats/entity", kind="address", value=biggest)
    assert metric(page, "GiB (7 days)") == str(round(entity["totals"]["bytes"] / (1 << 30), 2))
    heading = page.get_by_role("heading", name=f"address {biggest}").inner_text()
    assert heading.endswith(f" · {NAMES[entity['country']]} ({entity['country']})"), heading

    # Decisions & audit: the count in force, one row per entity with every rule that decided
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Decisions & audit", exact=True).click()
    page.get_by_role("heading", name="Decisions & audit").wait_for(timeout=60_000)
    assert metric(page, "Decisions") == str(len(active))
    assert metric(page, "Entities") == str(len(entities))
    entity = f'[role="gridcell"]:text-is("{"range" if "/" in twice[0] else "ip"} {twice[0]}")'
    page.locator(entity).first.wait_for(state="attached", timeout=30_000)
    assert page.locator(entity).count() == 1 and both in rules_cells()

    # Review: times to the second in report_timezone (UTC here), never with microseconds
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Review", exact=True).click()
    page.get_by_role("heading", name="Review").wait_for(timeout=60_000)
    newest = page.get_by_text(re.compile(r"newest pass at")).first.inner_text()
    assert f"newest pass at {NOW:%Y-%m-%d %H:%M:%S} UTC." in newest, newest
    page.locator('[data-testid="stDataFrame"] [role="gridcell"]').first.wait_for(state="attached", timeout=30_000)
    cells = page.locator('[data-testid="stDataFrame"] [role="gridcell"]').all_text_contents()
    assert f"{NOW:%Y-%m-%d %H:%M:%S} UTC" in cells
    assert not [c for c in cells if re.search(r"\d\d:\d\d:\d\d\.\d", c)], "a time with fractions of a second"

    # Budget: what the guard's tighter tier would have saved this month
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Budget & reports", exact=True).click()
    page.get_by_role("heading", name="Budget & reports").wait_for(timeout=60_000)
    w = srv.get("/v1/stats/budget/whatif", tier="heavy")
    assert w["saved_bytes"] > 0
    assert metric(page, "Saved by that tier this month (TiB)") == str(round(w["saved_bytes"] / TIB, 3))
    page.screenshot(path=str(ARTIFACTS / "dashboard-budget.png"), full_page=True)
