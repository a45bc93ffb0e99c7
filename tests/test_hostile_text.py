"""Attacker-controlled text in what operators read (issue 19 §7): a basic-auth user name, a
path's registry, a user agent are chosen by whoever sends the request. The dashboard shows them
as text (never Markdown or HTML: an image in a user name would make every operator's browser
fetch the attacker's URL), and the report's CSV never hands a spreadsheet a formula."""
from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest

from tests.dashboard_helpers import dashboard_process
from tests.enforcer_helpers import Enforcer

CHROMIUM = "/usr/bin/chromium"
BLOB = "sha256:" + "a" * 64


class Bait:
    """A loopback HTTP server that records every request: the URL the hostile names point at."""

    def __init__(self):
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def hostile_users(port: int) -> list[str]:
    base = f"http://127.0.0.1:{port}"
    # nginx logs $remote_user as sent (only quotes and control bytes escaped); no spaces here, as
    # the combined format splits on them
    return [f"![u]({base}/u.png)", f"x`![b]({base}/b.png)`", f"[clickme]({base}/click)",
            f"<img/src={base}/h.png>", f":red[{base}/r.png]", f"**bold**_{base}/t"]


def log_line(ip: str, user: str, minute: int) -> str:
    return (f'{ip} - {user} [27/Nov/2026:11:{minute:02d}:00 +0000] "GET /v2/docker.io/library/nginx/blobs/{BLOB} '
            'HTTP/1.1" 200 1048576 "-" "docker/27.3.1 go/go1.22.7"')


@pytest.fixture(scope="module")
def hostile_dashboard(tmp_path_factory):
    """A live API over a log whose user names are Markdown and HTML aimed at a bait server, and
    `pullwarden dashboard` (a real streamlit server) in front of it with an admin key."""
    from ingest.pipeline import Ingester
    from rules.rollup import roll_up
    bait = Bait()
    users = hostile_users(bait.port)
    root = tmp_path_factory.mktemp("hostile")
    (root / "access.log").write_text("".join(log_line(f"203.0.113.{i + 1}", u, m) + "\n"
                                             for i, u in enumerate(users) for m in range(3)))
    srv = Enforcer(root)
    with srv.services.lock:
        Ingester(srv.store, srv.cfg).run([str(root / "access.log")])
        roll_up(srv.store)
    for u in users:                     # a decision in force: the Revoke form is drawn too
        srv.ban(u, hours=24, scope="user", reason=f"hits from {u}")
    try:
        with dashboard_process(srv, root) as url:
            yield bait, users, url
    finally:
        srv.stop()
        bait.close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=".ci/run installs chromium; not here")
