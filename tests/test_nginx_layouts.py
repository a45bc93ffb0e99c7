"""The nginx include refuses what /v1/check refuses whatever the operator's nginx looks like.

Real nginx in front of a real upstream (a small HTTP server that answers with the path it was
sent and the tier nginx passed on), one nginx per layout an operator might already run — the
server include first and, in the locations, `rewrite … break`, `rewrite … last`, a regex
location that proxies to `$1`, a server-level rewrite, a named location; the location include
alone, first in a plain and in a `$1` location — and the same requests through each: CRProxy's
prefix paths, Docker Hub mirror paths without a registry, containerd's `?ns=`, one host per
registry, upper-case and trailing-dot hosts, names with a `blobs` segment, referrers, basic-auth
users in two spellings and a bearer token, from banned, allowlisted, boosted, throttled and plain
addresses. Each answer is compared with /v1/check for the same address, image and user, and the
upstream must get the path the layout sends it (a map that captured would change its `$1`).
"""
from __future__ import annotations

import base64
import gzip
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from enforcer.imagelist import canonical_pattern, matches, request_image
from enforcer.render import render, unexpressed
from tests.enforcer_helpers import Enforcer, free_port
from tests.nginx_helpers import needs_nginx, nginx

HOSTS = {"gcr.m.example": "gcr.io"}
BLOCKED = ["ghcr.io/badorg/**", "docker.io/library/evil", "gcr.io/library/**"]
ALLOWED = ["docker.io/library/*", "ghcr.io/**", "gcr.io/**", "quay.io/**"]
UNLIMITED = ["docker.io/library/busybox"]
# (address, what it is in the policy below)
ADDRESSES = ["203.0.113.9", "198.51.100.20", "198.51.100.77", "192.0.2.10", "192.0.2.200", "192.0.2.33",
             "2001:db8:7::5"]
PATHS = [
    "/v2/",
    "/v2/docker.io/library/nginx/manifests/latest",
    "/v2/DOCKER.IO/library/nginx/manifests/latest",        # an upper-case registry: the allow list takes it
    "/v2/DOCKER.IO/library/evil/manifests/latest",         # ... and the blocked list
    "/v2/docker.io/evil/manifests/1.0",                    # a one-segment docker.io name is library/
    "/v2/DOCKER.IO/library/busybox/manifests/latest",      # the unlimited list lifts the limits
    "/v2/docker.io/library/busybox/manifests/latest",
    "/v2/docker.io/bitnami/redis/manifests/7",             # not on the allow list
    "/v2/GHCR.IO/badorg/x/blobs/sha256:0a1b",
    "/v2/ghcr.io./badorg/x/manifests/latest",              # a trailing dot is the same host
    "/v2/ghcr.io/badorg/blobs/tool/blobs/sha256:0a1b",     # the reference is at the end: badorg/blobs/tool
    "/v2/ghcr.io/goodorg/manifests/tool/manifests/v1",
    "/v2/ghcr.io/badorg/x/referrers/sha256:0a1b",
    "/v2/ghcr.io/badorg/x/tags/list",
    "/v2/quay.io/prometheus/node-exporter/manifests/v1.8",
    "/v2/library/nginx/manifests/latest",                  # docker's registry-mirrors: no registry in the path
    "/v2/library/evil/manifests/latest",
    "/v2/busybox/manifests/latest",
    "/v2/bitnami/redis/blobs/sha256:0a1b",
    "/v2/badorg/x/manifests/latest?ns=ghcr.io",            # containerd names the registry
    "/v2/library/evil/manifests/latest?ns=docker.io",
    "/v2/library/nginx/manifests/latest?ns=docker.io",
]
HOST_HEADERS = [None, "gcr.m.example"]                   # the mirror's own name, and one host per registry
CREDENTIALS = [None, ("basic", "alice"), ("basic", "Alice"), ("basic", "bob"), ("bearer", None)]
TOKEN_HOLDER = "someone-with-a-token"                    # a user with no decision of their own

