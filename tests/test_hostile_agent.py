"""Issue 19 §4: the agent renders nothing it was sent until the whole answer checks out. A
stand-in server on loopback answers what a fake or compromised API might: a tier name that
closes nginx's block and opens a server of its own, a version alone, wrong types, a gzip bomb;
and a symlink waits in the output folder. Each time the agent writes nothing, --once exits 2
with one line, and the loop goes on polling."""
from __future__ import annotations

import copy
import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from enforcer.agent import run
from tests.enforcer_helpers import Enforcer
from tests.nginx_helpers import needs_nginx


class Hostile:
    """GET /v1/policy and /v1/policy/changes answered from queues of (status, headers, body):
    each answer taken in turn, the last one repeated."""

    def __init__(self):
        self.answers: dict[str, list[tuple[int, dict, bytes]]] = {}
        self.asked: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                outer.asked.append(self.path)
                queue = outer.answers.get(path) or [(404, {}, b'{"detail": "Not Found"}')]
                status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:             # the agent stopped reading: that is the point
                    pass

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def policy(self, *docs, gzipped: bool = False) -> None:
        self.answers["/v1/policy"] = [answer(d, gzipped) for d in docs]

    def changes(self, *docs) -> None:
        self.answers["/v1/policy/changes"] = [answer(d) for d in docs]


def answer(doc, gzipped: bool = False) -> tuple[int, dict, bytes]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return (200, {"Content-Encoding": "gzip"}, gzip.compress(body)) if gzipped else (200, {}, body)


@pytest.fixture
def hostile():
    h = Hostile()
    yield h
    h.server.shutdown()
    h.server.server_close()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> dict:
    """A policy as the real server publishes it: bans of each scope, a throttle, a boost, image
    lists and an allowlist entry."""
    e = Enforcer(tmp_path_factory.mktemp("genuine"))
    try:
        e.ban("203.0.113.7", reason="re-pull storm, 412 times")
        e.ban("198.51.100.0/30", scope="range", reason="rotation")
        e.ban("64500", scope="asn", reason="asn")
        e.ban("mallory", scope="user", reason="scraper")
        e.ban("192.0.2.10", effect="throttle", tier="throttled", reason="heavy")
        e.ban("192.0.2.11", effect="boost", tier="unlimited", reason="partner")
        with e.services.lock:
            for lst, p in (("allowed", "docker.io/library/*"), ("unlimited", "docker.io/library/busybox"),
                           ("blocked", "docker.io/evil/*")):
                e.store.execute("insert into image_lists values (?, ?, 'test', now())", [lst, p])
            e.store.execute("insert into allowlist values ('cidr', '198.51.100.0/31', 'office', now(), null)")
        e.services.publisher.publish()
        return json.loads(gzip.decompress(e.services.publisher.current.body))
    finally:
        e.stop()


def agent(hostile, out, *more):
    return CliRunner().invoke(cli, ["agent", "--api", hostile.url, "--key", "k", "--out", str(out), "--once", *more])


def snapshot(folder: Path) -> dict:
    """Every entry of the folder: name → (kind, bytes or link target, mtime)."""
    return {p.name: ("link", os.readlink(p), None) if p.is_symlink() else ("file", p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir())}


@pytest.fixture
def written(hostile, genuine, tmp_path) -> Path:
    """An output folder the agent filled from the genuine policy."""
    out = tmp_path / "out"
    hostile.policy(genuine)
    res = agent(hostile, out)
    assert res.exit_code == 0, res.output
    return out


def refused_in_one_line(res, *words) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pullwarden: error: GET "), res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


INJECTED = 'x; } server { listen 127.0.0.1:18123; location / { root /etc; } } map $x $y {\n default'


def with_tier(policy: dict, name: str) -> dict:
    doc = copy.deepcopy(policy)
    doc["tiers"][name] = dict(doc["tiers"]["throttled"])
    doc["default_tiers"]["anonymous"] = name
    doc["assignments"]["ip:192.0.2.10"]["tier"] = name
    doc["version"] += 1
    return doc


def test_a_tier_name_that_opens_a_server_block_never_reaches_the_include(hostile, genuine, written):
    before = snapshot(written)
    hostile.policy(with_tier(genuine, INJECTED))
    res = agent(hostile, written)
    refused_in_one_line(res, ".tier: a tier name is a letter")
    assert snapshot(written) == before
    assert not any("18123" in p.read_text() or "root /etc" in p.read_text() for p in written.iterdir())