def test_log_values_are_text_on_the_entity_page(hostile_dashboard):
    from playwright.sync_api import sync_playwright
    bait, users, url = hostile_dashboard
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1300})
            for user in users:
                page.goto(f"{url}/entity?kind=user&value={quote(user, safe='')}", wait_until="domcontentloaded")
                # the title and the three action forms name the user, literally
                page.get_by_role("heading", name=f"user {user}", exact=True).wait_for(timeout=60_000)
                page.get_by_text("Revoke a decision in force").wait_for(timeout=60_000)
                for verb in ("Ban user", "Put in a tier user", "Allowlist user"):
                    assert page.get_by_text(f"{verb} {user}").count() == 1, (verb, user)
                main = page.locator('[data-testid="stMain"]')
                assert main.locator(f'img[src*="{bait.port}"]').count() == 0
                links = main.locator(f'a[href*="127.0.0.1:{bait.port}"]')      # not the heading's own #anchor
                assert links.count() == 0, [links.nth(i).evaluate("e => e.outerHTML") for i in range(links.count())]
                assert main.locator('[data-testid="stMarkdownContainer"] strong', has_text="bold").count() == 0
            # the overview: its "In force" table gives every ban's reason, which names the user
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text(f"In force: {len(users)} entities").wait_for(timeout=60_000)
            page.locator('[data-testid="stDataFrame"] [role="gridcell"]').filter(
                has_text=f"hits from {users[0]}").first.wait_for(state="attached", timeout=60_000)
            main = page.locator('[data-testid="stMain"]')
            assert main.locator(f'img[src*="{bait.port}"], a[href*="127.0.0.1:{bait.port}"]').count() == 0
            assert main.locator('[data-testid="stMarkdownContainer"] strong', has_text="bold").count() == 0
            # Top talkers by user: the names in the grid, the chart and the "Open" list (drawn
            # when it is opened)
            page.goto(f"{url}/top", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Top talkers").wait_for(timeout=60_000)
            page.locator('[data-testid="stSelectbox"]').filter(has_text="By").locator("input").click()
            page.get_by_role("option", name="User", exact=True).click()
            # the page by user is drawn once the grid holds them (its cells are also in the DOM,
            # for screen readers)
            page.locator('[data-testid="stDataFrame"] [role="gridcell"]').filter(
                has_text=f"127.0.0.1:{bait.port}").first.wait_for(state="attached", timeout=60_000)
            opener = page.locator('[data-testid="stSelectbox"]').filter(has_text="Open")
            opener.locator("input").click()
            page.get_by_role("option").nth(len(users) - 1).wait_for(timeout=30_000)
            assert sorted(page.get_by_role("option").all_inner_texts()) == sorted(users)
            assert page.locator(f'img[src*="127.0.0.1:{bait.port}"], a[href*="127.0.0.1:{bait.port}"]').count() == 0
            page.keyboard.press("Escape")
            # an API error that echoes the value (an AS number that is not one) is text too
            bad = users[0]
            page.goto(f"{url}/entity?kind=asn&value={quote(bad, safe='')}", wait_until="domcontentloaded")
            page.locator('[data-testid="stAlert"]').first.wait_for(timeout=60_000)
            assert page.locator(f'[data-testid="stMain"] img[src*="{bait.port}"]').count() == 0
            time.sleep(1)                   # an image the page asked for would have arrived by now
        finally:
            browser.close()
    assert bait.hits == []


# --- registry names from request paths: CSV cells and Parquet folder names -------------------

FORMULAS = ["=1+1.io", "@sum(1+1).io", "-2+3.io", "+x.io"]
LONG = "r" * 296 + ".io"                    # 300 characters: longer than a file name may be


def registry_line(day: int, registry: str, ip: str = "198.51.100.9", size: int = 7 << 30) -> str:
    return pull_line(day, f"/v2/{registry}/library/app/blobs/{BLOB}", ip, size)


def pull_line(day: int, path: str, ip: str = "198.51.100.9", size: int = 7 << 30) -> str:
    return (f'{ip} - - [{day:02d}/Nov/2026:10:00:00 +0000] "GET {path} HTTP/1.1" 200 {size} "-" '
            '"docker/27.3.1 go/go1.22.7"')


def hostile_log(path, days=(20, 21, 22)) -> None:
    """Each day: docker.io, the formula-looking registries; the first day also the 300-character
    one, and a pull whose registry (containerd's ?ns=, which can say anything) is the name of the
    folder the long one is given."""
    from reports.export import hive_value
    lines = []
    for day in days:
        lines += [registry_line(day, "docker.io")] + [registry_line(day, r) for r in FORMULAS]
    lines.append(registry_line(days[0], LONG))
    lines.append(pull_line(days[0], f"/v2/library/app/blobs/{BLOB}?ns={hive_value(LONG)}"))
    path.write_text("\n".join(lines) + "\n")


def cli_run(*args):
    from click.testing import CliRunner

    from cli.main import cli
    return CliRunner().invoke(cli, list(args))


def test_the_report_csv_has_no_cell_a_spreadsheet_would_run(workdir):
    import csv
    import io
    hostile_log(workdir / "access.log")
    assert cli_run("ingest", str(workdir / "access.log")).exit_code == 0
    res = cli_run("report", "monthly", "--month", "2026-11", "--out", str(workdir / "out"))
    assert res.exit_code == 0, res.output
    text = (workdir / "out" / "pullwarden-report-2026-11.csv").read_text()
    cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    # the names are all there, each behind the quote OWASP recommends
    for name in FORMULAS:
        assert "'" + name in cells, name


def test_export_parquet_survives_a_registry_name_no_file_system_takes(workdir):
    import duckdb
    hostile_log(workdir / "access.log")
    assert cli_run("ingest", str(workdir / "access.log")).exit_code == 0
    dest = workdir / "lake"
    res = cli_run("export", "parquet", "--since", "2026-11-20", str(dest), "--json")
    assert res.exit_code == 0, res.output
    assert [d["day"] for d in json.loads(res.stdout)["days"]] == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert not [p for p in workdir.iterdir() if p.name.startswith(".lake.")]       # no staging left
    folders = {p.name for p in dest.glob("day=*/registry=*")}
    assert "registry=docker.io" in folders and "registry=%3D1+1.io" in folders     # normal names stay readable
    assert max(len(f.encode()) for f in folders) <= 120
    # nothing lost: the stored registry of every event is in the files
    con = duckdb.connect(str(workdir / "data" / "pullwarden.duckdb"), read_only=True)
    stored = sorted(con.execute("select ts::date, registry, bytes from events where registry is not null").fetchall())
    con.close()
    back = duckdb.connect().execute(f"""select day, registry_name, bytes from read_parquet('{dest}/**/*.parquet',
        hive_partitioning = true) where registry_name is not null""").fetchall()
    assert sorted(back) == stored and LONG in {r[1] for r in back}


def test_one_day_that_cannot_be_exported_does_not_stop_the_others(workdir):
    hostile_log(workdir / "access.log")
    assert cli_run("ingest", str(workdir / "access.log")).exit_code == 0
    (workdir / ".lake.staging-2026-11-21").write_text("in the way")    # not a folder: that day cannot be staged
    res = cli_run("export", "parquet", "--since", "2026-11-20", str(workdir / "lake"), "--json")
    assert res.exit_code == 2
    out = json.loads(res.stdout)
    assert [d["day"] for d in out["days"]] == ["2026-11-20", "2026-11-22"]
    assert [f["day"] for f in out["failed"]] == ["2026-11-21"]
    assert "2026-11-21" in res.stderr and "Traceback" not in res.output + res.stderr
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".lake.")) == [".lake.staging-2026-11-21"]


def test_a_csv_frozen_before_the_cells_were_neutralised_is_given_out_neutralised(workdir):
    """A closed month's report is frozen in the database: one frozen by an earlier release holds
    the formula cells as they were, and is neutralised on the way out (a safe one is unchanged)."""
    import duckdb
    hostile_log(workdir / "access.log")
    assert cli_run("ingest", str(workdir / "access.log")).exit_code == 0
    assert cli_run("report", "monthly", "--month", "2026-11", "--out", str(workdir / "a"),
                   "--now", "2026-12-05T00:00:00").exit_code == 0
    safe = (workdir / "a" / "pullwarden-report-2026-11.csv").read_text()
    con = duckdb.connect(str(workdir / "data" / "pullwarden.duckdb"))
    con.execute("update reports set csv = replace(csv, '''=1+1.io', '=1+1.io')")     # as an earlier release froze it
    con.close()
    res = cli_run("report", "monthly", "--month", "2026-11", "--out", str(workdir / "b"), "--now", "2026-12-05T00:00:00")
    assert res.exit_code == 0 and "frozen" in res.output
    assert (workdir / "b" / "pullwarden-report-2026-11.csv").read_text() == safe