# (name, server block body: the upstream is {up}, the folder {d}; what the upstream is sent for a path)
SERVER_INCLUDE = [
    ("server include, plain location", "include {d}/server.conf;\n location /v2/ {{ PROXY; proxy_pass http://{up}; }}",
     lambda p: p),
    ("rewrite ... break in the location",
     "include {d}/server.conf;\n location /v2/ {{ rewrite ^/v2/docker\\.io/(.+)$ /v2/$1 break; PROXY; proxy_pass http://{up}; }}",
     lambda p: re.sub(r"^/v2/docker\.io/", "/v2/", p)),
    ("rewrite ... last in the location",
     "include {d}/server.conf;\n location /v2/docker.io/ {{ rewrite ^/v2/docker\\.io/(.+)$ /v2/$1 last; }}\n"
     " location /v2/ {{ PROXY; proxy_pass http://{up}; }}",
     lambda p: re.sub(r"^/v2/docker\.io/", "/v2/", p)),
    ("a regex location proxying to $1",
     "include {d}/server.conf;\n location ~ ^/v2/docker\\.io/(.*)$ {{ PROXY; proxy_pass http://{up}/v2/$1$is_args$args; }}\n"
     " location /v2/ {{ PROXY; proxy_pass http://{up}; }}",
     lambda p: re.sub(r"^/v2/docker\.io/", "/v2/", p)),
    ("a server-level rewrite after the include",
     "include {d}/server.conf;\n rewrite ^/v2/docker\\.io/(.+)$ /v2/$1 last;\n location /v2/ {{ PROXY; proxy_pass http://{up}; }}",
     lambda p: re.sub(r"^/v2/docker\.io/", "/v2/", p)),
    ("a named location",
     "include {d}/server.conf;\n location /v2/ {{ error_page 418 = @mirror; return 418; }}\n"
     " location @mirror {{ PROXY; proxy_pass http://{up}; }}",
     lambda p: p),
]
LOCATION_INCLUDE = [
    ("location include first", "location /v2/ {{ include {d}/location.conf; PROXY; proxy_pass http://{up}; }}",
     lambda p: p),
    # without the server include, nginx evaluates the maps after the location's match, and any
    # regular expression it matches resets $1: a named capture is kept
    ("location include in a regex location with a named capture",
     "location ~ ^/v2/docker\\.io/(?<rest>.*)$ {{ include {d}/location.conf; PROXY; proxy_pass http://{up}/v2/$rest$is_args$args; }}\n"
     " location /v2/ {{ include {d}/location.conf; PROXY; proxy_pass http://{up}; }}",
     lambda p: re.sub(r"^/v2/docker\.io/", "/v2/", p)),
]
PROXY = "proxy_set_header X-Pullwarden-Tier $pullwarden_effective_tier"


class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "tier": self.headers.get("X-Pullwarden-Tier")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def build(tmp_path_factory, **settings) -> tuple[Enforcer, dict]:
    """A real enforcer with every kind of decision the include expresses; its published policy."""
    api = Enforcer(tmp_path_factory.mktemp("layouts"), host_registries=HOSTS, **settings)
    now = api.clock()
    with api.services.lock:
        # the rates are test_tiers.py's: here every request must get its tier's answer, not a 429
        api.store.execute("update tiers set requests_per_minute = 100000, burst = null, concurrent = null")
        api.store.execute("insert into allowlist values ('ip', '198.51.100.77', 'office', ?, null)", [now])
        for lst, patterns in (("blocked", BLOCKED), ("allowed", ALLOWED), ("unlimited", UNLIMITED)):
            for pattern in patterns:
                api.store.execute("insert into image_lists values (?, ?, 'test', ?)", [lst, pattern, now])
    api.ban("203.0.113.9")
    api.ban("198.51.100.0/24", scope="range")
    api.ban("alice", scope="user")
    api.ban("192.0.2.10", effect="boost", tier="heavy", reason="partner")
    api.ban("192.0.2.128/25", scope="range", effect="throttle", tier="throttled", reason="scraper")
    api.clock.advance(seconds=1)
    policy = json.loads(gzip.decompress(api.services.publisher.publish().body))
    api.client = httpx.Client(base_url=api.url, headers=api.headers("proxy"), timeout=10)
    return api, policy


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    api, policy = build(tmp_path_factory, upstream_checks_credentials=True)
    yield api, policy
    api.client.close()
    api.stop()


