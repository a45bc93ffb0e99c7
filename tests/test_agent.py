"""`pullwarden agent`: CRProxy's list files and nginx's include, checked by the real nginx."""
from __future__ import annotations

import http.server
import threading

import pytest
from click.testing import CliRunner

from cli.main import cli
from enforcer.agent import render, write_atomically
from tests.enforcer_helpers import Enforcer
from tests.nginx_helpers import needs_nginx, nginx, published_files


@pytest.fixture
def api(tmp_path):
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def seed(api):
    api.ban("203.0.113.7", reason="re-pull storm, 412 times")
    api.ban("198.51.100.0/30", scope="range", reason="rotation")
    api.ban("2001:db8:1::/64", scope="range", reason="rotation v6")
    api.ban("192.0.2.10", effect="throttle", tier="throttled", reason="heavy")
    api.ban("192.0.2.11", effect="boost", tier="unlimited", reason="partner")
    with api.services.lock:
        for lst, p in (("allowed", "docker.io/library/*"), ("allowed", "ghcr.io/**"), ("allowed", "Quay.io/x"),
                       ("unlimited", "docker.io/library/busybox")):
            api.store.execute("insert into image_lists values (?, ?, 'test', now())", [lst, p])
    api.services.publisher.publish()


def test_agent_writes_crproxy_and_nginx_files(api, tmp_path):
    seed(api)
    out = tmp_path / "out"
    pushed = {}

    class CRProxy(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            pushed[self.path] = self.rfile.read(int(self.headers["Content-Length"])).decode()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    crproxy = http.server.HTTPServer(("127.0.0.1", 0), CRProxy)
    threading.Thread(target=crproxy.serve_forever, daemon=True).start()
    marker = tmp_path / "reloaded"
    args = ["agent", "--api", api.url, "--key", api.keys["proxy"], "--out", str(out), "--once",
            "--reload", f"touch {marker}", "--crproxy", f"http://127.0.0.1:{crproxy.server_port}"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    crproxy.shutdown()
    assert res.exit_code == 0, res.output
    block = (out / "block-ips.csv").read_text().splitlines()
    assert block == ["198.51.100.0,rotation", "198.51.100.1,rotation", "198.51.100.2,rotation",
                     "198.51.100.3,rotation", "203.0.113.7,re-pull storm; 412 times"]   # sorted, ranges expanded
    assert (out / "allows.txt").read_text() == "Quay.io/x\ndocker.io/library/*\nghcr.io/**\n"   # byte order
    assert (out / "privileged-images.txt").read_text() == "docker.io/library/busybox\n"
    assert (out / "privileged-ips.txt").read_text() == "192.0.2.11\n"
    assert not (out / "blocked-images.txt").exists()                  # CRProxy refuses an empty list
    assert marker.exists()
    assert pushed["/internal/api/allows"] == (out / "allows.txt").read_text()
    assert pushed["/internal/api/block-ips"] == (out / "block-ips.csv").read_text()
    assert "2001:db8:1::/64 banned;" in (out / "nginx-pullwarden-http.conf").read_text()

    marker.unlink()                                                   # nothing changed: no rewrite, no reload
    assert CliRunner().invoke(cli, args[:-2]).exit_code == 0
    assert not marker.exists()


def test_agent_refused_key(api, tmp_path):
    res = CliRunner().invoke(cli, ["agent", "--api", api.url, "--key", "bad", "--out", str(tmp_path), "--once"])
    assert res.exit_code == 2 and "refused (403)" in res.stderr


def test_write_atomically_reports_only_changes(tmp_path):
    assert write_atomically(tmp_path, {"a": "1\n", "b": "2\n"}) == ["a", "b"]
    assert write_atomically(tmp_path, {"a": "1\n", "b": "3\n"}) == ["b"]
    assert not list(tmp_path.glob(".*.tmp"))


@needs_nginx
def test_nginx_enforces_the_include(api, tmp_path):
    import httpx
    seed(api)
    api.ban("127.0.0.2", reason="test ban")
    servers = f"""server {{
        listen 127.0.0.1:18099;
        location /v2/ {{
            include {tmp_path}/location.conf;
            return 200 "ok";
        }}
    }}"""
    with nginx(tmp_path, published_files(api), servers, 18099):
        assert httpx.get("http://127.0.0.1:18099/v2/", timeout=2).text == "ok"
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=2) as c:
            assert c.get("http://127.0.0.1:18099/v2/").status_code == 403     # the banned address


def test_an_emptied_list_is_removed_and_a_tier_never_frees_an_address_from_its_range_ban(tmp_path):
    policy = {"version": 3, "default_tiers": {"anonymous": "anonymous"},
              "tiers": {"anonymous": {"requests_per_minute": 20, "concurrent": 10, "blob_bytes_per_second": 1048576}},
              "bans": {"range:203.0.113.0/24": {"id": 1, "scope": "range", "value": "203.0.113.0/24",
                                                "reason": "rotation", "rule": "rotation-range"},
                       "ip:203.0.113.9:51234": {"id": 2, "scope": "ip", "value": "203.0.113.9:51234",
                                                "reason": "junk", "rule": "x"}},
              "assignments": {"ip:203.0.113.5": {"id": 3, "scope": "ip", "value": "203.0.113.5", "tier": "throttled",
                                                 "effect": "throttle", "reason": "heavy"}},
              "images": {"allowed": [], "unlimited": [], "blocked": []}}
    (tmp_path / "allows.txt").write_text("docker.io/library/*\n")
    files = render(policy, warn=lambda m: None)
    assert "203.0.113.5/32 throttled" not in files["nginx-pullwarden-http.conf"]
    assert "203.0.113.0/24 banned" in files["nginx-pullwarden-http.conf"]
    assert "51234" not in files["block-ips.csv"] and "51234" not in files["nginx-pullwarden-http.conf"]
    changed = write_atomically(tmp_path, files)
    assert "allows.txt (removed)" in changed and not (tmp_path / "allows.txt").exists()


def test_agent_follows_the_policy_by_its_changes(api):
    import httpx

    from enforcer.agent import poll
    seed(api)
    held = poll(api.url, api.keys["proxy"], None)                       # whole, the first time
    assert poll(api.url, api.keys["proxy"], held) is None               # nothing new
    gone = api.ban("192.0.2.99", reason="short")
    api.services.publisher.publish()
    held = poll(api.url, api.keys["proxy"], held)
    api.ban("203.0.113.8", reason="new storm")
    with api.services.lock:
        api.store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?",
                          [api.clock(), gone])
        api.store.execute("insert into image_lists values ('blocked', 'docker.io/x/*', 'test', now())")
    api.services.publisher.publish()
    held = poll(api.url, api.keys["proxy"], held)
    whole = httpx.get(api.url + "/v1/policy", headers=api.headers("proxy")).json()
    assert held["version"] == whole["version"] and "ip:203.0.113.8" in held["bans"]
    assert {k: held[k] for k in ("bans", "assignments", "images", "tiers")} == \
        {k: whole[k] for k in ("bans", "assignments", "images", "tiers")}
    stale = {**held, "version": 0}                       # a version the server has no delta from: 410
    assert poll(api.url, api.keys["proxy"], stale)["bans"] == whole["bans"]
