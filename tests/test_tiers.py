"""The stock tiers against real clients. Ordinary pulls, replayed through the real nginx with the
generated include, pass untouched; storms get 429, and a throttled address gets it far sooner.

Each client's requests are replayed as that client makes them (order, parallelism, pacing), each
client from its own loopback address (nginx keys on $binary_remote_addr), against a stand-in
registry behind nginx. Time runs SPEED times faster than in life: every latency and pause is
divided by SPEED. That keeps the shape of the traffic (how many requests are in flight at once,
which is what limit_conn counts) and makes the rate SPEED times higher than in life, so a replay
that stays within limit_req's burst here stays within it in life. Default tiers only: the test
never raises a limit.
"""
from __future__ import annotations

import asyncio
import json
import re
import time

import duckdb
import httpx
import pytest

from core import store as store_mod
from core.store import open_store
from enforcer.agent import render
from tests.enforcer_helpers import Enforcer, free_port
from tests.nginx_helpers import needs_nginx, nginx, published_files

SPEED = 20
RTT = 0.1                   # seconds in life for a token or a manifest (the mirror's round trip)
BIG = 5 << 19               # 2.5 MiB: a blob that takes more than a second at the throttled 1 MiB/s

# Layers per image. A cold `docker compose pull` of a 10-service stack, and a node's worth of
# images (DaemonSets, sidecars and ~20 application images) after a restart on a fresh disk.
COMPOSE = [20, 15, 12, 10, 9, 8, 6, 5, 4, 3]
NODE = [1, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 12, 12, 13, 14, 15, 16, 17, 18, 19, 20]


def layer_seconds(i: int) -> float:
    """How long layer i takes to download in life: 0.5-4 s (10-80 MB at 20 MB/s), 2.25 s on average."""
    return 0.5 + (i * 3 % 8) * 0.5


def digest(seconds: float, n: int) -> str:
    """A blob digest that tells the stand-in registry how long the download takes."""
    return f"sha256:{round(seconds * 100):04x}{n:060x}"


# ---- the stand-in registry behind nginx ---------------------------------------------------------

async def registry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        method, target = head.split(" ", 2)[:2]
        path = target.split("?")[0]
        extra, body = "", b'{"schemaVersion":2}'.ljust(2048)
        if path.startswith("/v2/big/blobs/"):
            status, body = 200, b"x" * BIG
        elif path == "/token":
            await asyncio.sleep(RTT / SPEED)
            status, body = 200, b'{"token":"t"}'
        elif "\r\nauthorization:" not in head.lower():
            await asyncio.sleep(RTT / SPEED)
            status, body = 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
            extra = 'Www-Authenticate: Bearer realm="http://mirror.test/token",service="mirror.test"\r\n'
        elif "/blobs/" in path:
            await asyncio.sleep(int(path.rsplit(":", 1)[1][:4], 16) / 100 / SPEED)
            status, body = 200, b"l" * 4096
        else:
            await asyncio.sleep(RTT / SPEED)
            status = 200
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
                     .encode() + (body if method != "HEAD" else b""))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# ---- clients ------------------------------------------------------------------------------------

class Client:
    """One address: every request it made, as (start, end, status)."""

    def __init__(self, addr: str, port: int):
        self.addr, self.port, self.log = addr, port, []

    async def request(self, method: str, path: str, auth: bool = True) -> int:
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.addr, 0))
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: mirror.test\r\n"
                         f"{'Authorization: Bearer t' + chr(13) + chr(10) if auth else ''}Connection: close\r\n\r\n"
                         .encode())
            data = await reader.read()
        finally:
            writer.close()
        status = int(data[9:12])
        self.log.append((start, time.monotonic(), status))
        return status

    def statuses(self) -> set[int]:
        return {s for _, _, s in self.log}

    def peak(self) -> int:
        """Most requests in flight at once."""
        edges = sorted([(s, 1) for s, _, _ in self.log] + [(e, -1) for _, e, _ in self.log])
        peak = now = 0
        for _, step in edges:
            now += step
            peak = max(peak, now)
        return peak