def requests():
    for ip in ADDRESSES:
        for path in PATHS:
            for host in HOST_HEADERS:
                for cred in CREDENTIALS:
                    if cred and (host or path not in PATHS[:3]):
                        continue            # users on a few paths: what they change does not depend on it
                    yield ip, path, host, cred


def headers(ip, host, cred) -> dict:
    h = {"X-Forwarded-For": ip, "Host": host or "m.example.io"}
    if cred and cred[0] == "basic":
        h["Authorization"] = "Basic " + base64.b64encode(f"{cred[1]}:pw".encode()).decode()
    elif cred:
        h["Authorization"] = "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln"
    return h


VERDICTS: dict = {}


def expected(api, ip, path, host, cred, authenticated: bool) -> tuple:
    """What /v1/check says: (allowed, tier or None); asked once for every layout."""
    key = (id(api), ip, path, host, cred, authenticated)
    if key not in VERDICTS:
        VERDICTS[key] = _check(api, ip, path, host, cred, authenticated)
    return VERDICTS[key]


def _check(api, ip, path, host, cred, authenticated: bool) -> tuple:
    image = request_image(path, HOSTS.get(host or "", "docker.io"))
    user = None
    if cred and cred[0] == "basic":
        user = cred[1]
    elif cred and authenticated:
        user = TOKEN_HOLDER
    params = {k: v for k, v in (("ip", ip), ("image", image), ("user", user)) if v}
    want = api.client.get("/v1/check", params=params).json()
    return want["allowed"], want["tier"] if want["allowed"] else None


def serve(folder, port, upstream, body) -> str:
    return f"""server {{
        listen 127.0.0.1:{port};
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        {body.replace("PROXY", PROXY).format(d=folder, up=upstream)}
    }}"""


