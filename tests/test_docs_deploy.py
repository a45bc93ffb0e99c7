"""docs/ stays true: what docs/deployment.md and docs/scale-out.md show is run where it can be.

- the nginx.conf, with the includes the real agent wrote from a real server's policy, passes
  `nginx -t`, serves a request, and the line it logs is ingested with the settings file shown;
- the settings files load (an unknown key is an error);
- the CrowdSec bouncer's api_url and api_key, as a Go bouncer joins them, get the ban stream;
- the systemd units pass `systemd-analyze verify`, and their pullwarden command lines parse;
- every `pullwarden ...` command line shown parses with that command's options and arguments;
- every relative link points at a file, and the README links docs/.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import pytest
import yaml
from click.testing import CliRunner

from cli.main import cli
from core.settings import load
from core.store import open_store
from ingest.pipeline import Ingester
from tests.enforcer_helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DEPLOYMENT = (DOCS / "deployment.md").read_text()
SCALE_OUT = (DOCS / "scale-out.md").read_text()
ENV = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}


def blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", markdown, re.S | re.M)


def command_lines(markdown: str) -> list[list[str]]:
    """Every `pullwarden ...` command in the sh blocks, continuation lines joined, as arguments
    after `pullwarden` (environment assignments before it dropped, a trailing comment dropped)."""
    found = []
    for block in blocks(markdown, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words = words[1:]
            if words[:1] == ["pullwarden"]:
                found.append(words[1:])
    return found


def parses(args: list[str]) -> None:
    """The command's own parser takes these arguments (options, their values, the arguments): it
    is given them as the shell would, and is not run."""
    cmd, path = cli, []
    while isinstance(cmd, click.Group) and args and args[0] in cmd.commands:
        path.append(args[0])
        cmd, args = cmd.commands[args[0]], args[1:]
    assert not isinstance(cmd, click.Group), f"pullwarden {' '.join(path)}: not a command"
    assert CliRunner().invoke(cli, [*path, "--help"]).exit_code == 0
    try:
        cmd.make_context(f"pullwarden {' '.join(path)}", list(args))
    except click.ClickException as e:
        raise AssertionError(f"pullwarden {' '.join(path)} {' '.join(args)}: {e.format_message()}") from None


def test_every_pullwarden_command_shown_parses():
    commands = command_lines(DEPLOYMENT) + command_lines(SCALE_OUT)
    assert len(commands) >= 12
    for args in commands:
        parses(args)


def test_a_command_that_would_not_parse_is_caught():
    with pytest.raises(AssertionError, match="No such option"):
        parses(["agent", "--api", "http://x", "--key", "k", "--out", "/tmp/x", "--reload-command", "true"])
    with pytest.raises(AssertionError, match="not a command"):
        parses(["export", "--since", "2026-01-01"])


def test_the_settings_files_shown_load_and_agree_with_nginx():
    nginx_format = re.search(r"log_format pullwarden '([^']*)';", blocks(DEPLOYMENT, "nginx")[0]).group(1)
    tomls = blocks(DEPLOYMENT, "toml") + blocks(SCALE_OUT, "toml")
    assert len(tomls) == 2
    for text, name in zip(tomls, ("deployment", "scale-out")):
        path = ROOT / "tests" / f".docs-{name}-{os.getpid()}.toml"
        path.write_text(text)
        try:
            cfg = load(str(path), {}, environ={})
        finally:
            path.unlink()
        assert cfg.log_format == nginx_format, name
        assert cfg.origin["log_format"].startswith(str(path))


def _cert(folder: Path) -> tuple[Path, Path]:
    crt, key = folder / "mirror.crt", folder / "mirror.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=m.example.io", "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


@pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("openssl")),
                    reason="nginx and openssl are needed (.ci/run installs nginx-light)")
def test_the_deployment_runs_as_shown(workdir):
    """A real serve with a ban, the real agent writing the includes, the doc's nginx.conf (its
    paths moved under the test's folder) checked and run, a request through it logged in the
    doc's format and ingested with the doc's settings; the bouncer's URL and key answered."""
    etc, logs = workdir / "etc-pullwarden", workdir / "log"
    etc.mkdir()
    logs.mkdir()
    admin = json.loads(CliRunner().invoke(cli, ["keys", "create", "--role", "admin", "--name", "ops", "--json"])
                       .stdout)["key"]
    proxy = json.loads(CliRunner().invoke(cli, ["keys", "create", "--role", "proxy", "--name", "edge-1", "--json"])
                       .stdout)["key"]
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--port", str(port)],
                             cwd=workdir, env=ENV, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}"
    nginx_proc = None
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(api + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < deadline and serve.poll() is None, "serve did not start"
                time.sleep(0.1)
        assert httpx.post(api + "/v1/admin/bans", headers={"X-Api-Key": admin}, json={
            "scope": "ip", "value": "203.0.113.7", "duration": "1h", "reason": "docs"}).status_code == 201

        # the agent, as deployment.md's step 5 runs it once (only --out and the URL differ)
        agent = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "agent", "--api", api,
                                "--key", proxy, "--out", str(etc), "--once"], env=ENV, capture_output=True, text=True)
        assert agent.returncode == 0, agent.stderr
        written = {p.name for p in etc.iterdir()}
        # every file nginx and CRProxy are told to read is one the agent writes
        shown = set(re.findall(r"/etc/pullwarden/([\w.-]+)", "".join(blocks(DEPLOYMENT, "nginx") + blocks(DEPLOYMENT, "sh"))))
        assert shown - {"pullwarden.toml", "agent.env", "dashboard.env"} <= written, shown - written

        crt, key = _cert(workdir)
        mirror, upstream = free_port(), free_port()        # nothing listens upstream: nginx answers 502
        conf = blocks(DEPLOYMENT, "nginx")[0]
        for old, new in (("/etc/pullwarden/", f"{etc}/"), ("/var/log/nginx/", f"{logs}/"),
                         ("/run/nginx.pid", f"{workdir}/nginx.pid"), ("/etc/ssl/mirror.crt", str(crt)),
                         ("/etc/ssl/mirror.key", str(key)), ("listen 443 ssl;", f"listen 127.0.0.1:{mirror} ssl;"),
                         ("127.0.0.1:8081", f"127.0.0.1:{upstream}"),
                         # workers as root: pytest's folders are private to root
                         ("user www-data;", "user root;")):
            assert old in conf, old
            conf = conf.replace(old, new)
        (workdir / "nginx.conf").write_text(conf)
        base = ["nginx", "-c", str(workdir / "nginx.conf"), "-p", str(workdir)]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True)
        assert check.returncode == 0 and "syntax is ok" in check.stderr, check.stderr
        nginx_proc = subprocess.Popen([*base, "-g", "daemon off;"])
        url = f"https://127.0.0.1:{mirror}"
        deadline = time.time() + 10
        while True:
            try:
                pulled = httpx.get(url + "/v2/docker.io/library/busybox/manifests/latest", verify=False,
                                   headers={"User-Agent": "containerd/v1.7.22", "Host": "m.example.io"})
                break
            except httpx.TransportError:
                assert time.time() < deadline and nginx_proc.poll() is None, "nginx did not start"
                time.sleep(0.1)
        assert pulled.status_code == 502            # nginx passed it on; CRProxy is not running here
        assert httpx.put(url + "/internal/api/allows", verify=False, content="*").status_code == 404
    finally:
        if nginx_proc is not None:
            nginx_proc.terminate()
            nginx_proc.wait(10)
        serve.terminate()
        serve.wait(30)

    # the line nginx wrote, read with the doc's settings file
    settings = workdir / "docs.toml"
    settings.write_text(blocks(DEPLOYMENT, "toml")[0])
    cfg = load(str(settings), {"db": str(workdir / "ingest.duckdb"), "sources": [str(logs / "mirror.log")]},
               environ={})
    store = open_store(cfg.db)
    try:
        report = Ingester(store, cfg).run([str(logs / "mirror.log")])
        assert report.as_dict()["rejected"] == 0
        rows = store.execute("""select client_ip, method, status, registry, repository, kind, reference, host,
                                       user_agent, request_time is not null from events order by ts""")
    finally:
        store.close()
    assert rows[0] == ("127.0.0.1", "GET", 502, "docker.io", "library/busybox", "manifest", "latest",
                       "m.example.io", "containerd/v1.7.22", True)
    assert rows[1][1:3] == ("PUT", 404)