async def blobs(c: Client, repo: str, layers: int, parallel: int | None, config_apart: bool) -> None:
    gate = asyncio.Semaphore(parallel or 10**6)

    async def get(path: str, gated: bool = True) -> None:
        if not gated:
            await c.request("GET", path)
            return
        async with gate:
            await c.request("GET", path)
    await asyncio.gather(get(f"/v2/{repo}/blobs/{digest(RTT, 0)}", gated=not config_apart),
                         *(get(f"/v2/{repo}/blobs/{digest(layer_seconds(i), i + 1)}") for i in range(layers)))


async def docker_pull(c: Client, repo: str, layers: int) -> None:
    """dockerd (moby distribution): ping, token, the tag's index, the platform's manifest, then the
    config beside the layers, 3 at a time (max-concurrent-downloads)."""
    await c.request("GET", "/v2/", auth=False)                                  # 401 names the realm
    await c.request("GET", f"/token?scope=repository:{repo}:pull&service=mirror.test", auth=False)
    await c.request("HEAD", f"/v2/{repo}/manifests/latest")
    await c.request("GET", f"/v2/{repo}/manifests/latest")
    await c.request("GET", f"/v2/{repo}/manifests/{digest(0, 1)}")
    await blobs(c, repo, layers, 3, config_apart=True)


async def containerd_pull(c: Client, repo: str, layers: int, parallel: int | None = 3) -> None:
    """containerd's resolver: HEAD the tag (401 the first time), token, HEAD again, the index, the
    platform's manifest, then config and layers under one limit: 3 for the CRI plugin's
    max_concurrent_downloads, none for nerdctl and ctr (every layer at once)."""
    ref = f"/v2/{repo}/manifests/latest?ns=docker.io"
    await c.request("HEAD", ref, auth=False)
    await c.request("GET", f"/token?scope=repository:{repo}:pull&service=mirror.test", auth=False)
    await c.request("HEAD", ref)
    await c.request("GET", f"/v2/{repo}/manifests/{digest(0, 1)}?ns=docker.io")
    await c.request("GET", f"/v2/{repo}/manifests/{digest(0, 2)}?ns=docker.io")
    await blobs(c, repo, layers, parallel, config_apart=False)


async def crio_pull(c: Client, repo: str, layers: int) -> None:
    """CRI-O and podman (containers/image): ping, token, the tag's index, the platform's manifest,
    the config, then 6 layers at a time."""
    await c.request("GET", "/v2/", auth=False)
    await c.request("GET", f"/token?scope=repository:{repo}:pull&service=mirror.test", auth=False)
    await c.request("GET", f"/v2/{repo}/manifests/latest")
    await c.request("GET", f"/v2/{repo}/manifests/{digest(0, 1)}")
    await c.request("GET", f"/v2/{repo}/blobs/{digest(RTT, 0)}")
    gate = asyncio.Semaphore(6)

    async def layer(i: int) -> None:
        async with gate:
            await c.request("GET", f"/v2/{repo}/blobs/{digest(layer_seconds(i), i + 1)}")
    await asyncio.gather(*(layer(i) for i in range(layers)))


async def node_restart(c: Client, pull) -> None:
    """kubelet with serializeImagePulls: false (no maxParallelImagePulls): every pod's image at
    once, paced only by registryPullQPS 5 and registryBurst 10."""
    async def paced(i: int, layers: int) -> None:
        await asyncio.sleep(max(0, i - 9) / 5 / SPEED)
        await pull(c, f"k8s/image{i}", layers)
    await asyncio.gather(*(paced(i, n) for i, n in enumerate(NODE)))


SCENARIOS = {   # name: (replay, requests it makes)
    "docker pull, 20 layers": (lambda c: docker_pull(c, "library/app", 20), 6 + 20),
    "nerdctl pull, 20 layers": (lambda c: containerd_pull(c, "library/app", 20, parallel=None), 6 + 20),
    "docker compose pull, 10 images": (lambda c: asyncio.gather(
        *(docker_pull(c, f"stack/service{i}", n) for i, n in enumerate(COMPOSE))), 6 * 10 + sum(COMPOSE)),
    "k8s node (containerd), 30 images": (lambda c: node_restart(c, containerd_pull), 6 * 30 + sum(NODE)),
    "k8s node (CRI-O), 30 images": (lambda c: node_restart(c, crio_pull), 5 * 30 + sum(NODE)),
}


async def storm(c: Client, n: int, workers: int) -> None:
    """The same manifest as fast as the address can ask."""
    left = iter(range(n))

    async def worker() -> None:
        for _ in left:
            await c.request("GET", "/v2/library/busybox/manifests/latest")
    await asyncio.gather(*(worker() for _ in range(workers)))


