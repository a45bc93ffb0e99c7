"""`pullwarden agent`: CRProxy's list files and nginx's include, checked by the real nginx."""
from __future__ import annotations

import http.server
import threading

import pytest
from click.testing import CliRunner

from cli.main import cli
from enforcer.agent import normalized, poll, render, run, write_atomically
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


class CRProxy:
    """A stand-in for CRProxy's /internal/api/*: records each PUT and answers from `answers`
    (endpoint -> [(status, body), ...], the last one repeated; 200 otherwise)."""

    def __init__(self):
        self.received: list[tuple[str, str]] = []
        self.answers: dict[str, list[tuple[int, str]]] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                endpoint = self.path.removeprefix("/internal/api/")
                outer.received.append((endpoint, body))
                queue = outer.answers.get(endpoint) or [(200, "")]
                status, text = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(text.encode())))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *a):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, endpoint: str) -> list[str]:
        return [b for e, b in self.received if e == endpoint]


@pytest.fixture
def crproxy():
    c = CRProxy()
    yield c
    c.server.shutdown()
    c.server.server_close()


class Done(Exception):
    pass


class Loop:
    """The agent's clock and sleep: time moves only when it sleeps; `between(round)` runs at
    each sleep and ends the loop by returning True (a loop that never gets there fails)."""

    def __init__(self, between):
        self.t, self.slept, self.between = 0.0, [], between

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        if self.between(len(self.slept)):
            raise Done
        assert len(self.slept) < 100, f"still going after {self.t:g} s: {self.slept[:20]}"


def agent_args(api, out, *more):
    return ["agent", "--api", api.url, "--key", api.keys["proxy"], "--out", str(out), *more]


def one_line_each(text: str) -> None:
    assert "Traceback" not in text
    assert all(line.startswith(("agent: ", "pullwarden: error: ")) for line in text.splitlines()), text


def test_agent_writes_crproxy_and_nginx_files(api, tmp_path, crproxy):
    seed(api)
    out = tmp_path / "out"
    marker = tmp_path / "reloaded"
    args = agent_args(api, out, "--once", "--reload", f"touch {marker}", "--crproxy", crproxy.url)
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    block = (out / "block-ips.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in block] == ["198.51.100.0", "198.51.100.1", "198.51.100.2",
                                                      "198.51.100.3", "203.0.113.7"]   # sorted, ranges expanded
    assert (out / "allows.txt").read_text() == "Quay.io/x\ndocker.io/library/*\nghcr.io/**\n"   # byte order
    assert (out / "privileged-images.txt").read_text() == "docker.io/library/busybox\n"
    assert marker.exists()
    assert crproxy.bodies("allows") == [(out / "allows.txt").read_text()]
    assert crproxy.bodies("privileged") == [(out / "privileged-images.txt").read_text()]
    assert crproxy.bodies("block-ips") == [(out / "block-ips.csv").read_text()]
    assert "2001:db8:1::/64 banned;" in (out / "nginx-pullwarden-http.conf").read_text()

    marker.unlink()                                                   # nothing changed: no rewrite, no reload
    res = CliRunner().invoke(cli, args[:-2])
    assert res.exit_code == 0 and "wrote" not in res.stderr
    assert not marker.exists()


def test_each_list_is_pushed_on_its_own_and_a_failure_names_url_status_and_body(api, tmp_path, crproxy):
    seed(api)
    crproxy.answers = {"allows": [(400, "hosts not sorted: ghcr.io/** before Quay.io/x\n")],
                       "privileged": [(404, "404 page not found\n")]}
    res = CliRunner().invoke(cli, agent_args(api, tmp_path / "out", "--once", "--crproxy", crproxy.url))
    assert res.exit_code == 1                                         # the files are written, a push failed
    assert crproxy.bodies("block-ips") == [(tmp_path / "out" / "block-ips.csv").read_text()]
    lines = res.stderr.splitlines()
    assert f"agent: PUT {crproxy.url}/internal/api/allows: 400 hosts not sorted: ghcr.io/** before Quay.io/x" in lines
    assert f"agent: PUT {crproxy.url}/internal/api/privileged: 404 404 page not found" in lines
    assert "agent: CRProxy took block-ips" in lines
    one_line_each(res.stderr)