@needs_nginx
@pytest.mark.parametrize("name, body, sent", SERVER_INCLUDE + LOCATION_INCLUDE, ids=[x[0] for x in SERVER_INCLUDE + LOCATION_INCLUDE])
def test_every_layout_refuses_what_check_refuses(checked, upstream, tmp_path, name, body, sent):
    api, policy = checked
    files = render(policy, warn=lambda m: None)
    port = free_port()
    wrong, count = [], 0
    with nginx(tmp_path, files, serve(tmp_path, port, upstream, body), port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
        for ip, path, host, cred in requests():
            want = expected(api, ip, path, host, cred, authenticated=True)
            r = proxy.get(path, headers=headers(ip, host, cred))
            count += 1
            got = (r.status_code != 403, r.json()["tier"] if r.status_code == 200 else None)
            if got != want or r.status_code not in (200, 403):
                wrong.append((ip, path, host, cred, r.status_code, got, want))
            elif r.status_code == 200 and r.json()["path"] != sent(path):
                wrong.append((ip, path, host, cred, "upstream was sent", r.json()["path"], sent(path)))
    assert count > 300
    assert wrong == [], "\n".join(map(str, [name, len(wrong), *wrong[:30]]))


@needs_nginx
def test_a_path_the_upstream_would_decode_is_refused_while_there_are_image_lists(checked, upstream, tmp_path):
    """nginx reads the path as sent; a registry decodes `%6f` into `o` and may resolve `..`: with
    an image list such a path is refused, as no registry client sends one."""
    api, policy = checked
    port = free_port()
    body = SERVER_INCLUDE[0][1]
    odd = ["/v2/ghcr.io/bad%6frg/x/manifests/latest", "/v2/ghcr.io/goodorg/../badorg/x/manifests/latest",
           "/v2/ghcr.io//badorg/x/manifests/latest"]
    with nginx(tmp_path, render(policy, warn=lambda m: None), serve(tmp_path, port, upstream, body), port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
        for path in odd:
            r = proxy.get(path, headers={"X-Forwarded-For": "192.0.2.33"})
            assert (r.status_code, r.text) == (403, "this image is not served by the mirror\n"), path
    lists = {**policy, "images": {"blocked": [], "allowed": [], "unlimited": UNLIMITED}}
    (tmp_path / "open").mkdir()
    with nginx(tmp_path / "open", render(lists, warn=lambda m: None), serve(tmp_path / "open", port, upstream, body),
               port), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
        assert proxy.get(odd[0], headers={"X-Forwarded-For": "192.0.2.33"}).status_code == 200


@needs_nginx
def test_without_upstream_checks_credentials_nginx_gives_anonymous_and_says_so(tmp_path_factory, upstream, tmp_path):
    """By default nginx cannot tell a real login from a made-up one: a request with credentials
    gets the anonymous tier, and unexpressed() says that /v1/check would give more."""
    api, policy = build(tmp_path_factory)
    try:
        assert policy["requests"] == {"default_registry": "docker.io", "host_registries": HOSTS,
                                      "upstream_checks_credentials": False}
        notes = unexpressed(policy)
        assert any("anonymous default tier (anonymous), not the authenticated one (authenticated)" in n for n in notes)
        port = free_port()
        with nginx(tmp_path, render(policy, warn=lambda m: None),
                   serve(tmp_path, port, upstream, SERVER_INCLUDE[0][1]), port), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
            for cred in CREDENTIALS:
                for ip in ADDRESSES:
                    allowed, tier = expected(api, ip, PATHS[1], None, cred, authenticated=False)
                    r = proxy.get(PATHS[1], headers=headers(ip, None, cred))
                    assert (r.status_code != 403) == allowed, (ip, cred)
                    if allowed:
                        assert r.json()["tier"] == (tier if tier != "authenticated" else "anonymous"), (ip, cred)
    finally:
        api.client.close()
        api.stop()


@needs_nginx
def test_the_longest_patterns_fit_nginx_s_parameters(checked, upstream, tmp_path):
    """nginx reads one configuration parameter of at most 4 KiB: a pattern of 300 bytes (the
    longest canonical_pattern takes), escapes and all, and many patterns together still load,
    and the long one is enforced."""
    api, policy = checked
    long_name = "a-b." * 70 + "xy"                  # one segment: library/ on docker.io, every form
    long_pattern = canonical_pattern(f"docker.io/library/{long_name}")
    assert len(long_pattern) == 300 and matches(long_pattern, f"docker.io/{long_name}")
    images = {"blocked": [long_pattern, *[f"quay.io/org{i}/**-x.y" for i in range(300)]],
              "allowed": [], "unlimited": [f"ghcr.io/org{i}/name-{i}.x" for i in range(300)]}
    port = free_port()
    with nginx(tmp_path, render({**policy, "images": images}, warn=lambda m: None),
               serve(tmp_path, port, upstream, SERVER_INCLUDE[0][1]), port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
        path = f"/v2/docker.io/{long_name}/manifests/latest"
        assert request_image(path, "docker.io") == f"docker.io/library/{long_name}"
        assert proxy.get(path, headers={"X-Forwarded-For": "192.0.2.33"}).status_code == 403
        ok = proxy.get("/v2/ghcr.io/org299/name-299.x/manifests/1", headers={"X-Forwarded-For": "192.0.2.33"})
        assert (ok.status_code, ok.json()["tier"]) == (200, "unlimited")


def test_how_requests_are_read_reaches_the_agent_as_a_change(tmp_path):
    """serve's default_registry, host_registries and upstream_checks_credentials are the policy's
    `requests` section: changed settings at a restart give a new version whose delta carries it,
    and the agent's include maps the new host."""
    import threading

    from core.store import open_store
    from enforcer.agent import apply
    from enforcer.snapshot import REQUESTS, Publisher
    from tests.enforcer_helpers import Clock

    store = open_store(str(tmp_path / "db.duckdb"))
    try:
        lock, clock = threading.RLock(), Clock()
        first = Publisher(store, lock, clock, 30).publish()
        held = json.loads(gzip.decompress(first.body))
        assert held["requests"] == REQUESTS
        moved = {**REQUESTS, "host_registries": {"gcr.m.example": "gcr.io"}, "upstream_checks_credentials": True}
        clock.advance(seconds=1)
        restarted = Publisher(store, lock, clock, 30, moved)
        second = restarted.publish()
        assert second.version == first.version + 1
        delta = restarted.changes(first.version, limit=0.25)
        assert delta["sections"] == {"requests": moved}
        policy = apply(held, delta)
        http = render(policy, warn=lambda m: None)["nginx-pullwarden-http.conf"]
        assert '"gcr.m.example" "gcr.io";' in http and "(?i:bearer)" in http
        assert Publisher(store, lock, clock, 30, moved).publish().version == second.version    # same settings
    finally:
        store.close()