# ---- the test -----------------------------------------------------------------------------------

@pytest.fixture
def api(tmp_path):
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def ordinary(n: int) -> tuple[str, str]:
    """The address that replays scenario n in the anonymous tier, and its twin in `unlimited`."""
    return f"127.0.0.{10 + n}", f"127.0.0.{30 + n}"


@needs_nginx
def test_ordinary_pulls_pass_the_stock_tiers_untouched_and_storms_get_429(api, tmp_path):
    throttled = ["127.0.0.2", "127.0.0.3"]
    for n in range(len(SCENARIOS)):
        api.ban(ordinary(n)[1], effect="boost", tier="unlimited", reason="the unthrottled run")
    for addr in throttled:
        api.ban(addr, effect="throttle", tier="throttled", reason="CI storm")
    files = published_files(api)
    assert "pw_unlimited" not in files["nginx-pullwarden-http.conf"]    # no zone counts an unlimited address
    port = free_port()

    async def main() -> dict:
        backend = await asyncio.start_server(registry, "127.0.0.1", 0, backlog=1024)
        servers = f"""server {{
            listen 127.0.0.1:{port} backlog=1024;
            location / {{
                include {tmp_path}/location.conf;
                proxy_pass http://127.0.0.1:{backend.sockets[0].getsockname()[1]};
                proxy_max_temp_file_size 0;
            }}
        }}"""
        results = {}
        # 2048 connections: nginx's own capacity for a client and its upstream twice over, not a tier limit
        with nginx(tmp_path, files, servers, port, events="worker_connections 2048;", log_level="info") as log:
            for n, (name, (replay, _)) in enumerate(SCENARIOS.items()):
                pair = [Client(a, port) for a in ordinary(n)]     # side by side: the same load on both

                async def timed(c: Client) -> float:
                    start = time.monotonic()
                    await replay(c)
                    return time.monotonic() - start
                results[name] = (*pair, *await asyncio.gather(*(timed(c) for c in pair)))
            anonymous, slow = Client("127.0.0.4", port), Client(throttled[1], port)
            results["storm"], results["throttled storm"] = Client("127.0.0.5", port), Client(throttled[0], port)

            async def big(c: Client) -> float:
                start = time.monotonic()
                await c.request("GET", f"/v2/big/blobs/{digest(0, 0)}")
                return time.monotonic() - start
            results["blob"] = await asyncio.gather(big(anonymous), big(slow), storm(results["storm"], 1500, 16),
                                                   storm(results["throttled storm"], 300, 4))
            await asyncio.sleep(0.2)                  # the last lines of the error log
            results["log"] = log.read_text()
        backend.close()
        return results

    started = time.monotonic()
    results = asyncio.run(main())
    log = results["log"]
    anon_blob, throttled_blob, _, _ = results["blob"]
    storm_ok = sum(s == 200 for *_, s in results["storm"].log)
    throttled_ok = sum(s == 200 for *_, s in results["throttled storm"].log)
    report = []
    for name in SCENARIOS:
        c, twin, elapsed, unthrottled = results[name]
        limited = sorted({s for *_, s in c.log if s not in (200, 401)})
        report.append(f"{name}: {len(c.log)} requests, {twin.peak()} at once, {elapsed:.2f} s "
                      f"(unthrottled {unthrottled:.2f} s; x{SPEED} faster than life)"
                      + (f", REFUSED {limited}" if limited else ""))
    report.append(f"storm: {storm_ok} of 1500 served, the rest 429; throttled storm: {throttled_ok} of 300; "
                  f"2.5 MiB blob {anon_blob:.2f} s anonymous, {throttled_blob:.2f} s throttled; "
                  f"{time.monotonic() - started:.1f} s in all")
    print("\n".join(report))
    for name, (_, requests) in SCENARIOS.items():
        c, twin, elapsed, unthrottled = results[name]
        assert len(c.log) == len(twin.log) == requests, name
        assert c.statuses() <= {200, 401}, report                          # no 429, no 403
        assert f"client: {c.addr}," not in log, name                       # nothing limited, nothing delayed
        assert elapsed < unthrottled * 1.5 + 0.5, report
    assert anon_blob < 1.0 and throttled_blob > 1.0, report                # 2.5 MiB at 1 MiB/s
    assert results["storm"].statuses() == {200, 429} and results["throttled storm"].statuses() == {200, 429}
    assert 600 <= storm_ok <= 700                      # burst 600 at once, then 300 a minute
    assert 55 <= throttled_ok <= 80                    # burst 60
    assert re.search(r"limiting requests, excess: 60[01]\.\d+ by zone \"pw_anonymous\", client: 127\.0\.0\.5,", log)
    assert re.search(r"limiting requests, excess: 6[01]\.\d+ by zone \"pw_throttled\", client: 127\.0\.0\.2,", log)