def test_a_failed_push_is_retried_with_backoff_until_it_lands(api, tmp_path, crproxy, capsys):
    seed(api)
    crproxy.answers = {"block-ips": [(503, "busy")] * 8 + [(200, "")]}
    loop = Loop(lambda _: len(crproxy.bodies("block-ips")) == 9)
    with pytest.raises(Done):                 # the policy does not change: one poll in all that time
        run(api.url, api.keys["proxy"], str(tmp_path / "out"), None, crproxy.url, 1000,
            sleep=loop.sleep, clock=loop.clock)
    assert loop.slept[:8] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert len(crproxy.bodies("allows")) == len(crproxy.bodies("privileged")) == 1
    assert set(crproxy.bodies("block-ips")) == {(tmp_path / "out" / "block-ips.csv").read_text()}
    err = capsys.readouterr().err
    assert f"agent: PUT {crproxy.url}/internal/api/block-ips: 503 busy; retrying in 60 s" in err
    assert err.rstrip().endswith("agent: CRProxy took block-ips")


def test_a_fresh_agent_pushes_every_list_even_when_the_files_are_unchanged(api, tmp_path, crproxy):
    seed(api)
    out = tmp_path / "out"
    assert CliRunner().invoke(cli, agent_args(api, out, "--once")).exit_code == 0
    res = CliRunner().invoke(cli, agent_args(api, out, "--once", "--crproxy", crproxy.url))
    assert res.exit_code == 0 and "wrote" not in res.stderr
    assert crproxy.bodies("allows") == [(out / "allows.txt").read_text()]
    assert crproxy.bodies("privileged") == [(out / "privileged-images.txt").read_text()]
    assert crproxy.bodies("block-ips") == [(out / "block-ips.csv").read_text()]


def test_a_failing_reload_is_reported_and_once_exits_1(api, tmp_path):
    seed(api)
    cmd = "echo 'nginx: [emerg] unknown directive' >&2; exit 3"
    res = CliRunner().invoke(cli, agent_args(api, tmp_path / "out", "--once", "--reload", cmd))
    assert res.exit_code == 1
    assert (f"agent: reload {cmd!r} failed with exit status 3: nginx: [emerg] unknown directive"
            in res.stderr.splitlines())
    one_line_each(res.stderr)
    marker = tmp_path / "reloaded"
    again = agent_args(api, tmp_path / "out", "--once", "--reload", f"touch {marker}")
    res = CliRunner().invoke(cli, again)        # the next --once: the files are unchanged, the reload still due
    assert res.exit_code == 0 and "wrote" not in res.stderr and marker.exists()
    marker.unlink()
    assert CliRunner().invoke(cli, again).exit_code == 0 and not marker.exists()     # taken: no more


def test_a_failing_reload_is_retried_at_each_poll_until_it_succeeds(api, tmp_path, capsys):
    seed(api)
    tries, ready = tmp_path / "tries", tmp_path / "ready"
    cmd = f"echo x >> {tries}; test -e {ready} || {{ echo busy >&2; exit 3; }}"

    def between(round):
        if round == 2:
            ready.touch()
        return round == 4
    loop = Loop(between)
    with pytest.raises(Done):                 # the policy does not change after the first poll
        run(api.url, api.keys["proxy"], str(tmp_path / "out"), cmd, None, 10, sleep=loop.sleep, clock=loop.clock)
    assert len(tries.read_text().splitlines()) == 3                   # failed, failed, succeeded, then no more
    failures = [line for line in capsys.readouterr().err.splitlines() if "reload" in line]
    assert failures == [f"agent: reload {cmd!r} failed with exit status 3: busy; retrying at the next poll"] * 2