def test_the_crowdsec_bouncer_config_reaches_the_stream(workdir):
    """cs-firewall-bouncer's api_url and api_key, joined as the Go bouncer joins them
    (api_url + v1/decisions/stream), against a real server with one ban."""
    conf = yaml.safe_load(blocks(DEPLOYMENT, "yaml")[0])
    assert conf["api_url"].endswith("/") and conf["api_key"].startswith("pw_")
    admin = json.loads(CliRunner().invoke(cli, ["keys", "create", "--role", "admin", "--name", "ops", "--json"])
                       .stdout)["key"]
    proxy = json.loads(CliRunner().invoke(cli, ["keys", "create", "--role", "proxy", "--name", "fw", "--json"])
                       .stdout)["key"]
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--port", str(port)],
                             cwd=workdir, env=ENV, stderr=subprocess.DEVNULL)
    try:
        api_url = conf["api_url"].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(api_url + "healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < deadline and serve.poll() is None, "serve did not start"
                time.sleep(0.1)
        httpx.post(api_url + "v1/admin/bans", headers={"X-Api-Key": admin},
                   json={"scope": "ip", "value": "198.51.100.4", "duration": "2h", "reason": "docs"})
        stream = httpx.get(api_url + "v1/decisions/stream", params={"startup": "true"},
                           headers={"X-Api-Key": proxy, "User-Agent": "crowdsec-firewall-bouncer/v0.0.31"})
        assert stream.status_code == 200
        assert [d["value"] for d in stream.json()["new"]] == ["198.51.100.4"]
        # the placeholder key shown is refused as CrowdSec refuses a bad key
        refused = httpx.get(api_url + "v1/decisions/stream", headers={"X-Api-Key": conf["api_key"]})
        assert refused.status_code == 403 and refused.json() == {"message": "access forbidden"}
    finally:
        serve.terminate()
        serve.wait(30)


UNITS = sorted((DOCS / "systemd").glob("*.service")) + sorted((DOCS / "systemd").glob("*.timer"))


def test_the_systemd_units_shown_exist_and_their_commands_parse(monkeypatch):
    names = {u.name for u in UNITS}
    assert {"pullwarden-serve.service", "pullwarden-agent.service", "pullwarden-dashboard.service"} <= names
    linked = set(re.findall(r"\(systemd/([\w.-]+)\)", DEPLOYMENT + SCALE_OUT))
    assert linked == names, linked ^ names
    for unit in UNITS:
        text = unit.read_text()
        # what the EnvironmentFile holds, as the unit's comment names it (the agent's key)
        for var in os.environ:
            if var.startswith("PULLWARDEN_"):
                monkeypatch.delenv(var)
        if "EnvironmentFile=" in text:
            named = re.findall(r"^#\s+(PULLWARDEN_[A-Z_]+)=pw_", text, re.M)
            assert named, f"{unit.name}: say what its EnvironmentFile holds"
            for var in named:
                monkeypatch.setenv(var, "pw_from_the_environment_file")
        for line in text.splitlines():
            if not line.startswith("ExecStart="):
                continue
            words = shlex.split(line.removeprefix("ExecStart="))
            if words[:2] == ["/bin/sh", "-c"]:          # the export timer's date: what the shell makes of it
                words = shlex.split(words[2].replace('"$(date -u -d yesterday +%%F)"', "2026-12-01"))[1:]
            assert words[0] == "/usr/local/bin/pullwarden", unit.name
            parses(words[1:])


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_systemd_units_verify(tmp_path):
    binary = shutil.which("pullwarden") or sys.executable
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/pullwarden", binary))
    r = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_links_point_at_files_and_the_readme_links_docs():
    for doc in (DOCS / "deployment.md", DOCS / "scale-out.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name}: {target}"
    readme = (ROOT / "README.md").read_text()
    assert "(docs/deployment.md)" in readme and "(docs/scale-out.md)" in readme
    for path in re.findall(r"`((?:tests|bench)/[\w/.-]+\.py)`", DEPLOYMENT + SCALE_OUT):
        assert (ROOT / path).exists(), path


def test_logs_copied_as_rsync_copies_them_are_stored_once(workdir):
    """scale-out.md: a node's folder copied again and again, each copy a temporary file renamed
    over the one before (a new inode), through a rotation: every line once."""
    from tests.test_export_parquet import write_log
    node, copy = workdir / "node-a", workdir / "mirror-logs" / "node-a"
    node.mkdir()
    copy.mkdir(parents=True)
    write_log(workdir / "day1.log", 3000, "2024-11-20T00:00:00+00:00", 11)
    write_log(workdir / "day2.log", 800, "2024-11-23T00:00:00+00:00", 12)
    lines = (workdir / "day1.log").read_text().splitlines(keepends=True)

    def rsync():
        for f in node.iterdir():
            tmp = copy / f".{f.name}.tmp"
            shutil.copy2(f, tmp)
            os.replace(tmp, copy / f.name)

    cfg = load(None, {"db": str(workdir / "central.duckdb")}, environ={})
    store = open_store(cfg.db)
    try:
        def sync_and_ingest():
            rsync()
            Ingester(store, cfg).run([str(copy / "mirror.log*")])
        (node / "mirror.log").write_text("".join(lines[:1000]))
        sync_and_ingest()
        with open(node / "mirror.log", "a") as f:          # nginx appends
            f.write("".join(lines[1000:2200]))
        sync_and_ingest()
        sync_and_ingest()                                  # copied again with nothing new
        with open(node / "mirror.log", "a") as f:
            f.write("".join(lines[2200:]))
        os.rename(node / "mirror.log", node / "mirror.log.1")      # logrotate
        shutil.copy(workdir / "day2.log", node / "mirror.log")
        sync_and_ingest()
        assert store.value("select count(*) from events") == 3800
        assert store.value("select count(*) from rejects") == 0
    finally:
        store.close()


@pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("openssl")),
                    reason="nginx and openssl are needed (.ci/run installs nginx-light)")
