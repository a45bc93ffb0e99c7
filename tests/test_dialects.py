"""One policy, one meaning: for generated policies and requests, what /v1/check says is what
every reader of the agent's files and of the bouncer stream does.

- nginx: the real nginx with the generated include, the client's address given by
  X-Forwarded-For through real_ip, a user by basic auth; the location answers the tier it
  would apply, or the include's 403.
- CrowdSec: the real pycrowdsec StreamClient's decision lookup after a start-up pull.
- CRProxy: its published reading rules, kept small (enforcer/imagelist.py for hostmatcher;
  Go's encoding/csv is RFC 4180, as Python's csv reads it): refused when the address is in
  block-ips.csv or the image matches no line of allows.txt.

Each dialect is held to what it can express (render.unexpressed() says what it cannot): CRProxy
has no blocked-image list and exact addresses only, CrowdSec has only address and range bans,
nginx no AS numbers and users only by basic auth. A disagreement fails with hypothesis's
smallest example.
"""
from __future__ import annotations

import base64
import csv
import gzip
import io
import ipaddress
import json
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrowdsec.client import StreamClient

from enforcer.changes import assignment_effect
from enforcer.imagelist import canonical_pattern, matches
from enforcer.render import RANGE_EXPAND_MAX, render
from tests.enforcer_helpers import Enforcer, free_port
from tests.nginx_helpers import needs_nginx, nginx

ADDRESSES = ["198.51.100.0", "198.51.100.1", "198.51.100.7", "198.51.100.77", "198.51.100.78", "198.51.100.130",
             "198.51.100.255", "198.51.101.5", "203.0.113.9", "2001:db8:7::1", "2001:db8:7::2", "2001:db8:7::ff",
             "2001:db8:7:0:ffff::1", "2001:db8:8::1", "::ffff:198.51.100.7"]
IPS = ["198.51.100.7", "198.51.100.77", "203.0.113.9", "2001:db8:7::1", "2001:db8:7::2"]
RANGES = ["198.51.100.0/24", "198.51.100.0/28", "198.51.100.128/25", "198.51.100.76/30", "198.51.0.0/16",
          "2001:db8:7::/64", "2001:db8:7::/120"]
ALLOW = [("ip", "198.51.100.77"), ("ip", "2001:db8:7::1"), ("cidr", "198.51.100.0/30"), ("cidr", "2001:db8:7::/126"),
         ("cidr", "198.51.100.128/26")]
USERS = ["alice", "ci-bot"]
PATTERNS = ["docker.io/library/*", "docker.io/library/nginx", "ghcr.io/**", "quay.io/*/node-exporter",
            "registry.k8s.io/kube-*", "docker.io/bitnami/*"]
IMAGES = ["docker.io/library/nginx", "docker.io/nginx", "docker.io/library/busybox", "ghcr.io/actions/runner",
          "quay.io/prometheus/node-exporter", "registry.k8s.io/kube-apiserver", "registry.k8s.io/pause",
          "docker.io/bitnami/redis"]
TIERS = ["throttled", "heavy", "unlimited", "authenticated"]

decision = st.one_of(
    st.tuples(st.just("ban"), st.just("ip"), st.sampled_from(IPS), st.none()),
    st.tuples(st.just("ban"), st.just("range"), st.sampled_from(RANGES), st.none()),
    st.tuples(st.just("ban"), st.just("user"), st.sampled_from(USERS), st.none()),
    st.tuples(st.just("assign"), st.just("ip"), st.sampled_from(IPS), st.sampled_from(TIERS)),
    st.tuples(st.just("assign"), st.just("range"), st.sampled_from(RANGES), st.sampled_from(TIERS)))
policies = st.fixed_dictionaries({
    "decisions": st.lists(decision, max_size=5, unique_by=lambda d: (d[0], d[1], d[2])),
    "allow": st.lists(st.sampled_from(ALLOW), max_size=3, unique=True),
    "blocked": st.lists(st.sampled_from(PATTERNS), max_size=2, unique=True),
    "allowed": st.lists(st.sampled_from(PATTERNS), max_size=2, unique=True),
    "unlimited": st.lists(st.sampled_from(PATTERNS), max_size=2, unique=True)})


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    e = Enforcer(tmp_path_factory.mktemp("dialects"))
    e.client = httpx.Client(base_url=e.url, headers=e.headers("proxy"), timeout=10)
    yield e
    e.client.close()
    e.stop()


def install(api, p: dict) -> dict:
    """The generated policy in a fresh store state; the published document."""
    now = api.clock()
    with api.services.lock:
        # revoked, not deleted: the publisher follows decisions by their change number
        api.store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') where revoked_at is null",
                          [now])
        for table in ("allowlist", "image_lists"):
            api.store.execute(f"delete from {table}")
        for kind, value in p["allow"]:
            api.store.execute("insert into allowlist values (?, ?, 'office', ?, null)", [kind, value, now])
        for lst in ("blocked", "allowed", "unlimited"):
            for pattern in p[lst]:
                api.store.execute("insert into image_lists values (?, ?, 'test', ?)", [lst, pattern, now])
    for action, scope, value, tier in p["decisions"]:
        if action == "ban":
            api.ban(value, scope=scope, reason='rotation, "quoted"\nreason')
        else:
            api.ban(value, scope=scope, effect=assignment_effect(tier), tier=tier, reason="tier")
    api.clock.advance(seconds=1)      # a new second: the rebuild sees every change
    return json.loads(gzip.decompress(api.services.publisher.publish().body))


def server_block(folder, port: int, body: str) -> str:
    """nginx on loopback with the server include, taking the client from X-Forwarded-For (as behind a
    load balancer), answering 200 with ``body`` whatever the include lets through."""
    return f"""server {{
        listen 127.0.0.1:{port};
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        include {folder}/server.conf;
        location /v2/ {{
            return 200 {body};
        }}
    }}"""