def test_the_same_policy_whole_or_by_delta_gives_identical_files_and_no_reload(api, tmp_path, capsys):
    # two bans on the same addresses: the renderer keeps the first, and a delta appends what
    # it adds where the whole policy is sorted by key
    api.ban("198.51.100.0/31", scope="range", reason="second")
    api.services.publisher.publish()
    out, reloads = tmp_path / "out", tmp_path / "reloads"
    cmd = f"echo x >> {reloads}"

    def between(round):
        if round == 1:
            api.ban("198.51.100.0/30", scope="range", reason="rotation")
            api.services.publisher.publish()
        return round == 2
    loop = Loop(between)
    with pytest.raises(Done):
        run(api.url, api.keys["proxy"], str(out), cmd, None, 10, sleep=loop.sleep, clock=loop.clock)
    assert "wrote" in capsys.readouterr().err.splitlines()[-1]         # the second poll was a delta
    assert len(reloads.read_text().splitlines()) == 2
    by_delta = {p.name: p.read_bytes() for p in out.iterdir()}

    whole = poll(api.url, api.keys["proxy"], None)
    assert {n: c.encode() for n, c in render(normalized(whole), warn=lambda m: None).items()} == by_delta
    res = CliRunner().invoke(cli, agent_args(api, out, "--once", "--reload", cmd))
    assert res.exit_code == 0 and "wrote" not in res.stderr
    assert len(reloads.read_text().splitlines()) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == by_delta


def test_a_new_ban_renders_and_writes_only_the_block_list_and_the_nginx_include(api, tmp_path, capsys):
    seed(api)
    out = tmp_path / "out"

    def between(round):
        if round == 1:
            api.ban("203.0.113.99", reason="one more")
            api.services.publisher.publish()
        return round == 2
    loop = Loop(between)
    with pytest.raises(Done):
        run(api.url, api.keys["proxy"], str(out), None, None, 10, sleep=loop.sleep, clock=loop.clock)
    wrote = [line for line in capsys.readouterr().err.splitlines() if "wrote" in line]
    assert "rendered 7 file(s)" in wrote[0]
    # the image lists and CRProxy's flags read no ban: neither rendered again nor written
    assert "wrote block-ips.csv, nginx-pullwarden-http.conf (rendered 4 file(s) in" in wrote[1], wrote[1]
    assert "203.0.113.99,one more\n" in (out / "block-ips.csv").read_text()


def test_dry_run_prints_a_diff_and_changes_nothing(api, tmp_path, crproxy):
    seed(api)
    out, marker = tmp_path / "out", tmp_path / "reloaded"
    out.mkdir()
    (out / "allows.txt").write_text("docker.io/library/*\n")
    res = CliRunner().invoke(cli, agent_args(api, out, "--dry-run", "--reload", f"touch {marker}",
                                             "--crproxy", crproxy.url))
    assert res.exit_code == 0, res.output
    assert f"--- {out}/allows.txt\n+++ {out}/allows.txt\n" in res.stdout
    assert "\n+Quay.io/x\n docker.io/library/*\n+ghcr.io/**\n" in res.stdout
    assert f"--- /dev/null\n+++ {out}/block-ips.csv\n" in res.stdout
    assert [p.name for p in out.iterdir()] == ["allows.txt"] and (out / "allows.txt").read_text() == "docker.io/library/*\n"
    assert not marker.exists() and crproxy.received == []
    assert "would PUT allows, privileged, block-ips" in res.stderr