# ---- what the include says, and where a tier's numbers travel -----------------------------------

def test_the_include_has_a_zone_per_limited_tier_and_a_rate_only_where_one_is_set():
    policy = {"version": 1, "default_tiers": {"anonymous": "anonymous"}, "bans": {}, "assignments": {},
              "images": {"allowed": [], "unlimited": [], "blocked": []},
              "tiers": {"anonymous": {"requests_per_minute": 300, "burst": 600, "concurrent": 48,
                                      "blob_bytes_per_second": None},
                        "partner": {"requests_per_minute": 100, "burst": None, "concurrent": None,
                                    "blob_bytes_per_second": None},
                        "unlimited": {"requests_per_minute": None, "burst": None, "concurrent": None,
                                      "blob_bytes_per_second": None}}}
    files = render(policy, warn=lambda m: None)
    http, location = files["nginx-pullwarden-http.conf"], files["nginx-pullwarden-location.conf"]
    assert "limit_req zone=pw_anonymous burst=600 nodelay;" in location
    assert "limit_conn pwc_anonymous 48;" in location
    assert "limit_req zone=pw_partner burst=200 nodelay;" in location          # no burst: two minutes' worth
    assert "pwc_partner" not in http and "pw_unlimited" not in http + location      # no zone counts them
    assert "limit_rate" not in location and "pullwarden_rate" not in http     # no tier has a blob rate
    policy["tiers"]["partner"]["blob_bytes_per_second"] = 1048576
    files = render(policy, warn=lambda m: None)
    assert "limit_rate $pullwarden_rate;" in files["nginx-pullwarden-location.conf"]
    assert "    partner 1048576;" in files["nginx-pullwarden-http.conf"]


def test_burst_travels_from_the_admin_api_to_the_policy_check_and_include(api):
    admin = api.headers("admin")
    r = httpx.put(api.url + "/v1/admin/tiers/partner", headers=admin, timeout=10,
                  json={"requests_per_minute": 600, "burst": 900, "concurrent": 50, "reason": "partners"})
    assert r.status_code == 200, r.text
    r = httpx.put(api.url + "/v1/admin/tiers/bad", headers=admin, timeout=10, json={"burst": 9, "reason": "x"})
    assert r.status_code == 422 and "a burst needs a rate" in r.text
    api.ban("198.51.100.7", effect="boost", tier="partner", reason="partner")
    files = published_files(api)
    policy = httpx.get(api.url + "/v1/policy", headers=api.headers("proxy"), timeout=10).json()
    assert policy["tiers"]["partner"] == {"requests_per_minute": 600, "burst": 900, "concurrent": 50,
                                          "blob_bytes_per_second": None, "window_bytes": None,
                                          "window_seconds": None}
    check = httpx.get(api.url + "/v1/check?ip=198.51.100.7", headers=api.headers("proxy"), timeout=10).json()
    assert (check["tier"], check["limits"]["burst"]) == ("partner", 900)
    assert "limit_req zone=pw_partner burst=900 nodelay;" in files["nginx-pullwarden-location.conf"]


def test_migration_5_moves_only_the_stock_tiers_an_operator_left_alone(tmp_path):
    path = str(tmp_path / "v4.duckdb")
    con = duckdb.connect(path)
    con.execute(store_mod.SCHEMA)
    for m in store_mod.MIGRATIONS[:3]:
        con.execute(m)
    con.execute("insert into schema_version values (4)")
    con.execute("update tiers set concurrent = 30 where name = 'heavy'")      # the operator's own
    con.close()
    s = open_store(path)
    tiers = {r[0]: r[1:] for r in s.execute("""
        select name, requests_per_minute, burst, concurrent, blob_bytes_per_second from tiers""")}
    s.close()
    assert tiers["anonymous"] == (300, 600, 192, None)
    assert tiers["throttled"] == (30, 60, 4, 1048576)
    assert tiers["heavy"] == (10, None, 30, 524288)                           # kept as the operator set it
    assert tiers["unlimited"] == (None, None, None, None)


