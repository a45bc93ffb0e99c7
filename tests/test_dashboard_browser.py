"""The dashboard in a real browser: `pullwarden dashboard` (a real streamlit server) against a live
API over the demo month, driven by Debian's Chromium through Playwright; the figures read from
the rendered page are the API's. One screenshot is saved (tests/artifacts/, not in git)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.dashboard_helpers import dashboard_process, serve

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

    # Decisions & audit: the count in force
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Decisions & audit", exact=True).click()
    page.get_by_role("heading", name="Decisions & audit").wait_for(timeout=60_000)
    active = srv.get("/v1/stats/decisions", active="true", limit=5000)
    assert metric(page, "Decisions") == str(len(active))
