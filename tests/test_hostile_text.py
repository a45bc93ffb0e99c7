"""Attacker-controlled text in what operators read (issue 19 §7): a basic-auth user name, a
path's registry, a user agent are chosen by whoever sends the request. The dashboard shows them
as text (never Markdown or HTML: an image in a user name would make every operator's browser
fetch the attacker's URL), and the report's CSV never hands a spreadsheet a formula."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import httpx
import pytest

from tests.enforcer_helpers import Enforcer, free_port

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
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "dashboard",
                             "--api", srv.url, "--key", srv.keys["admin"], "--port", str(port)],
                            cwd=root, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the dashboard did not start"
            time.sleep(0.2)
        yield bait, users, url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
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
            # an API error that echoes the value (an AS number that is not one) is text too
            bad = users[0]
            page.goto(f"{url}/entity?kind=asn&value={quote(bad, safe='')}", wait_until="domcontentloaded")
            page.locator('[data-testid="stAlert"]').first.wait_for(timeout=60_000)
            assert page.locator(f'[data-testid="stMain"] img[src*="{bait.port}"]').count() == 0
            time.sleep(1)                   # an image the page asked for would have arrived by now
        finally:
            browser.close()
    assert bait.hits == []