# ---- names (issue 19 §5): one rule in the API, the command line and the agent ------------------

def put_tier(api, name: str, **limits):
    from urllib.parse import quote
    return httpx.put(f"{api.url}/v1/admin/tiers/{quote(name, safe='')}", headers=api.headers("admin"), timeout=10,
                     json={"requests_per_minute": 60, **limits, "reason": "test"})


@pytest.mark.parametrize("name, status, words", [
    ("default", 422, "cannot name a tier"),           # nginx: "duplicate default map parameter"
    ("include", 422, "cannot name a tier"),           # an include directive in the map
    ("banned", 422, "cannot name a tier"),            # nginx's 403 for an address /v1/check allows
    ("hostnames", 422, "cannot name a tier"),
    ("ci\n", 422, "a tier name is"),                  # `$` matched before the newline
    ("x; }", 422, "a tier name is"),
    ("Fast", 422, "a tier name is"),
    ("1st", 422, "a tier name is"),
    ("a" * 33, 422, "a tier name is"),          # nginx: "could not build variables_hash" from 40
    ("fast_lane", 409, "would share nginx's zone pw_fast_lane with tier 'fast-lane'"),
])
def test_a_tier_name_the_include_cannot_carry_is_refused(api, name, status, words):
    assert put_tier(api, "fast-lane").status_code == 200
    r = put_tier(api, name)
    assert r.status_code == status and words in r.json()["detail"], r.text
    policy = httpx.get(api.url + "/v1/policy", headers=api.headers("proxy"), timeout=10).json()
    assert name not in policy["tiers"] and set(policy["tiers"]) >= {"fast-lane", "anonymous"}


def test_the_command_line_checks_the_name_before_anything(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli
    env = {"PULLWARDEN_DB": str(tmp_path / "db.duckdb")}
    for name in ("include", "../keys/x"):          # a word of nginx's; a path when serve holds the file
        res = CliRunner().invoke(cli, ["tiers", "set", name, "--rpm", "5", "--reason", "x"], env=env)
        assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
        assert "cannot name a tier" in res.stderr or "a tier name is" in res.stderr


def delete_tier(api, name: str):
    from urllib.parse import quote
    return httpx.request("DELETE", f"{api.url}/v1/admin/tiers/{quote(name, safe='')}", headers=api.headers("admin"),
                         timeout=30, json={"reason": "no longer sold"})


def test_a_tier_is_deleted_only_when_nothing_uses_it(api):
    assert put_tier(api, "partner", concurrent=8).status_code == 200
    boost = api.ban("198.51.100.7", effect="boost", tier="partner", reason="a partner")
    api.services.publisher.publish()
    r = delete_tier(api, "partner")
    assert r.status_code == 409 and f"#{boost} (boost ip 198.51.100.7)" in r.json()["detail"], r.text
    with api.services.lock:
        api.store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where id = ?",
                          [api.clock(), boost])
    r = delete_tier(api, "partner")
    assert r.status_code == 200, r.text
    policy = httpx.get(api.url + "/v1/policy", headers=api.headers("proxy"), timeout=10).json()
    assert policy["version"] == r.json()["policy_version"] and "partner" not in policy["tiers"]
    with api.services.lock:
        (actor, details, reason), = api.store.execute("""select actor, details, reason from audit
                                                          where action = 'delete tier' and target = 'partner'""")
    assert (actor, reason, json.loads(details)["had"]["concurrent"]) == ("admin", "no longer sold", 8)
    assert delete_tier(api, "partner").status_code == 404


@pytest.mark.parametrize("name, use", [
    ("anonymous", "the anonymous default tier"),
    ("throttled", "rule ci-repull-storm (throttle:throttled"),
    ("heavy", "the setting budget_tighten_tier"),
    ("unlimited", "the unlimited image list"),
])
def test_a_tier_in_use_is_not_deleted_and_the_refusal_names_the_use(api, name, use):
    r = delete_tier(api, name)
    assert r.status_code == 409 and use in r.json()["detail"], r.text
    with api.services.lock:
        assert api.store.value("select count(*) from tiers where name = ?", [name]) == 1


