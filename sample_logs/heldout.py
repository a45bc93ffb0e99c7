"""Held-out labelled traffic: a second scenario generator that the rules are checked against and
never tuned on.

It was written from the domain description alone (how a pull looks on the wire, the user agents,
the two log formats, what the operator sees), without reading the tuning generator
(sample_logs/scenarios.py) or the rule thresholds, so that a rule fitted to the quirks of one
generator shows up as a miss here. Everything differs on purpose: the address blocks
(100.64.0.0/10 and 2001:db8:8000::/33 with real-world AS numbers), the image catalog, the sizes,
the proportions, the seeds (strings), the start (a Monday in March 2025) and the local time zone
(the mirror's nginx and CRProxy write +08:00).

``generate(days, seed, scale, fmt)`` returns the log lines (nginx ``main`` or CRProxy ``clf``) and
the actors that produced them; ``expect`` says what detection must do with each:
"ban", "throttle-or-ban", or "leave" (neither banned nor throttled). ``scale`` sizes the
legitimate population (office, cluster, fleet, light users); the abusers' intensity is their nature
and is drawn per seed from the ranges below.

Abusive archetypes (one actor each)

=================  ================  =============================================================
kind               expect            shape
=================  ================  =============================================================
ci-repull          throttle-or-ban   one hosting address (AWS or Hetzner), docker via a runner's SDK,
                                     re-pulls one 0.3-1 GB image with every blob every 3-8 min,
                                     round the clock
tag-scanner        ban               one DigitalOcean address, tags/list of 300-700 repos a day over
                                     6-14 hours, ~70% 404, ~20% 401, a few _catalog 403s
error-storm        throttle-or-ban   one ISP address, a broken deploy loop asking for a tag that does
                                     not exist every 20-60 s for 10-18 h a day (401 ping, 404s, 429s)
rotation-v4        throttle-or-ban   a CI storm taking turns over 40-60 addresses of one Hetzner /24
rotation-v6        throttle-or-ban   the same over 48-80 addresses of one Hetzner IPv6 /64
reseller-classic   ban               one Alibaba or AWS address relaying 1,500-3,000 pulls a day,
                                     flat, downstream docker/containerd/podman UAs (40+ strings),
                                     broad images, no cache, X-Forwarded-For on 0-30%
reseller-generic   ban               one DigitalOcean or Hetzner address, ONE user agent
                                     (Go-http-client/1.1 or python-requests/2.31.0 by seed),
                                     600-1,500 pulls a day round the clock over many unrelated images
                                     and registries, the same blobs again and again, X-Forwarded-For
                                     on 20-60% of requests
reseller-small     ban               one AWS or Alibaba address (IPv4 or IPv6 by seed), 200-450 pulls
                                     a day flat over 24 h, 3-6 downstream UAs, no working-day rhythm
=================  ================  =============================================================

In ``clf`` every archetype loses its user agent and forwarded-for: the resellers are then only
their shape.

Legitimate archetypes (expect "leave")

====================  ===========================================================================
office-nat            one ISP address (China Telecom), 100-300 x scale developers (at least 80),
                      Docker Desktop / engine UAs of many versions, working hours on weekdays,
                      each developer keeps a layer cache
k8s-nat               one Alibaba-cloud egress address, 15-40 nodes on containerd, manifest HEAD
                      checks every few minutes all day, 1-3 rollouts a day (every node pulls the
                      new layers within minutes), an occasional new node pulling everything
harbor-cache          one ISP address (China Unicom), harbor-registry-client, 120-300 images a day,
                      each blob once, manifests re-checked on every downstream pull, office hours
                      plus a nightly build
pull-through-cache    a registry:2-style proxy on an ISP address (DTAG): Go-http-client/1.1, each
                      blob once, broad, working hours
ai-team               two addresses of a lab (China Mobile), one or two pulls of 5-20 GB
                      nvcr.io / pytorch images, a few small pulls
hosted-ci-fleet       120-300 x scale Azure addresses (GitHub-Actions-like), each running one or two
                      jobs that pull 1-3 images cold
privacy-v6            a household /64 at DTAG whose 10-30 temporary addresses change daily, light
light                 150-400 x scale home users on ISP networks (IPv4 and IPv6), 1-4 pulls
====================  ===========================================================================
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

START = datetime(2025, 3, 10, tzinfo=UTC)       # a Monday
TZ = timezone(timedelta(hours=8))                          # the mirror logs Asia/Shanghai time
DAY = 86400
ABUSIVE = {"ci-repull": "throttle-or-ban", "tag-scanner": "ban", "error-storm": "throttle-or-ban",
           "rotation-v4": "throttle-or-ban", "rotation-v6": "throttle-or-ban",
           "reseller-classic": "ban", "reseller-generic": "ban", "reseller-small": "ban"}
LEGIT = ("office-nat", "k8s-nat", "harbor-cache", "pull-through-cache", "ai-team", "hosted-ci-fleet",
         "privacy-v6", "light")

# (network, ASN, organisation, hosting?)
NETWORKS = [
    ("100.64.0.0/16", 16509, "AMAZON-02", True),
    ("100.65.0.0/16", 14061, "DIGITALOCEAN-ASN", True),
    ("100.66.0.0/16", 24940, "HETZNER-AS", True),
    ("100.67.0.0/16", 45102, "ALIBABA-CN-NET Alibaba US Technology Co., Ltd.", True),
    ("100.68.0.0/16", 8075, "MICROSOFT-CORP-MSN-AS-BLOCK", True),
    ("100.70.0.0/15", 4134, "CHINANET-BACKBONE No.31,Jin-rong Street", False),
    ("100.72.0.0/15", 4837, "CHINA169-BACKBONE CHINA UNICOM China169 Backbone", False),
    ("100.74.0.0/16", 9808, "CHINAMOBILE-CN China Mobile Communications Group Co., Ltd.", False),
    ("100.75.0.0/16", 3320, "DTAG Deutsche Telekom AG", False),
    ("2001:db8:8000::/36", 3320, "DTAG Deutsche Telekom AG", False),
    ("2001:db8:9000::/36", 4134, "CHINANET-BACKBONE No.31,Jin-rong Street", False),
    ("2001:db8:a000::/36", 24940, "HETZNER-AS", True),
    ("2001:db8:b000::/36", 16509, "AMAZON-02", True),
    ("2001:db8:c000::/36", 9808, "CHINAMOBILE-CN China Mobile Communications Group Co., Ltd.", False),
]
ASN_OF = {}
for _net, _asn, _org, _h in NETWORKS:
    ASN_OF.setdefault(_asn, []).append(_net)


def asn_networks() -> dict[str, dict]:
    """Records for an ASN mmdb (tests/test_enrich.build) covering every generated address."""
    return {net: {"autonomous_system_number": asn, "autonomous_system_organization": org}
            for net, asn, org, _ in NETWORKS}


@dataclass
class Actor:
    name: str
    kind: str
    abusive: bool
    expect: str                  # "ban" | "throttle-or-ban" | "leave"
    asn: int
    addresses: list[str] = field(default_factory=list)
    prefix: str | None = None    # the /24 or /64 a rotation or a privacy household lives in


@dataclass(frozen=True)
class Image:
    registry: str
    repo: str
    tag: str
    index: int                   # bytes of the tag's manifest (an index for multi-arch images)
    platform: str                # digest of the platform manifest
    config: tuple[str, int]
    layers: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        return sum(s for _, s in self.layers)


def _digest(*parts) -> str:
    return "sha256:" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


# registry, repository, tags, MB, layers: the images everybody pulls
POPULAR = [
    ("docker.io", "library/nginx", ["1.27", "1.26-alpine"], 70, 7), ("docker.io", "library/redis", ["7.4"], 45, 6),
    ("docker.io", "library/postgres", ["16", "17"], 150, 13), ("docker.io", "library/python", ["3.12", "3.12-slim"], 380, 6),
    ("docker.io", "library/node", ["22", "20-alpine"], 390, 7), ("docker.io", "library/golang", ["1.23"], 280, 7),
    ("docker.io", "library/alpine", ["3.20", "3.21"], 4, 1), ("docker.io", "library/ubuntu", ["24.04", "22.04"], 29, 1),
    ("docker.io", "library/busybox", ["1.36"], 2, 1), ("docker.io", "library/mysql", ["8.4"], 170, 10),
    ("docker.io", "library/eclipse-temurin", ["21-jre"], 90, 5), ("docker.io", "library/maven", ["3.9-eclipse-temurin-21"], 210, 9),
    ("docker.io", "library/mongo", ["8.0"], 250, 9), ("docker.io", "library/debian", ["bookworm-slim"], 28, 1),
    ("docker.io", "bitnami/kafka", ["3.8"], 220, 5), ("docker.io", "bitnami/postgresql", ["16.4.0"], 100, 3),
    ("docker.io", "grafana/grafana", ["11.3.0"], 130, 10), ("docker.io", "minio/minio", ["RELEASE.2024-10-13T13-34-11Z"], 60, 5),
    ("gcr.io", "distroless/static-debian12", ["nonroot"], 1, 2), ("gcr.io", "kaniko-project/executor", ["v1.23.2"], 30, 4),
    ("registry.k8s.io", "pause", ["3.10"], 1, 1), ("registry.k8s.io", "kube-proxy", ["v1.31.2"], 30, 4),
    ("registry.k8s.io", "coredns/coredns", ["v1.11.3"], 18, 2), ("registry.k8s.io", "etcd", ["3.5.15-0"], 60, 5),
    ("registry.k8s.io", "ingress-nginx/controller", ["v1.11.3"], 105, 12),
    ("quay.io", "prometheus/prometheus", ["v2.55.0"], 105, 10), ("quay.io", "prometheus/node-exporter", ["v1.8.2"], 11, 3),
    ("quay.io", "jetstack/cert-manager-controller", ["v1.16.1"], 20, 3), ("quay.io", "calico/node", ["v3.28.2"], 140, 2),
    ("ghcr.io", "actions/actions-runner", ["2.320.0"], 450, 10), ("ghcr.io", "dexidp/dex", ["v2.41.1"], 50, 6),
    ("mcr.microsoft.com", "dotnet/sdk", ["8.0"], 270, 8), ("mcr.microsoft.com", "dotnet/aspnet", ["8.0"], 80, 5),
    ("mcr.microsoft.com", "mssql/server", ["2022-latest"], 580, 6),
]
HUGE = [
    ("nvcr.io", "nvidia/pytorch", ["24.10-py3"], 11000, 40), ("nvcr.io", "nvidia/cuda", ["12.6.2-cudnn-devel-ubuntu22.04"], 5200, 18),
    ("nvcr.io", "nvidia/tritonserver", ["24.10-py3"], 8500, 30), ("docker.io", "pytorch/pytorch", ["2.5.1-cuda12.4-cudnn9-devel"], 9300, 20),
    ("nvcr.io", "nvidia/tensorflow", ["24.10-tf2-py3"], 7800, 35),
]
TAIL_REGISTRIES = (["docker.io"] * 11 + ["ghcr.io"] * 3 + ["quay.io"] * 2 + ["gcr.io", "mcr.microsoft.com",
                                                                          "registry.k8s.io", "nvcr.io"])
WORDS = ["atlas", "birch", "cobalt", "delta", "ember", "falcon", "garnet", "harbor", "iris", "juniper",
         "kepler", "lumen", "maple", "nimbus", "onyx", "pylon", "quartz", "raven", "sierra", "tundra",
         "umber", "vortex", "willow", "xenon", "yonder", "zephyr", "agent", "api", "web", "worker", "gateway",
         "proxy", "exporter", "operator", "sidecar", "runner", "builder", "db", "cache", "queue", "search",
         "auth", "billing"]


def _image(rng, registry, repo, tag, mb, nlayers) -> Image:
    weights = [rng.expovariate(1) for _ in range(nlayers)]
    total = sum(weights)
    key = (registry, repo, tag)
    layers = tuple((_digest(*key, "layer", i), max(200, int(mb * 1e6 * w / total))) for i, w in enumerate(weights))
    return Image(registry, repo, tag, rng.randint(1500, 10000), _digest(*key, "platform"),
                 (_digest(*key, "config"), rng.randint(2000, 15000)), layers)


@lru_cache(maxsize=8)
def catalog(seed: str) -> tuple[list[Image], list[Image], list[Image]]:
    """Popular, long-tail and huge images; the tail and the sizes depend on the seed."""
    rng = random.Random(f"pullwarden-heldout:{seed}:catalog")
    popular = [_image(rng, r, p, t, mb, n) for r, p, tags, mb, n in POPULAR for t in tags]
    huge = [_image(rng, r, p, t, mb, n) for r, p, tags, mb, n in HUGE for t in tags]
    tail, seen = [], set()
    while len(tail) < 500:
        registry = rng.choice(TAIL_REGISTRIES)
        repo = f"{rng.choice(WORDS)}{rng.randint(1, 99)}/{rng.choice(WORDS)}-{rng.choice(WORDS)}"
        if repo in seen:
            continue
        seen.add(repo)
        mb = min(3000, max(2, rng.lognormvariate(math.log(120), 1.0)))
        tag = rng.choice(["latest", f"v{rng.randint(0, 4)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}", "main",
                          f"2025{rng.randint(1, 3):02d}{rng.randint(1, 28):02d}"])
        tail.append(_image(rng, registry, repo, tag, mb, rng.randint(2, 14)))
    return popular, tail, huge


# ---------------------------------------------------------------------------- user agents
DOCKER_VERSIONS = [("20.10.24", "1.19.7"), ("23.0.6", "1.20.4"), ("24.0.7", "1.20.10"), ("24.0.9", "1.20.13"),
                   ("25.0.5", "1.21.8"), ("26.0.0", "1.21.8"), ("26.1.4", "1.21.11"), ("27.0.3", "1.21.11"),
                   ("27.1.1", "1.21.12"), ("27.2.0", "1.21.13"), ("27.3.1", "1.22.7"), ("27.4.0", "1.22.10"),
                   ("28.0.1", "1.23.6")]
KERNELS = ["5.4.0-200-generic", "5.15.0-124-generic", "6.8.0-57-generic", "6.1.0-26-amd64", "4.18.0-553.el8_10.x86_64",
           "5.14.0-427.40.1.el9_4.x86_64", "6.10.11-linuxkit", "6.6.32-linuxkit", "5.15.153.1-microsoft-standard-WSL2"]
OTHER_UAS = ["containerd/v1.7.22", "containerd/v1.6.24", "containerd/1.7.20+unknown", "containerd/v1.7.13",
             "cri-o/1.30.4 go/go1.22.5 os/linux arch/amd64", "cri-o/1.29.1 go/go1.21.7 os/linux arch/amd64",
             "containers/5.28.1 (github.com/containers/image)", "containers/5.32.2 (github.com/containers/image)",
             "skopeo/1.14.2", "Buildah/1.33.7", "buildkit/v0.16 moby/v27.3", "buildkit/v0.13 moby/v26.0",
             "go-containerregistry/v0.20.2", "crane/v0.19.1 go-containerregistry/v0.19.1", "Helm/3.16.2"]


def docker_ua(rng, sdk: bool = False) -> str:
    """A docker engine UA as the engine sends it (the backslashes are nginx's to escape)."""
    version, go = rng.choice(DOCKER_VERSIONS)
    kernel = rng.choice(KERNELS)
    arch = "arm64" if "linuxkit" in kernel and rng.random() < 0.6 else "amd64"
    os_ = "darwin" if "linuxkit" in kernel else "windows" if "WSL2" in kernel else "linux"
    upstream = "Go-http-client/1.1" if sdk else f"Docker-Client/{version} \\({os_}\\)"
    commit = hashlib.sha1(version.encode()).hexdigest()[:7]
    return (f"docker/{version} go/go{go} git-commit/{commit} kernel/{kernel} os/linux arch/{arch} "
            f"UpstreamClient({upstream})")


# ---------------------------------------------------------------------------- addresses
class Addresses:
    """Hands out addresses; an abuser's /24 or /64 is its own, so that a range decision
    against it can only hit it."""

    def __init__(self, rng):
        self.rng, self.used, self.reserved = rng, set(), set()

    def _block(self, addr) -> ipaddress._BaseNetwork:
        return ipaddress.ip_network(f"{addr}/{24 if addr.version == 4 else 64}", strict=False)

    def one(self, asn: int, v6: bool = False, own_block: bool = False) -> str:
        nets = [ipaddress.ip_network(n) for n in ASN_OF[asn] if (":" in n) == v6]
        while True:
            net = self.rng.choice(nets)
            addr = net[self.rng.randrange(2, net.num_addresses - 2)]
            if addr in self.used or self._block(addr) in self.reserved:
                continue
            if own_block and any(self._block(a) == self._block(addr) for a in self.used):
                continue
            self.used.add(addr)
            if own_block:
                self.reserved.add(self._block(addr))
            return str(addr)

    def block(self, asn: int, v6: bool, n: int) -> tuple[str, list[str]]:
        first = ipaddress.ip_address(self.one(asn, v6, own_block=True))
        prefix = self._block(first)
        hosts = {first}
        while len(hosts) < n:
            hosts.add(prefix[self.rng.randrange(2, min(prefix.num_addresses, 1 << 64) - 1)])
        self.used |= hosts
        return str(prefix), [str(h) for h in sorted(hosts)]


# ---------------------------------------------------------------------------- requests
# a request: (start s, end s, address, method, uri, status, bytes, user agent, forwarded-for)

def _profile(local_weights: list[float], utc_offset: int = 8):
    """A sampler of seconds within a UTC day from weights per local hour."""
    hours = list(range(24))

    def when(rng, day: int) -> float:
        local = rng.choices(hours, local_weights)[0]
        return day * DAY + ((local - utc_offset) % 24) * 3600 + rng.random() * 3600
    return when


WORKDAY_W = [0, 0, 0, 0, 0, 0, 0, 1, 4, 9, 10, 9, 5, 8, 10, 10, 9, 7, 4, 2, 1, 1, 0.5, 0]
EVENING_W = [1, 0.5, 0.2, 0.1, 0.1, 0.2, 0.5, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 6, 7, 7, 5, 2]
WORKDAY = _profile(WORKDAY_W)
EVENING = _profile(EVENING_W)
FLAT = _profile([1] * 24)
WORKDAY_DE = _profile(WORKDAY_W, 1)
EVENING_DE = _profile(EVENING_W, 1)


def _weekday(start: datetime, day: int) -> bool:
    return (start + timedelta(days=day, hours=12)).astimezone(TZ).weekday() < 5


class Traffic:
    def __init__(self):
        self.reqs: list[tuple] = []

    def add(self, t, ip, method, uri, status, nbytes, ua, xff=None, rate=20e6):
        self.reqs.append((t, t + 0.02 + nbytes / rate, ip, method, uri, status, nbytes, ua, xff))

    def pull(self, rng, t, ip, ua, img: Image, have: set | None = None, xff=None, ping=True, head=True,
             style="prefix") -> float:
        """One pull as docker/containerd do it; returns when it ended. ``have``: the layers the
        client already holds (None: none, and nothing is remembered)."""
        base = _base(img, style)
        q = f"?ns={img.registry}" if style == "ns" else ""
        rate = rng.uniform(3e6, 40e6)
        if ping:
            self.add(t, ip, "GET", "/v2/", 401, 87, ua, xff)
            t += rng.uniform(0.05, 0.4)
        if head:
            self.add(t, ip, "HEAD", f"{base}/manifests/{img.tag}{q}", 200, 0, ua, xff)
            t += rng.uniform(0.02, 0.2)
            if have is not None and all(d in have for d, _ in img.layers):
                return t                        # up to date: the HEAD was the whole pull
        self.add(t, ip, "GET", f"{base}/manifests/{img.tag}{q}", 200, img.index, ua, xff)
        t += rng.uniform(0.05, 0.3)
        self.add(t, ip, "GET", f"{base}/manifests/{img.platform}{q}", 200, rng.randint(1200, 3200), ua, xff)
        t += rng.uniform(0.05, 0.3)
        self.add(t, ip, "GET", f"{base}/blobs/{img.config[0]}{q}", 200, img.config[1], ua, xff)
        lanes = [t + 0.1] * 3                   # three downloads at a time
        for digest, size in img.layers:
            if have is not None and digest in have:
                continue
            i = lanes.index(min(lanes))
            self.add(lanes[i], ip, "GET", f"{base}/blobs/{digest}{q}", 200, size, ua, xff, rate)
            lanes[i] += 0.05 + size / rate
            if have is not None:
                have.add(digest)
        return max(lanes)


def _base(img: Image, style: str) -> str:
    repo = img.repo
    if style in ("mirror", "ns") and img.registry == "docker.io":
        return f"/v2/{repo}"                    # registry-mirrors / containerd hosts.toml: no registry in the path
    if style == "ns":
        return f"/v2/{repo}"
    return f"/v2/{img.registry}/{repo}"


# ---------------------------------------------------------------------------- archetypes
def _mixed(rng, seed, broad: float) -> Image:
    """An image as a population of downstream users asks for them: popular ones mostly, the
    long tail with probability ``broad``."""
    popular, tail, _ = catalog(seed)
    if rng.random() < broad:
        return rng.choice(tail)
    return popular[min(len(popular) - 1, int(rng.paretovariate(1.1)) - 1)]


def _ci_repull(tr, rng, actor, days, ua, img, every, addresses=None):
    addresses = addresses or actor.addresses
    for day in range(days):
        t, i = day * DAY + rng.uniform(0, every), 0
        while t < (day + 1) * DAY:
            tr.pull(rng, t, addresses[i % len(addresses)], ua, img)
            i += 1
            if len(addresses) > 1 and i % len(addresses) == 0:
                rng.shuffle(addresses)
            t += every * rng.uniform(0.7, 1.3)


def _reseller(tr, rng, seed, actor, days, per_day, uas, broad, xff_share, xff_pool):
    ip = actor.addresses[0]
    for day in range(days):
        for _ in range(per_day):
            t = FLAT(rng, day)
            img = _mixed(rng, seed, broad)
            xff = rng.choice(xff_pool) if xff_pool and rng.random() < xff_share else None
            have = {d for d, _ in img.layers if rng.random() < 0.5} if rng.random() < 0.3 else None
            tr.pull(rng, t, ip, rng.choice(uas), img, have=have, xff=xff, ping=rng.random() < 0.6,
                    head=rng.random() < 0.7, style=rng.choice(["prefix", "prefix", "mirror", "ns"]))


def _downstream(rng, n) -> list[str]:
    return [f"{rng.choice(['203.0.113', '198.51.100', '192.0.2'])}.{rng.randint(1, 254)}" if rng.random() < 0.6
            else f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(n)]


def _abusers(tr, seed, days, addr: Addresses) -> list[Actor]:
    def rng_of(name):
        return random.Random(f"pullwarden-heldout:{seed}:{name}")
    popular, tail, _ = catalog(seed)
    actors = []

    def actor(kind, asns):
        a = Actor(kind, kind, True, ABUSIVE[kind], rng_of(f"{kind}/asn").choice(asns))
        actors.append(a)
        return a, rng_of(kind)

    a, rng = actor("ci-repull", [16509, 24940])
    a.addresses = [addr.one(a.asn, own_block=True)]
    mid = [i for i in popular + tail if 3e8 <= i.size <= 1e9]
    _ci_repull(tr, rng, a, days, docker_ua(rng, sdk=True), rng.choice(mid), rng.uniform(180, 480))

    a, rng = actor("tag-scanner", [14061])
    a.addresses = [addr.one(a.asn, own_block=True)]
    ua = rng.choice(["python-requests/2.31.0", "Go-http-client/1.1", "skopeo/1.14.2", "curl/8.5.0"])
    for day in range(days):
        t = day * DAY + rng.uniform(0, 8) * 3600
        end = t + rng.uniform(6, 14) * 3600
        repos = rng.randint(300, 700)
        for _ in range(repos):
            t += (end - t) / repos * rng.uniform(0.2, 1.8)
            reg = rng.choice(TAIL_REGISTRIES)
            status = rng.choices([404, 401, 200], [70, 20, 10])[0]
            tr.add(t, a.addresses[0], "GET", f"/v2/{reg}/{rng.choice(WORDS)}{rng.randint(1, 999)}/"
                   f"{rng.choice(WORDS)}/tags/list?n=1000", status, 40 if status != 200 else rng.randint(200, 9000), ua)
        for _ in range(rng.randint(3, 9)):
            tr.add(day * DAY + rng.uniform(0, DAY), a.addresses[0], "GET", "/v2/_catalog", 403, 55, ua)

    a, rng = actor("error-storm", [4837])
    a.addresses = [addr.one(a.asn, own_block=True)]
    ua, img = rng.choice(OTHER_UAS[:4]), rng.choice(tail)
    base = _base(img, "prefix")
    for day in range(days):
        t = day * DAY + rng.uniform(0, 6) * 3600
        end = t + rng.uniform(10, 18) * 3600
        while t < end:
            limited = rng.random() < 0.15
            tr.add(t, a.addresses[0], "GET", "/v2/", 401, 87, ua)
            tr.add(t + 0.1, a.addresses[0], "HEAD", f"{base}/manifests/v0.0.0-does-not-exist", 429 if limited else 404, 0, ua)
            if not limited:
                tr.add(t + 0.2, a.addresses[0], "GET", f"{base}/manifests/v0.0.0-does-not-exist", 404, 140, ua)
            t += rng.uniform(20, 60)

    for kind, v6, n in (("rotation-v4", False, (40, 60)), ("rotation-v6", True, (48, 80))):
        a, rng = actor(kind, [24940])
        a.prefix, a.addresses = addr.block(24940, v6, rng.randint(*n))
        _ci_repull(tr, rng, a, days, rng.choice(OTHER_UAS[:3] + [docker_ua(rng)]),
                   rng.choice([i for i in popular + tail if 1e8 <= i.size <= 8e8]), rng.uniform(120, 240),
                   addresses=list(a.addresses))

    a, rng = actor("reseller-classic", [45102, 16509])
    a.addresses = [addr.one(a.asn, own_block=True)]
    uas = sorted({docker_ua(rng) for _ in range(60)} | set(OTHER_UAS))
    _reseller(tr, rng, seed, a, days, rng.randint(1500, 3000), uas, 0.35, rng.uniform(0, 0.3), _downstream(rng, 300))

    a, rng = actor("reseller-generic", [14061, 24940])
    a.addresses = [addr.one(a.asn, own_block=True)]
    ua = rng.choice(["Go-http-client/1.1", "python-requests/2.31.0"])
    _reseller(tr, rng, seed, a, days, rng.randint(600, 1500), [ua], 0.5, rng.uniform(0.2, 0.6),
              _downstream(rng, rng.randint(50, 300)))

    a, rng = actor("reseller-small", [16509, 45102])
    a.addresses = [addr.one(a.asn, v6=a.asn == 16509 and rng.random() < 0.5, own_block=True)]
    uas = [docker_ua(rng) for _ in range(rng.randint(2, 4))] + rng.sample(OTHER_UAS, 2)
    _reseller(tr, rng, seed, a, days, rng.randint(200, 450), uas, 0.25, 0.0, [])
    return actors


def _bump(img: Image, label: str, changed: int) -> Image:
    """A new version of an image: the same base layers, ``changed`` new ones on top."""
    keep = img.layers[:max(0, len(img.layers) - changed)]
    new = tuple((_digest(img.repo, label, i), size) for i, (_, size) in enumerate(img.layers[len(keep):]))
    return Image(img.registry, img.repo, label, img.index, _digest(img.repo, label, "platform"),
                 (_digest(img.repo, label, "config"), img.config[1]), keep + new)


def _cache(tr, rng, seed, ip, ua, days, start, per_day, images_per_day, broad, when):
    """A pull-through cache: every downstream pull re-checks the manifest; a blob is fetched once."""
    held: set = set()
    for day in range(days):
        if not _weekday(start, day):
            per_day_now, n_images = per_day // 10, max(5, images_per_day // 10)
        else:
            per_day_now, n_images = per_day, images_per_day
        today = [_mixed(rng, seed, broad) for _ in range(n_images)]
        for _ in range(per_day_now):
            tr.pull(rng, when(rng, day), ip, ua, rng.choice(today), have=held, ping=rng.random() < 0.3)


def _legit(tr, seed, days, start, scale, addr: Addresses) -> list[Actor]:
    def rng_of(name):
        return random.Random(f"pullwarden-heldout:{seed}:{name}")
    popular, tail, huge = catalog(seed)
    actors = []

    def actor(kind, asn, name=None):
        a = Actor(name or kind, kind, False, "leave", asn)
        actors.append(a)
        return a, rng_of(name or kind)

    a, rng = actor("office-nat", 4134)
    ip = addr.one(4134)
    a.addresses = [ip]
    company = rng.sample(tail, 25)
    for _ in range(max(80, int(rng.randint(100, 300) * scale))):
        ua = docker_ua(rng) if rng.random() < 0.85 else "buildkit/v0.16 moby/v27.3"
        have: set = set()
        team = rng.sample(popular, 8) + rng.sample(company, 5)
        for day in range(days):
            for _ in range(rng.randint(0, 6) if _weekday(start, day) else int(rng.random() < 0.05)):
                img = rng.choice(team)
                if rng.random() < 0.2:          # CI of the team pushed a new build overnight
                    img = _bump(img, f"{img.tag}-b{day}{rng.randint(0, 3)}", rng.randint(1, 2))
                tr.pull(rng, WORKDAY(rng, day), ip, ua, img, have=have,
                        style=rng.choice(["prefix", "mirror"]))

    a, rng = actor("k8s-nat", 45102)
    ip = addr.one(45102)
    a.addresses = [ip]
    workload = rng.sample(popular, 12) + rng.sample(tail, rng.randint(8, 25))
    daemonsets = [i for i in popular if i.registry in ("registry.k8s.io", "quay.io")][:5]
    nodes = [{"ua": "containerd/v1.7.22" if rng.random() < 0.8 else "containerd/v1.6.24",
              "have": {d for i in workload + daemonsets for d, _ in i.layers}}
             for _ in range(max(15, int(rng.randint(15, 40) * scale)))]
    cron = rng.sample(workload, rng.randint(5, 12))
    for day in range(days):
        for img in cron:                         # imagePullPolicy: Always on cron jobs: a HEAD each run
            every = rng.uniform(300, 900)
            t = day * DAY + rng.uniform(0, every)
            while t < (day + 1) * DAY:
                node = rng.choice(nodes)
                tr.pull(rng, t, ip, node["ua"], img, have=node["have"], ping=False, style="ns")
                t += every
        for r in range(rng.randint(1, 3) if _weekday(start, day) else 0):
            k = rng.randrange(len(workload))
            workload[k] = _bump(workload[k], f"{workload[k].tag}-r{day}{r}", rng.randint(1, 3))
            t0 = WORKDAY(rng, day)
            for node in rng.sample(nodes, rng.randint(3, len(nodes))):
                tr.pull(rng, t0 + rng.uniform(0, 600), ip, node["ua"], workload[k], have=node["have"],
                        ping=False, style="ns")
        if rng.random() < 0.5:                   # the autoscaler adds a node: it pulls everything it runs
            node = {"ua": nodes[0]["ua"], "have": set()}
            nodes.append(node)
            t0 = FLAT(rng, day)
            for img in daemonsets + rng.sample(workload, 6):
                t0 = tr.pull(rng, t0, ip, node["ua"], img, have=node["have"], ping=False, style="ns")

    for kind, asn, ua, per_day, n_img, when in (
            ("harbor-cache", 4837, "harbor-registry-client", (600, 1500), (120, 300), WORKDAY),
            ("pull-through-cache", 3320, "Go-http-client/1.1", (300, 800), (60, 150), WORKDAY_DE)):
        a, rng = actor(kind, asn)
        a.addresses = [addr.one(asn)]
        _cache(tr, rng, seed, a.addresses[0], ua, days, start, int(rng.randint(*per_day) * max(scale, 0.5)),
               rng.randint(*n_img), 0.6, when)
        if kind == "harbor-cache":               # the nightly build pulls through the cache too
            for day in range(days):
                for _ in range(rng.randint(20, 60)):
                    t = day * DAY + (18 + rng.random()) * 3600    # 02:00 local
                    tr.pull(rng, t, a.addresses[0], ua, _mixed(rng, seed, 0.3), ping=False)

    a, rng = actor("ai-team", 9808)
    a.addresses = [addr.one(9808) for _ in range(2)]
    for ip in a.addresses:
        ua, have = docker_ua(rng), set()
        for img in rng.sample(huge, rng.randint(1, 2)):
            tr.pull(rng, WORKDAY(rng, rng.randrange(days)), ip, ua, img, have=have)
        for _ in range(rng.randint(3, 6)):
            tr.pull(rng, WORKDAY(rng, rng.randrange(days)), ip, ua, rng.choice(popular), have=have)

    a, rng = actor("hosted-ci-fleet", 8075)
    for _ in range(max(60, int(rng.randint(120, 300) * scale))):
        ip = addr.one(8075)
        a.addresses.append(ip)
        ua = docker_ua(rng) if rng.random() < 0.7 else "buildkit/v0.16 moby/v27.3"
        for _ in range(rng.randint(1, 2)):
            t = FLAT(rng, rng.randrange(days))
            for img in rng.sample(popular, rng.randint(1, 3)):
                t = tr.pull(rng, t, ip, ua, img) + rng.uniform(1, 20)

    a, rng = actor("privacy-v6", 3320)
    a.prefix, _ = addr.block(3320, True, 1)
    net = ipaddress.ip_network(a.prefix)
    for _ in range(rng.randint(5, 12)):
        ua, have = rng.choice([docker_ua(rng), rng.choice(OTHER_UAS)]), set()
        for day in range(days):
            for _ in range(rng.randint(1, 2)):   # a new temporary address every day, sometimes sooner
                ip = str(net[rng.randrange(1 << 20, 1 << 63)])
                a.addresses.append(ip)
                for _ in range(rng.randint(1, 2)):
                    tr.pull(rng, EVENING_DE(rng, day), ip, ua, _mixed(rng, seed, 0.2), have=have)

    for i in range(max(100, int(rng_of("light").randint(150, 400) * scale))):
        a, rng = actor("light", 0, f"light-{i}")
        v6 = rng.random() < 0.2
        a.asn = rng.choice([3320, 4134, 9808] if v6 else [4134, 4837, 9808, 3320])
        a.addresses = [addr.one(a.asn, v6=v6)]
        ua, have = rng.choice([docker_ua(rng)] * 3 + OTHER_UAS), set()
        for _ in range(rng.randint(1, 4)):
            tr.pull(rng, EVENING(rng, rng.randrange(days)), a.addresses[0], ua, _mixed(rng, seed, 0.2), have=have,
                    style=rng.choice(["prefix", "mirror", "ns"]))
    return actors


# ---------------------------------------------------------------------------- rendering
def _stamp(start: datetime, seconds: float) -> str:
    return (start + timedelta(seconds=seconds)).astimezone(TZ).strftime("%d/%b/%Y:%H:%M:%S +0800")


def _nginx(text: str | None) -> str:
    if not text:
        return "-"
    return text.replace("\\", "\\x5C").replace('"', "\\x22")


def render(reqs: list[tuple], fmt: str, start: datetime, seed) -> list[str]:
    """nginx writes a line when the request ends, stamped with that time; CRProxy's gorilla
    handler writes it when it ends too but stamps it with its start, so its lines come out of
    order, and its slog application log shares the stream."""
    if fmt not in ("main", "clf"):
        raise ValueError(f"fmt must be 'main' or 'clf', not {fmt!r}")
    rng = random.Random(f"pullwarden-heldout:{seed}:render")
    out = []
    for t0, t1, ip, method, uri, status, nbytes, ua, xff in sorted(reqs, key=lambda r: (r[1], r[2], r[4])):
        if fmt == "main":
            out.append(f'{ip} - - [{_stamp(start, t1)}] "{method} {uri} HTTP/1.1" {status} {nbytes} "-" '
                       f'"{_nginx(ua)}" "{_nginx(xff)}"')
            continue
        out.append(f'{ip} - - [{_stamp(start, t0)}] "{method} {uri} HTTP/{rng.choice(["1.1", "2.0"])}" {status} {nbytes}')
        if "/blobs/" in uri and rng.random() < 0.02:
            when = (start + timedelta(seconds=t1)).astimezone(TZ).isoformat(timespec="milliseconds")
            out.append(json.dumps({"time": when, "level": "INFO", "msg": rng.choice(["Cache hit", "Cache miss"]),
                                   "digest": uri.rsplit("/", 1)[1].split("?")[0]}, separators=(",", ":")))
    return out


def generate(days: int = 2, seed: str | int = "heldout-a", scale: float = 1.0, fmt: str = "main",
             start: datetime = START) -> tuple[list[str], list[Actor]]:
    """Log lines in ``fmt`` ('main' or 'clf') over ``days`` UTC days from ``start``, and the actors."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    tr = Traffic()
    addr = Addresses(random.Random(f"pullwarden-heldout:{seed}:addresses"))
    actors = _abusers(tr, seed, days, addr) + _legit(tr, seed, days, start, scale, addr)
    horizon = days * DAY
    tr.reqs = [r for r in tr.reqs if 0 <= r[0] < horizon]
    return render(tr.reqs, fmt, start, seed), actors