@needs_nginx
def test_the_files_kept_after_a_refusal_are_still_the_genuine_ones_nginx_takes(hostile, genuine, written, tmp_path):
    hostile.policy(with_tier(genuine, INJECTED))
    assert agent(hostile, written).exit_code == 2
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log; events {{}}
http {{ include {written}/nginx-pullwarden-http.conf;
        server {{ listen 127.0.0.1:18124;
                  location /v2/ {{ include {written}/nginx-pullwarden-location.conf; }} }} }}""")
    r = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def mutated(genuine, path: tuple, value):
    doc = copy.deepcopy(genuine)
    node = doc
    for k in path[:-1]:
        node = node[k]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()
MALFORMED = {
    "the version alone": lambda g: {"version": 7},
    "a version as text": lambda g: mutated(g, ("version",), "7"),
    "a version that is true": lambda g: mutated(g, ("version",), True),
    "a version of 1e400": lambda g: json.dumps(g).replace(f'"version": {g["version"]}', '"version": 1e400').encode(),
    "bans as a list": lambda g: mutated(g, ("bans",), []),
    "a ban without its value": lambda g: mutated(g, ("bans", "ip:203.0.113.7", "value"), DELETE),
    "a ban of no address": lambda g: {**mutated(g, ("bans",), {}), "bans": {"ip:not-an-ip": {
        **g["bans"]["ip:203.0.113.7"], "value": "not-an-ip"}}},
    "a key that is not the entry's": lambda g: mutated(g, ("bans", "ip:192.0.2.99"), g["bans"]["ip:203.0.113.7"]),
    "a reason as a number": lambda g: mutated(g, ("bans", "ip:203.0.113.7", "reason"), 5),
    "a user with a newline": lambda g: {**g, "bans": {"user:a\nb": {**g["bans"]["user:mallory"], "value": "a\nb"}}},
    "an effect that is no effect": lambda g: mutated(g, ("assignments", "ip:192.0.2.10", "effect"), "ban"),
    "a limit as text": lambda g: mutated(g, ("tiers", "throttled", "requests_per_minute"), "30; }"),
    "a negative limit": lambda g: mutated(g, ("tiers", "throttled", "concurrent"), -1),
    "a tier without its limits": lambda g: mutated(g, ("tiers", "throttled"), {}),
    "a tier named default": lambda g: with_tier(g, "default"),
    "a tier named include": lambda g: with_tier(g, "include"),
    "a tier named banned": lambda g: with_tier(g, "banned"),
    "two tiers of one zone": lambda g: mutated(with_tier(g, "fast-lane"), ("tiers", "fast_lane"), g["tiers"]["heavy"]),
    "a default tier of no name": lambda g: mutated(g, ("default_tiers", "authenticated"), None),
    "an image list as text": lambda g: mutated(g, ("images", "allowed"), "docker.io/**"),
    "a pattern with a newline": lambda g: mutated(g, ("images", "allowed"), ["docker.io/library/*\nevil.io/**"]),
    "an allowlist entry of no range": lambda g: mutated(g, ("allowlist",), ["0.0.0.0/0; }"]),
    "a default registry that closes the map": lambda g: mutated(g, ("requests", "default_registry"), 'x"; }\n'),
    "a mirror host that opens a block": lambda g: mutated(g, ("requests", "host_registries"), {"a.example {": "gcr.io"}),
    "credentials checked as text": lambda g: mutated(g, ("requests", "upstream_checks_credentials"), "yes"),
    "an AS network that closes the geo": lambda g: mutated(g, ("asn_networks",), {"64500": ["10.0.0.0/8 1; }"]}),
    "an AS networks section as a list": lambda g: mutated(g, ("asn_networks",), ["10.0.0.0/8"]),
    "an AS number that is no number": lambda g: mutated(g, ("asn_networks",), {"AS64500x": ["10.0.0.0/8"]}),
    "HTML": lambda g: b"<html><body>502 Bad Gateway</body></html>",
    "nesting a million deep": lambda g: b"[" * 1_000_000 + b"]" * 1_000_000,
    "a list": lambda g: [g],
    "null": lambda g: None,
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_answer_is_one_line_exit_2_and_nothing_written(hostile, genuine, written, case):
    before = snapshot(written)
    hostile.policy(MALFORMED[case](genuine))
    res = agent(hostile, written)
    refused_in_one_line(res, f"GET {hostile.url}/v1/policy: ")
    assert snapshot(written) == before


@pytest.mark.parametrize("headers, body, words", [
    ({"Content-Encoding": "gzip"}, b"<html>this is not gzip</html>", "not gzip"),
    ({"Content-Encoding": "gzip"}, gzip.compress(b'{"version": 1, "bans": {}}')[:-12], "ends inside its gzip"),
    ({"Content-Encoding": "br"}, b"\x00\x01", "'br'"),
])
def test_a_broken_encoding_is_a_failed_fetch(hostile, written, headers, body, words):
    before = snapshot(written)
    hostile.answers["/v1/policy"] = [(200, headers, body)]
    refused_in_one_line(agent(hostile, written), words)
    assert snapshot(written) == before


def bomb(unpacked_mb: int = 1024) -> bytes:
    """~1 MB of gzip that unpacks to ``unpacked_mb`` MB of zeros: members of 1 MB each, one after
    another, as gzip allows (and quick to make)."""
    return gzip.compress(bytes(1 << 20)) * unpacked_mb


def test_a_gzip_bomb_stops_at_the_cap_and_memory_stays_small(hostile, tmp_path):
    body = bomb()
    assert len(body) < 1.1 * (1 << 20)
    hostile.answers["/v1/policy"] = [(200, {"Content-Encoding": "gzip"}, body)]
    out, peak = tmp_path / "out", tmp_path / "peak"
    # the agent in a process of its own, which reports its peak resident size as it exits: its
    # own address space's high-water mark (VmHWM). getrusage's ru_maxrss is not: Linux carries it
    # over exec from the forked parent, so after a few hundred tests it read pytest's size (875 MB)
    child = (f"import atexit, sys; from cli.main import cli; "
             f"rss = lambda: next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')); "
             f"atexit.register(lambda: open({str(peak)!r}, 'w').write(rss())); "
             f"cli(['agent', '--api', {hostile.url!r}, '--key', 'k', '--out', {str(out)!r}, '--once'])")
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    peak_mb = int(peak.read_text()) / 1024
    assert peak_mb < 450, peak_mb           # measured 302 MB; before the cap 2,094 MB
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [f"pullwarden: error: GET {hostile.url}/v1/policy: the answer unpacks to more "
                                     "than 256 MB (pullwarden agent --max-policy-mb)"]
    assert not out.exists() or not list(out.iterdir())


def test_a_plain_answer_over_the_cap_is_refused_too(hostile, genuine, tmp_path):
    hostile.answers["/v1/policy"] = [(200, {}, json.dumps(genuine).encode() + b" " * (2 << 20))]
    with pytest.raises(RuntimeError, match="unpacks to more than 1 MB"):
        run(hostile.url, "k", str(tmp_path / "out"), None, None, 10, once=True, max_mb=1)


def test_an_error_answer_is_read_no_further_than_a_line(hostile, written):
    hostile.answers["/v1/policy"] = [(502, {}, b"bad gateway " * 1_000_000)]
    refused_in_one_line(agent(hostile, written), "502 bad gateway")


def test_a_symlink_in_the_folder_is_never_written_through(hostile, genuine, tmp_path):
    out, victims = tmp_path / "out", tmp_path / "victims"
    out.mkdir()
    victims.mkdir()
    for name in ("tmp-target", "allows-target", "pending-target"):
        (victims / name).write_text("precious\n")
    (out / ".allows.txt.tmp").symlink_to(victims / "tmp-target")          # the old temporary name
    (out / "allows.txt").symlink_to(victims / "allows-target")
    (out / ".reload-pending").symlink_to(victims / "pending-target")
    hostile.policy(genuine)
    res = agent(hostile, out, "--reload", "exit 3")          # the reload fails: the marker is written
    assert res.exit_code == 1, res.output
    assert {p.name: p.read_text() for p in victims.iterdir()} == dict.fromkeys(
        ("tmp-target", "allows-target", "pending-target"), "precious\n")
    assert not (out / "allows.txt").is_symlink() and (out / "allows.txt").read_text() == "docker.io/library/*\n"
    assert not (out / ".reload-pending").is_symlink()
    assert (out / ".allows.txt.tmp").is_symlink()                         # left alone, never used
    assert sorted(p.name for p in out.glob(".*.tmp")) == [".allows.txt.tmp"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in out.iterdir() if not p.name.startswith("."))


class Done(Exception):
    pass


def test_the_loop_survives_every_malformed_answer_and_backs_off(hostile, genuine, tmp_path, capsys):
    out = tmp_path / "out"
    hostile.policy(*(MALFORMED[c](genuine) for c in ("the version alone", "bans as a list", "HTML",
                                                     "a tier named include")), genuine)
    t, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        t[0] += seconds
        if out.exists() and (out / "allows.txt").exists():
            raise Done
        assert len(slept) < 50, slept
    with pytest.raises(Done):
        run(hostile.url, "k", str(out), None, None, 10, sleep=sleep, clock=lambda: t[0])
    assert slept == [10, 20, 40, 60, 10]            # each failure in a row waits twice as long, up to a minute
    text = capsys.readouterr().err
    assert "Traceback" not in text
    err = [line for line in text.splitlines() if line.startswith(("agent: GET", "agent: policy version"))]
    assert len(err) == 5, err
    assert all(line.startswith(f"agent: GET {hostile.url}/v1/policy: ") and "keeping the current files" in line
               for line in err[:4]), err
    assert err[0].endswith("trying again in 10 s") and err[3].endswith("trying again in 60 s")
    assert err[4].startswith(f"agent: policy version {genuine['version']}: wrote ")


def test_the_pause_stays_a_minute_however_long_the_failures_go_on():
    from enforcer.agent import backoff
    assert [backoff(10, n) for n in (1, 2, 3, 4, 5, 1440, 10**6)] == [10, 20, 40, 60, 60, 60, 60]  # a day, and more
    assert [backoff(0.5, n) for n in (1, 2, 7, 8)] == [1, 2, 60, 60]
    assert backoff(300, 9) == 300


def test_a_malformed_change_is_refused_and_the_held_policy_kept(hostile, genuine, tmp_path, capsys):
    """A change is checked as the whole policy is; the policy held before it stays as it was."""
    out, v = tmp_path / "out", genuine["version"]
    entry = {**genuine["bans"]["ip:203.0.113.7"], "value": "203.0.113.8"}
    good = {"since": v, "version": v + 1, "upsert": {"bans": [entry], "assignments": []},
            "remove": {"bans": [], "assignments": []}, "sections": {}}
    hostile.policy(genuine)
    hostile.changes({"version": v + 1},
                    {**good, "upsert": {"bans": [{**entry, "value": "x\n} server {"}], "assignments": []}},
                    {**good, "sections": {"tiers": {**genuine["tiers"], "include": genuine["tiers"]["heavy"]}}},
                    {**good, "since": v - 1},
                    {**good, "sections": {"bans": {"ip:x": {**entry, "value": "x\n} server {"}}}},
                    {**good, "since": v + 1, "upsert": {"bans": [], "assignments": []}})       # nothing new
    t, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        t[0] += seconds
        if len(slept) == 7:
            raise Done
        assert "x\n" not in (out / "nginx-pullwarden-http.conf").read_text()
        assert len(slept) < 50, slept
    with pytest.raises(Done):
        run(hostile.url, "k", str(out), None, None, 10, sleep=sleep, clock=lambda: t[0])
    assert slept == [10, 10, 20, 40, 60, 10, 10]     # after the change is applied, polls as usual
    assert all("/v1/policy/changes?since=" in p for p in hostile.asked[1:])      # the held policy was kept
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("agent: GET")]
    whys = [line.split("can render: ")[1].split(":")[0] for line in err]
    assert whys == ["the change", "upsert.bans[0].value", "sections.tiers", "since"]
    # a section by the name of bans is not a section: ignored, the change's own bans applied
    assert '203.0.113.8,"re-pull storm' in (out / "block-ips.csv").read_text()


def test_the_channel_is_tls_or_loopback_and_anything_else_is_said():
    from enforcer.agent import channel
    assert channel("https://pullwarden.internal:8443") is None
    assert channel("http://127.0.0.1:8080") is channel("http://[::1]:8080") is channel("http://localhost:8080") is None
    assert "plain HTTP to another host" in channel("http://10.0.0.5:8080")
    for bad in ("file:///etc/pullwarden", "ftp://10.0.0.5/", "10.0.0.5:8080"):
        with pytest.raises(RuntimeError, match="an http:// or https:// URL was expected"):
            channel(bad)


@needs_nginx
def test_the_agent_reaches_the_api_through_nginx_with_a_certificate(tmp_path, monkeypatch):
    """As docs/deployment.md shows it: nginx with a certificate in front of serve; the agent
    trusts that certificate (SSL_CERT_FILE) and refuses the connection without it."""
    from tests.enforcer_helpers import free_port
    from tests.nginx_helpers import nginx
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    e = Enforcer(tmp_path / "api")
    try:
        e.ban("203.0.113.7", reason="storm")
        e.services.publisher.publish()
        port = free_port()
        servers = f"""server {{
            listen 127.0.0.1:{port} ssl;
            ssl_certificate {cert};
            ssl_certificate_key {key};
            location / {{ proxy_pass http://127.0.0.1:{e.port}; }}
        }}"""
        with nginx(tmp_path, {"nginx-pullwarden-http.conf": "", "nginx-pullwarden-location.conf": ""}, servers, port):
            args = ["agent", "--api", f"https://127.0.0.1:{port}", "--key", e.keys["proxy"], "--out",
                    str(tmp_path / "out"), "--once"]
            res = CliRunner().invoke(cli, args)
            assert res.exit_code == 2 and "CERTIFICATE_VERIFY_FAILED" in res.stderr and res.stderr.count("\n") == 1
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            res = CliRunner().invoke(cli, args)
            assert res.exit_code == 0, res.output
            assert (tmp_path / "out" / "block-ips.csv").read_text() == "203.0.113.7,storm\n"
    finally:
        e.stop()


def test_a_redirect_is_not_followed_and_the_key_goes_nowhere_else(hostile, written):
    elsewhere = Hostile()
    try:
        heard: list[dict] = []
        handler = elsewhere.server.RequestHandlerClass
        plain_get = handler.do_GET

        def do_GET(self):
            heard.append(dict(self.headers))
            plain_get(self)
        handler.do_GET = do_GET
        before = snapshot(written)
        hostile.answers["/v1/policy"] = [(302, {"Location": f"{elsewhere.url}/v1/policy"}, b"")]
        refused_in_one_line(agent(hostile, written, "--key", "pw_secret"), "/v1/policy: 302")
        assert heard == [] and snapshot(written) == before
    finally:
        elsewhere.server.shutdown()
        elsewhere.server.server_close()


def test_a_policy_in_two_gzip_members_is_read_whole(hostile, genuine, tmp_path):
    body = json.dumps(genuine).encode()
    hostile.answers["/v1/policy"] = [(200, {"Content-Encoding": "gzip"},
                                      gzip.compress(body[:1000]) + gzip.compress(body[1000:]))]
    out = tmp_path / "out"
    assert agent(hostile, out).exit_code == 0
    assert (out / "block-ips.csv").read_text().startswith("198.51.100.2,rotation\n")


# ---- what the server publishes, the agent takes ------------------------------------------------

USER_RULE = """name: user-storm
description: a user's blob storm
entity: user
window: 24h
where: blob_gets >= 30
action: ban
duration: 1h
reason: "{blob_gets:int} blob downloads"
cases:
  - {expect: match, features: {blob_gets: 30}}
  - {expect: no-match, features: {blob_gets: 29}}
"""


def test_a_rule_on_a_user_name_the_api_refuses_is_held_and_the_agent_takes_the_policy(tmp_path):
    """A log names its users (basic auth; a JSON log keeps spaces): a rule's ban of one the admin
    API would refuse would make every agent refuse every policy while it lasts, so it is held
    with the reason, and the name never reaches the published policy."""
    from datetime import timedelta

    from core.store import open_store
    from enforcer.policy_doc import policy as checked
    from enforcer.snapshot import Publisher
    from rules.detect import detect
    from rules.engine import load_rules
    from tests.detect_helpers import T0, add_events, ev
    from tests.detect_helpers import settings as detect_settings
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "user-storm.yml").write_text(USER_RULE)
    store = open_store(str(tmp_path / "db.duckdb"))
    cfg = detect_settings(db=str(tmp_path / "db.duckdb"))
    users = ["ci bot", "u" * 200, "tab\there", "alice"]
    add_events(store, [ev(T0 + timedelta(minutes=i), f"203.0.113.{n}", user=u, digest=f"sha256:{i:02d}")
                       for n, u in enumerate(users, 10) for i in range(40)])
    now = T0 + timedelta(hours=1)
    result = detect(store, cfg, load_rules(store, [], str(tmp_path / "rules")), now)
    made = {d.value: d.held for d in result.new if d.rule == "user-storm"}
    assert set(made) == set(users) and made["alice"] is None
    assert all("a user name" in made[u] and "the agent" in made[u] for u in users[:3]), made
    policy = json.loads(gzip.decompress(Publisher(store, threading.RLock(), lambda: now, 30).publish().body))
    assert set(checked(policy)["bans"]) == {"user:alice"}
    store.close()