def test_tiers_delete_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli
    env = {"PULLWARDEN_DB": str(tmp_path / "db.duckdb")}
    run = lambda *a: CliRunner().invoke(cli, list(a), env=env)     # noqa: E731
    assert run("tiers", "set", "partner", "--rpm", "600", "--reason", "partners").exit_code == 0
    res = run("tiers", "delete", "throttled", "--reason", "x")
    assert res.exit_code == 2 and "tier throttled is in use: " in res.stderr and "rule " in res.stderr
    res = run("tiers", "delete", "partner", "--reason", "gone")
    assert res.exit_code == 0 and res.stdout == "tier partner deleted\n"
    assert "partner" not in run("tiers", "list").stdout


# every tier name the rule accepts, through the real nginx: drawn by hypothesis, plus the edge
# cases (25 of the longest at once, '-' and '_', nginx's own words that are not parameters where
# the name goes, names that start like the reserved ones)
EDGE_NAMES = ["a", *(c + "-" * 31 for c in "bcdefghijklmnopqrstuvwxyz"), "a-b", "a_c", "unlimited", "anonymous",
              "map", "geo", "server", "location", "if", "return", "limit_req", "set", "default_", "default-x", "include-", "banned_", "hostnames2",
              "proxy-recursive", "x0", "a--", "pw_key_a", "pwc_a", "binary_remote_addr"]


def nginx_accepts(folder, names: list[str]) -> None:
    """The include of a policy with every name a tier (each with a rate, a limit in flight and a
    blob rate, so every map and zone is written), an address assigned to each, and the first the
    default tier, passes `nginx -t`."""
    import subprocess

    from enforcer.policy_doc import policy as checked
    limits = {"requests_per_minute": 60, "burst": None, "concurrent": 4, "blob_bytes_per_second": 1048576,
              "window_bytes": None, "window_seconds": None}
    assignments = {f"ip:10.0.{i // 250}.{i % 250}": {
        "id": i + 1, "scope": "ip", "value": f"10.0.{i // 250}.{i % 250}", "until": "2030-01-01T00:00:00",
        "reason": "test", "rule": "manual", "effect": "throttle", "tier": n} for i, n in enumerate(names)}
    policy = checked({"version": 1, "default_tiers": {"anonymous": names[0], "authenticated": names[-1]},
                      "bans": {}, "assignments": assignments, "allowlist": [],
                      "images": {"allowed": [], "unlimited": ["docker.io/library/busybox"], "blocked": []},
                      "tiers": {n: dict(limits) for n in names}})
    files = render(policy, warn=lambda m: None)
    (folder / "http.conf").write_text(files["nginx-pullwarden-http.conf"])
    (folder / "location.conf").write_text(files["nginx-pullwarden-location.conf"])
    (folder / "nginx.conf").write_text(f"""pid {folder}/nginx.pid; error_log {folder}/error.log; events {{}}
http {{ include {folder}/http.conf;
       server {{ listen 127.0.0.1:1; location /v2/ {{ include {folder}/location.conf; return 200; }} }} }}""")
    r = subprocess.run(["nginx", "-t", "-c", str(folder / "nginx.conf"), "-p", str(folder)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (names, r.stderr)
    for n in names:
        assert f"map $pullwarden_effective_tier $pw_key_{n.replace('-', '_')} {{ {n} $binary_remote_addr;" \
            in files["nginx-pullwarden-http.conf"]


@needs_nginx
def test_every_edge_case_name_renders_an_include_nginx_takes(tmp_path):
    from core.values import tier_names
    assert tier_names(EDGE_NAMES) == EDGE_NAMES
    nginx_accepts(tmp_path, EDGE_NAMES)


@needs_nginx
def test_every_accepted_tier_name_renders_an_include_nginx_takes(tmp_path_factory):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from core import values

    def accepted(name: str) -> bool:
        try:
            return values.tier_name(name) == name
        except ValueError:
            return False
    longest = st.from_regex(r"[a-z][a-z0-9_-]{31}", fullmatch=True)
    names = st.lists(st.one_of(st.from_regex(values.TIER_NAME, fullmatch=True), longest).filter(accepted),
                     min_size=1, max_size=30, unique_by=values.tier_zone)

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(names=names)
    def check(names):
        nginx_accepts(tmp_path_factory.mktemp("names"), names)
    check()