def test_a_list_the_policy_no_longer_renders_is_left_in_place_with_a_warning(api, tmp_path, crproxy, monkeypatch):
    import enforcer.agent

    class WithoutAllows(enforcer.agent.Renderer):
        def __call__(self, p, **kw):
            return {n: c for n, c in super().__call__(p, **kw).items() if n != "allows.txt"}
    monkeypatch.setattr(enforcer.agent, "Renderer", WithoutAllows)
    out = tmp_path / "out"
    out.mkdir()
    (out / "allows.txt").write_text("docker.io/library/*\n")
    res = CliRunner().invoke(cli, agent_args(api, out, "--once", "--crproxy", crproxy.url))
    assert res.exit_code == 0, res.output
    assert (out / "allows.txt").read_text() == "docker.io/library/*\n"       # what a running CRProxy points at
    assert "agent: allows.txt left as it was: CRProxy cannot take an empty list" in res.stderr
    assert crproxy.bodies("allows") == [] and len(crproxy.bodies("block-ips")) == 1


def test_an_unreachable_server_is_one_line(tmp_path):
    from tests.enforcer_helpers import free_port
    url = f"http://127.0.0.1:{free_port()}"
    res = CliRunner().invoke(cli, ["agent", "--api", url, "--key", "k", "--out", str(tmp_path), "--once"])
    assert res.exit_code == 2
    assert res.stderr.startswith(f"pullwarden: error: GET {url}/v1/policy: ") and res.stderr.count("\n") == 1


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


def test_a_tier_never_frees_an_address_from_its_range_ban():
    policy = {"version": 3, "default_tiers": {"anonymous": "anonymous"},
              "tiers": {"anonymous": {"requests_per_minute": 20, "concurrent": 10, "blob_bytes_per_second": 1048576}},
              "bans": {"range:203.0.113.0/24": {"id": 1, "scope": "range", "value": "203.0.113.0/24",
                                                "reason": "rotation", "rule": "rotation-range"},
                       "ip:203.0.113.9:51234": {"id": 2, "scope": "ip", "value": "203.0.113.9:51234",
                                                "reason": "junk", "rule": "x"}},
              "assignments": {"ip:203.0.113.5": {"id": 3, "scope": "ip", "value": "203.0.113.5", "tier": "throttled",
                                                 "effect": "throttle", "reason": "heavy"}},
              "images": {"allowed": [], "unlimited": [], "blocked": []}}
    files = render(policy, warn=lambda m: None)
    assert "203.0.113.5/32 throttled" not in files["nginx-pullwarden-http.conf"]
    assert "203.0.113.0/24 banned" in files["nginx-pullwarden-http.conf"]
    assert "51234" not in files["block-ips.csv"] and "51234" not in files["nginx-pullwarden-http.conf"]


def test_agent_follows_the_policy_by_its_changes(api):
    import httpx

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


def test_a_new_version_that_changes_nothing_nginx_enforces_gives_the_same_include(api):
    api.ban("203.0.113.7", reason="storm")
    before = published_files(api)
    api.ban("alice", scope="user", effect="throttle", tier="throttled", reason="heavy")   # not in nginx's files
    after = published_files(api)
    assert before["nginx-pullwarden-location.conf"] == after["nginx-pullwarden-location.conf"]
    assert before["nginx-pullwarden-http.conf"] == after["nginx-pullwarden-http.conf"]


def test_dry_run_lists_what_no_file_can_say(api, tmp_path):
    api.ban("64500", scope="asn", reason="a bad network")
    api.ban("198.51.0.0/16", scope="range", reason="wide")
    with api.services.lock:
        api.store.execute("insert into image_lists values ('blocked', 'docker.io/evil/*', 'malware', now())")
    api.services.publisher.publish()
    res = CliRunner().invoke(cli, ["agent", "--api", api.url, "--key", api.keys["proxy"], "--out", str(tmp_path / "o"),
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "1 AS-number ban(s) without networks" in res.stderr and "serve has no asn_db" in res.stderr
    assert "banned range(s) wider than 256 addresses are not in block-ips.csv" in res.stderr
    assert "blocked image pattern(s) are not expressed" in res.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