def test_nginx_in_front_of_a_plain_registry_runs_as_shown(tmp_path):
    """deployment.md's server for a plain registry, with the includes rendered from a policy that
    blocks one image: the blocked image is refused, another goes to the registry with the
    CRProxy prefix cut off by the location's $1, a registry-mirrors path as it came."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from enforcer.render import render
    from enforcer.snapshot import REQUESTS

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self):
            body = self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    block = [b for b in blocks(DEPLOYMENT, "nginx") if "127.0.0.1:5000" in b]
    assert len(block) == 1
    registry = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=registry.serve_forever, daemon=True).start()
    policy = {"bans": {}, "assignments": {}, "allowlist": [], "requests": REQUESTS,
              "tiers": {"anonymous": {"requests_per_minute": None, "burst": None, "concurrent": None,
                                      "blob_bytes_per_second": None, "window_bytes": None, "window_seconds": None}},
              "default_tiers": {"anonymous": "anonymous", "authenticated": "anonymous"},
              "images": {"blocked": ["docker.io/library/evil"], "allowed": [], "unlimited": []}}
    for name, text in render(policy, warn=lambda m: None).items():
        (tmp_path / name).write_text(text)
    crt, key = _cert(tmp_path)
    mirror = free_port()
    server = block[0]
    for old, new in (("/etc/pullwarden/", f"{tmp_path}/"), ("/etc/ssl/mirror.crt", str(crt)),
                     ("/etc/ssl/mirror.key", str(key)), ("listen 443 ssl;", f"listen 127.0.0.1:{mirror} ssl;"),
                     ("127.0.0.1:5000", f"127.0.0.1:{registry.server_address[1]}")):
        assert old in server, old
        server = server.replace(old, new)
    (tmp_path / "nginx.conf").write_text(f"""pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
events {{}}
http {{ access_log off; include {tmp_path}/nginx-pullwarden-http.conf;
{server}
}}""")
    base = ["nginx", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([*base, "-g", "daemon off;"])
    try:
        url = f"https://127.0.0.1:{mirror}"
        deadline = time.time() + 10
        while True:
            try:
                evil = httpx.get(url + "/v2/docker.io/library/evil/manifests/latest", verify=False)
                break
            except httpx.TransportError:
                assert time.time() < deadline and proc.poll() is None, "nginx did not start"
                time.sleep(0.1)
        assert evil.status_code == 403
        assert httpx.get(url + "/v2/library/evil/manifests/latest", verify=False).status_code == 403
        ok = httpx.get(url + "/v2/docker.io/library/nginx/manifests/latest?x=1", verify=False)
        assert (ok.status_code, ok.text) == (200, "/v2/library/nginx/manifests/latest?x=1")
        ok = httpx.get(url + "/v2/library/nginx/blobs/sha256:00", verify=False)
        assert (ok.status_code, ok.text) == (200, "/v2/library/nginx/blobs/sha256:00")
    finally:
        proc.terminate()
        proc.wait(10)
        registry.shutdown()
        registry.server_close()