def check(api, ip, image=None, user=None) -> dict:
    params = {k: v for k, v in (("ip", ip), ("image", image), ("user", user)) if v}
    return api.client.get("/v1/check", params=params).json()


def crproxy_refuses(files: dict, ip: str, image: str) -> bool:
    blocked = {row[0] for row in csv.reader(io.StringIO(files["block-ips.csv"]))}
    assert all(len(row) == 2 for row in csv.reader(io.StringIO(files["block-ips.csv"])))   # CRProxy reads record[1]
    allows = [line.strip() for line in files["allows.txt"].splitlines() if line.strip()]
    assert allows == sorted(allows, key=str.encode) and allows                             # sorted, never empty
    return unmapped(ip) in blocked or not any(matches(p, image) for p in allows)


def unmapped(ip: str) -> str:
    """How CRProxy (Go's net) writes a client's address: IPv4-mapped IPv6 as IPv4."""
    addr = ipaddress.ip_address(ip)
    return str(addr.ipv4_mapped or addr) if addr.version == 6 else str(addr)


def in_wide_range(policy: dict, ip: str) -> bool:
    addr = ipaddress.ip_address(unmapped(ip))
    return any(e["scope"] == "range" and addr in (n := ipaddress.ip_network(e["value"])) and addr.version == n.version
               and n.num_addresses > RANGE_EXPAND_MAX for e in policy["bans"].values())


@needs_nginx
@settings(max_examples=30, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(p=policies)
def test_every_dialect_says_what_check_says(api, tmp_path_factory, p):
    policy = install(api, p)
    files = render(policy, warn=lambda m: None)
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    servers = server_block(folder, port, '"$pullwarden_effective_tier"')
    bouncer = StreamClient(api.keys["proxy"], lapi_url=api.url + "/", interval=1)
    bouncer.cycle("true")
    disagreements = []
    with nginx(folder, files, servers, port), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
        for ip in ADDRESSES:
            banned = not check(api, ip)["allowed"]
            # a bouncer is asked about the address as nginx or Go hands it over: IPv4 unmapped
            if (bouncer.get_action_for(unmapped(ip)) == "ban") != banned:
                disagreements.append(("crowdsec", ip, banned))
            for image in IMAGES + [None]:
                for user in [None, *USERS, "Alice"]:      # a user's name is compared with its case
                    if user and image != IMAGES[0]:
                        continue
                    want = check(api, ip, image, user)
                    path = f"/v2/{image}/manifests/latest" if image else "/v2/"     # the ping names no image
                    headers = {"X-Forwarded-For": ip}
                    if user:
                        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()
                    r = proxy.get(path, headers=headers)
                    got = (r.status_code != 403, r.text if r.status_code == 200 else None)
                    expect = (want["allowed"], want["tier"] if want["allowed"] else None)
                    if user:                        # nginx does not know who is logged in: no default by user
                        got, expect = got[0], expect[0]
                    if got != expect:
                        disagreements.append(("nginx", ip, image, user, got, expect, want["why"]))
                    if image and not user and not in_wide_range(policy, ip) \
                            and not any(matches(x, image) for x in policy["images"]["blocked"]):
                        if crproxy_refuses(files, ip, image) == want["allowed"]:
                            disagreements.append(("crproxy", ip, image, not want["allowed"], want["why"]))
    assert disagreements == [], (p, disagreements[:5])


def test_generated_patterns_are_canonical():
    assert all(canonical_pattern(p) == p for p in PATTERNS)


@needs_nginx
def test_a_quote_in_a_reason_reaches_crproxy_as_one_csv_record(api):
    install(api, {"decisions": [("ban", "ip", "203.0.113.9", None)], "allow": [], "blocked": [], "allowed": [],
                  "unlimited": []})
    files = render(json.loads(gzip.decompress(api.services.publisher.publish().body)), warn=lambda m: None)
    assert files["block-ips.csv"] == '203.0.113.9,"rotation, ""quoted"" reason"\n'
    assert files["allows.txt"] == "*\n" and files["privileged-images.txt"] == "pullwarden.invalid/no-image\n"
    assert files["crproxy-flags.txt"] == "--ips-speed-limit=20Gi/2h\n"


@needs_nginx
def test_nginx_tells_a_banned_client_why(api, tmp_path):
    install(api, {"decisions": [("ban", "ip", "203.0.113.9", None), ("ban", "range", "198.51.100.0/24", None)],
                  "allow": [], "blocked": ["docker.io/library/busybox"], "allowed": [], "unlimited": []})
    policy = json.loads(gzip.decompress(api.services.publisher.publish().body))
    files = render(policy, warn=lambda m: None)
    port = free_port()
    servers = server_block(tmp_path, port, '"ok"')
    with nginx(tmp_path, files, servers, port), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
        # docker shows the body of a refusal: the ban's reason, quotes and all, on one line, as
        # /v1/check gives it
        for ip in ("203.0.113.9", "198.51.100.77"):
            r = proxy.get("/v2/", headers={"X-Forwarded-For": ip})
            assert (r.status_code, r.text) == (403, 'banned by the mirror: rotation, "quoted" reason\n')
            assert " ".join(check(api, ip)["why"][0].split()).endswith(': rotation, "quoted" reason')
        r = proxy.get("/v2/docker.io/library/busybox/manifests/latest", headers={"X-Forwarded-For": "192.0.2.1"})
        assert (r.status_code, r.text) == (403, "this image is not served by the mirror\n")
        assert proxy.get("/v2/", headers={"X-Forwarded-For": "192.0.2.1"}).text == "ok"
