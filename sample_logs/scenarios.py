"""Labelled synthetic mirror traffic: who pulled what, and whether a good rule pack should ban them.

    lines, actors = generate(days=2, seed=1)          # nginx ``main`` lines sorted by time, ground truth
    lines, actors = generate(days=2, fmt="clf")       # the same requests as CRProxy logs them
    lines, objects, actors, truth = generate_redirect(days=7, stores=("s3", "oss"))   # blobs 307'd to a bucket

Each actor is one kind of client the operator meets (see ../shared/CONTEXT.md): abusive ones (a CI job
re-pulling every blob every few minutes, a scanner, an error storm, the CI pattern spread over an IPv4 /24
or an IPv6 /64, and three resellers: one relaying many clients' user agents, one built on an HTTP library
that sends one user agent for all, a small one on a cloud VM) and heavy but legitimate ones that static thresholds also ban (an office NAT,
a k8s cluster behind NAT, a hosted-CI fleet, a Harbor pull-through cache, a user fetching 50 GB of CUDA
images, IPv6 privacy addresses, ordinary light users).

A pull on the wire: ``GET /v2/`` 401, ``HEAD`` of the tag (containerd always, docker when it has the
image), the index (docker by tag, containerd by digest), the platform manifest by digest, then the config
blob and each missing layer, three at a time. nginx stamps a line when the request ends, so a blob line
is stamped at the end of its transfer. Every image has fixed digests, so a re-pull hits the same blobs.

Addresses: IPv4 from 198.18.0.0/15 (RFC 2544 benchmarking space) cut into one block per ASN, IPv6 from
2001:db8::/32 with one /48 per ASN; ``asn_networks()`` lists them for an mmdb built with mmdb-writer.
Inside an ASN every kind has blocks of its own, so limiting ``kinds`` never moves another kind's addresses.

``scale`` multiplies the volume. A kind with one address per actor (ci-storm, reseller, office-nat…)
gets ``max(1, round(scale))`` actors, each at intensity ``scale / n`` (its rate, crowd or fleet size
times that); light users number ``300 * scale``. ``scale`` may also be a dict, kind → scale. What defines a kind holds at any scale: the error storm
keeps > 150 errors a day, rotation actors use 40+ addresses, the AI user pulls 30–60 GB once.
Everything is drawn from ``random.Random`` instances seeded from ``seed`` (strings seed through sha512).
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import random
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import UTC, datetime, timedelta, timezone

from sample_logs.objectstores import WRITERS, request_id

TZ = timezone(timedelta(hours=8))
DAY = 86400.0

ABUSIVE_KINDS = ("ci-storm", "reseller", "scanner", "error-storm", "rotation-v4", "rotation-v6", "lib-reseller",
                 "small-reseller", "cache-reseller", "office-reseller", "ci-bigimage")
LEGIT_KINDS = ("office-nat", "k8s-cluster", "hosted-ci", "harbor-cache", "ai-user", "privacy-v6", "light",
               "ci-fleet", "campus-nat", "replicator", "cgnat")
# Legitimate kinds that a rule may slow down but never ban: crowds behind one address whose
# traffic is, in sum, what a heavy abuser's is.
MAY_THROTTLE = ("ci-fleet", "campus-nat")
KINDS = ABUSIVE_KINDS + LEGIT_KINDS

# Parameters a test may want to compute expectations from (per actor, at intensity 1).
CI_STORM_INTERVAL_MIN = (10, 20)      # minutes between runs of ci-storm and the rotation actors
RESELLER_PULLS_PER_DAY = 1500
LIB_RESELLER_PULLS_PER_DAY = 1000     # a reseller built on an HTTP library: one user agent for everyone
SMALL_RESELLER_PULLS_PER_DAY = 300    # a few hundred a day, never fewer than SMALL_RESELLER_MIN_PULLS
SMALL_RESELLER_MIN_PULLS = 150
SCANNER_REPOS_PER_DAY = 800
ERROR_STORM_ERRORS_PER_DAY = 450      # never fewer than ERROR_STORM_MIN_ERRORS, whatever the scale
ERROR_STORM_MIN_ERRORS = 160
OFFICE_DEVELOPERS = 200
K8S_NODES = 30
K8S_HEAD_INTERVAL_MIN = (2, 6)
HOSTED_CI_JOBS_PER_DAY = 500
HARBOR_IMAGES_PER_DAY = 400
LIGHT_USERS = 300

ASN_NAMES = {
    16509: "AMAZON-02", 45102: "ALIBABA-CN-NET", 14061: "DIGITALOCEAN-ASN", 24940: "HETZNER-ONLINE",
    4134: "CHINANET-BACKBONE", 4837: "CHINA169-BACKBONE", 9808: "CMNET",
}
V4_NETS = {
    16509: "198.18.0.0/16", 45102: "198.19.0.0/18", 14061: "198.19.64.0/19", 24940: "198.19.96.0/19",
    4134: "198.19.128.0/18", 4837: "198.19.192.0/19", 9808: "198.19.224.0/19",
}
V6_NETS = {
    16509: "2001:db8:1::/48", 45102: "2001:db8:2::/48", 14061: "2001:db8:3::/48", 24940: "2001:db8:4::/48",
    4134: "2001:db8:10::/48", 4837: "2001:db8:11::/48", 9808: "2001:db8:12::/48",
}
RESIDENTIAL = (4134, 4837, 9808)


def _minus(net: str, *holes: str) -> list[str]:
    """``net`` without ``holes``, as CIDRs in address order."""
    parts = [ipaddress.ip_network(net)]
    for h in map(ipaddress.ip_network, holes):
        parts = [q for p in parts for q in (p.address_exclude(h) if h.subnet_of(p) else [p])]
    return [str(p) for p in sorted(parts)]


# Per-kind IPv4 blocks (each a list of CIDRs of /24 or larger) inside the ASN networks above.
BLOCKS = {
    "ci-storm": ["198.18.0.0/20"],
    "hosted-ci": _minus("198.18.0.0/16", "198.18.0.0/20"),
    "reseller-45102": ["198.19.0.0/24"],
    "reseller-24940": ["198.19.96.0/24"],
    "lib-reseller-24940": ["198.19.97.0/24"],
    "lib-reseller-14061": ["198.19.66.0/24"],
    "lib-reseller-4134": ["198.19.130.0/24"],
    "small-reseller-14061": ["198.19.67.0/24"],
    "small-reseller-24940": ["198.19.98.0/24"],
    "rotation-v4": _minus("198.19.0.0/18", "198.19.0.0/24"),      # one /24 per actor
    "scanner": ["198.19.64.0/24"],
    "error-storm": ["198.19.65.0/24"],
    "office-nat": ["198.19.128.0/24"],
    "harbor-cache": ["198.19.129.0/24"],
    "xff-4134": ["198.19.132.0/22"],                              # a reseller's downstream clients
    "light-4134": _minus("198.19.128.0/18", "198.19.128.0/21"),
    "k8s-cluster": ["198.19.192.0/24"],
    "light-4837": _minus("198.19.192.0/19", "198.19.192.0/21"),
    "ai-user": ["198.19.224.0/24"],
    "xff-9808": ["198.19.228.0/22"],
    "light-9808": _minus("198.19.224.0/19", "198.19.224.0/21"),
    # redirect mode only (generate_redirect): /24s no other kind draws from
    "redirect-relay": ["198.19.99.0/24"],                         # a reseller's VM (24940)
    "relay-customers-4134": ["198.19.131.0/24"],                  # its customers, in home ASNs
    "relay-customers-4837": ["198.19.194.0/24"],
    "relay-customers-9808": ["198.19.226.0/24"],
    "split-v6-4837": ["198.19.193.0/24"],                         # a dual-stack client's IPv4
    "corp-ask-9808": ["198.19.225.0/24"],                         # a company's proxy egress ...
    "corp-egress-9808": ["198.19.227.0/24"],                      # ... and its workers' egress
    "direct-read-4837": ["198.19.195.0/24"],                      # reads of the bucket, no 307
    # issue 21: abusers who hide their shape, and the crowds that look like them
    "cache-reseller-14061": ["198.19.68.0/24"],
    "cache-reseller-24940": ["198.19.100.0/24"],
    "cache-reseller-4837": ["198.19.196.0/24"],                   # a server in a business ISP
    "ci-bigimage-14061": ["198.19.69.0/24"],
    "ci-bigimage-24940": ["198.19.103.0/24"],
    "office-reseller-14061": ["198.19.70.0/24"],
    "office-reseller-24940": ["198.19.102.0/24"],
    "replicator": ["198.19.101.0/24"],                            # a company's registry, in a cloud (24940)
    "ci-fleet": ["198.19.197.0/24"],                              # an enterprise's NAT (4837)
    "campus-nat": ["198.19.198.0/24"],
    "cgnat": ["198.19.199.0/24"],                                 # a carrier's CGNAT address
}
# Per-kind IPv6 /64 numbers (the 16 bits after the ASN's /48).
V6_SUBNETS = {"rotation-v6": 0x100, "privacy-v6": 0x200, "split-egress-v6": 0x300, "light": 0x1000}
NEIGHBOUR_HOST = 250          # the light user living in the first rotation-v4 /24; rotation uses .2-.239


def asn_networks() -> dict[str, dict]:
    """CIDR -> GeoLite2-ASN record for every network the generator draws addresses from."""
    out = {}
    for nets in (V4_NETS, V6_NETS):
        for asn, cidr in nets.items():
            out[cidr] = {"autonomous_system_number": asn, "autonomous_system_organization": ASN_NAMES[asn]}
    return out


@lru_cache(maxsize=None)
def _block(block: str) -> tuple[list, list]:
    nets = [ipaddress.ip_network(c) for c in BLOCKS[block]]
    return nets, [n.num_addresses // 256 * 254 for n in nets]


def _host(block: str, i: int, scramble: bool = False) -> str:
    """The i-th usable address of a kind's block (.1-.254 of each /24); wraps when the block is spent.
    ``scramble`` walks the block in a fixed pseudo-random order (fresh-looking cloud and home addresses)."""
    nets, sizes = _block(block)
    total = sum(sizes)
    i %= total
    if scramble:
        i = (i * 7919 + 101) % total          # 7919 is a prime coprime with every block's size: a permutation
    for net, size in zip(nets, sizes):
        if i < size:
            k, h = divmod(i, 254)
            return str(net.network_address + k * 256 + h + 1)
        i -= size
    raise AssertionError("unreachable")


def _slash24(block: str, k: int) -> ipaddress.IPv4Network:
    """The k-th /24 of a block (wraps)."""
    subnets = [s for c in BLOCKS[block] for s in ipaddress.ip_network(c).subnets(new_prefix=24)]
    return subnets[k % len(subnets)]


def _slash64(asn: int, number: int) -> ipaddress.IPv6Network:
    base = ipaddress.ip_network(V6_NETS[asn]).network_address
    return ipaddress.IPv6Network((int(base) + ((number & 0xFFFF) << 64), 64))


def _in64(net: ipaddress.IPv6Network, iid: int) -> str:
    return str(ipaddress.IPv6Address(int(net.network_address) + (iid & ((1 << 64) - 1) or 1)))


# ---------------------------------------------------------------------------------------------- actors

@dataclass
class Actor:
    name: str            # e.g. "ci-storm"
    kind: str            # one of KINDS
    abusive: bool        # ground truth: should a good rule pack ban it (True) or never ban it (False)
    addresses: list[str]  # every client address it used
    prefix: str | None   # for rotation/privacy actors: the /24 or /64 it lives in (CIDR string), else None
    asn: int | None      # the ASN its addresses belong to (see asn_networks())
    relayed_to: list[str] = field(default_factory=list)   # redirect mode: others who fetched its signed URLs


@dataclass
class _Who:
    name: str
    kind: str
    prefix: str | None
    asn: int | None
    seen: dict = field(default_factory=dict)      # addresses in first-use order
    # redirect mode: who fetches the signed URL this actor's address asked for (rng, asking address) -> address;
    # None: the asking address itself
    fetch: object = None
    relayed: dict = field(default_factory=dict)   # addresses outside the actor that fetched its URLs

    def actor(self) -> Actor:
        return Actor(self.name, self.kind, self.kind in ABUSIVE_KINDS or self.kind in REDIRECT_ABUSIVE,
                     list(self.seen), self.prefix, self.asn, list(self.relayed))


# ---------------------------------------------------------------------------------------------- user agents

def _esc(s: str) -> str:
    """nginx's escaping of a logged value."""
    return s.replace("\\", "\\x5C").replace('"', "\\x22")


def _docker_versions() -> list[tuple[str, str]]:
    """(engine version, go version) of docker releases from 20.10 to 27.4."""
    out = [(f"20.10.{n}", "go1.13.15" if n < 6 else "go1.16.%d" % min(15, n) if n < 13
             else "go1.18.%d" % min(10, n - 13)) for n in range(25)]
    out += [(f"23.0.{n}", "go1.19.%d" % (5 + n) if n < 4 else "go1.20.%d" % n) for n in range(7)]
    out += [(f"24.0.{n}", "go1.20.%d" % (4 + n)) for n in range(10)]
    out += [(f"25.0.{n}", "go1.21.%d" % (6 + n)) for n in range(6)]
    out += [(f"26.0.{n}", "go1.21.9") for n in range(3)] + [(f"26.1.{n}", "go1.21.%d" % (10 + n)) for n in range(6)]
    out += [(f"27.0.{n}", "go1.21.11") for n in range(1, 4)] + [(f"27.1.{n}", "go1.21.12") for n in range(3)]
    out += [("27.2.0", "go1.21.13"), ("27.2.1", "go1.22.7"), ("27.3.0", "go1.22.7"), ("27.3.1", "go1.22.7"),
            ("27.4.0", "go1.22.10")]
    return out


DOCKER_VERSIONS = _docker_versions()
LINUX_KERNELS = ["5.15.0-%d-generic" % n for n in (91, 105, 119, 122, 125)] + \
                ["6.8.0-%d-generic" % n for n in (31, 45, 48, 49, 50, 57)] + \
                ["5.4.0-%d-generic" % n for n in (150, 169, 182)] + \
                ["6.5.0-%d-generic" % n for n in (35, 41, 44)] + \
                ["4.18.0-513.24.1.el8_9.x86_64", "4.18.0-553.el8_10.x86_64", "5.14.0-427.13.1.el9_4.x86_64",
                 "3.10.0-1160.119.1.el7.x86_64", "6.1.0-26-amd64", "6.1.0-27-amd64", "5.10.0-32-amd64",
                 "6.11.5-arch1-1", "6.11.6-200.fc40.x86_64", "5.15.153.1-microsoft-standard-WSL2"]
DESKTOP_KERNELS = ["6.10.11-linuxkit", "6.10.4-linuxkit", "6.6.32-linuxkit", "6.6.31-linuxkit", "6.6.22-linuxkit",
                   "5.15.49-linuxkit", "5.15.153.1-microsoft-standard-WSL2", "5.15.146.1-microsoft-standard-WSL2"]


def _commit(version: str) -> str:
    return hashlib.sha1(version.encode()).hexdigest()[:7]


def docker_ua(version: str, go: str, kernel: str, arch: str = "amd64", client: str | None = "linux") -> str:
    """The docker engine's UA; ``client=None`` is a pull through the Go SDK (GitLab runner, dockershim)."""
    upstream = f"Docker-Client/{version} \\({client}\\)" if client else "Go-http-client/1.1"
    return (f"docker/{version} go/{go} git-commit/{_commit(version)} kernel/{kernel} os/linux arch/{arch} "
            f"UpstreamClient({upstream})")


def _random_docker(rng: random.Random, desktop: float = 0.0) -> str:
    version, go = rng.choice(DOCKER_VERSIONS[20:] if rng.random() < 0.8 else DOCKER_VERSIONS)
    if rng.random() < desktop:
        kernel = rng.choice(DESKTOP_KERNELS)
        client = "windows" if "WSL2" in kernel else "darwin"
        arch = "arm64" if client == "darwin" and rng.random() < 0.7 else "amd64"
        return docker_ua(version, go, kernel, arch, client)
    return docker_ua(version, go, rng.choice(LINUX_KERNELS), "arm64" if rng.random() < 0.05 else "amd64")


def _gitlab_docker(rng: random.Random) -> str:
    version, go = rng.choice(DOCKER_VERSIONS[25:])
    return docker_ua(version, go, rng.choice(LINUX_KERNELS[:17]), "amd64", None)


def _containerd(rng: random.Random) -> str:
    minor = rng.choice([6, 7, 7, 7])
    patch = rng.randrange(20, 37) if minor == 6 else rng.randrange(0, 24)
    return f"containerd/v1.{minor}.{patch}" if rng.random() < 0.75 else f"containerd/1.{minor}.{patch}+unknown"


def _crio(rng: random.Random) -> str:
    minor = rng.choice([28, 29, 30, 31])
    return f"cri-o/1.{minor}.{rng.randrange(0, 8)} go/go1.{minor - 7}.{rng.randrange(1, 12)} os/linux arch/amd64"


def _podman(rng: random.Random) -> str:
    return f"containers/5.{rng.choice([24, 26, 29, 31, 32])}.{rng.randrange(0, 4)} (github.com/containers/image)"


# ---------------------------------------------------------------------------------------------- images

@dataclass
class Image:
    name: str                  # registry/repo, e.g. docker.io/library/python
    tag: str
    index: str                 # digest of the image index (multi-arch list)
    index_size: int
    manifest: str              # digest of the linux/amd64 manifest
    manifest_size: int
    blobs: list                # [(digest, size)]: the config first, then the layers

    @property
    def bytes(self) -> int:
        return sum(s for _, s in self.blobs)


def _digest(rng: random.Random) -> str:
    return "sha256:%064x" % rng.getrandbits(256)


def _make_image(rng: random.Random, name: str, tag: str, layers=(2, 7), size=(5e6, 5e8)) -> Image:
    lo, hi = math.log(size[0]), math.log(size[1])
    n = rng.randint(*layers)
    blobs = [(_digest(rng), rng.randrange(1500, 20000))]
    blobs += [(_digest(rng), int(math.exp(rng.uniform(lo, hi)))) for _ in range(n)]
    return Image(name, tag, _digest(rng), rng.randrange(1600, 10000), _digest(rng), 400 + 120 * n + rng.randrange(600),
                 blobs)


WELL_KNOWN = [
    ("docker.io/library/python", "3.12-slim"), ("docker.io/library/node", "20-alpine"),
    ("docker.io/library/golang", "1.23"), ("docker.io/library/nginx", "1.27"), ("docker.io/library/alpine", "3.20"),
    ("docker.io/library/busybox", "1.36"), ("docker.io/library/ubuntu", "22.04"),
    ("docker.io/library/debian", "bookworm-slim"), ("docker.io/library/redis", "7.4"),
    ("docker.io/library/postgres", "16"), ("docker.io/library/mysql", "8.0"),
    ("docker.io/library/maven", "3.9-eclipse-temurin-17"), ("docker.io/library/openjdk", "17-jdk-slim"),
    ("docker.io/library/docker", "27-dind"), ("docker.io/bitnami/redis", "7.4"), ("docker.io/bitnami/kafka", "3.8"),
    ("ghcr.io/actions/runner", "2.320.0"), ("registry.k8s.io/pause", "3.10"),
    ("registry.k8s.io/kube-apiserver", "v1.31.2"), ("registry.k8s.io/kube-proxy", "v1.31.2"),
    ("registry.k8s.io/coredns/coredns", "v1.11.3"), ("registry.k8s.io/ingress-nginx/controller", "v1.11.3"),
    ("quay.io/prometheus/node-exporter", "v1.8.2"), ("quay.io/prometheus/prometheus", "v2.55.1"),
    ("quay.io/jetstack/cert-manager-controller", "v1.16.1"), ("gcr.io/distroless/static", "nonroot"),
    ("gcr.io/distroless/base-debian12", "latest"), ("mcr.microsoft.com/dotnet/runtime", "8.0"),
    ("mcr.microsoft.com/dotnet/sdk", "8.0"), ("docker.io/grafana/grafana", "11.3.0"),
    ("docker.io/library/mongo", "8.0"), ("docker.io/library/rabbitmq", "4.0-management"),
    ("docker.io/library/php", "8.3-fpm"), ("docker.io/library/ruby", "3.3"), ("docker.io/library/rust", "1.82"),
    ("docker.io/library/gradle", "8.10-jdk17"), ("docker.io/library/httpd", "2.4"),
    ("docker.io/library/traefik", "v3.2"), ("docker.io/library/centos", "7"), ("docker.io/library/node", "18"),
    ("docker.io/library/python", "3.11"), ("docker.io/calico/node", "v3.28.2"), ("docker.io/calico/cni", "v3.28.2"),
    ("quay.io/argoproj/argocd", "v2.13.0"), ("docker.io/minio/minio", "latest"),
    ("docker.io/jenkins/jenkins", "lts-jdk17"), ("docker.io/library/sonarqube", "lts-community"),
    ("ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib", "0.112.0"),
]
HUGE = [
    ("nvcr.io/nvidia/pytorch", "24.01-py3"), ("nvcr.io/nvidia/pytorch", "24.10-py3"),
    ("nvcr.io/nvidia/tritonserver", "24.08-py3"), ("nvcr.io/nvidia/tensorflow", "24.03-tf2-py3"),
    ("nvcr.io/nvidia/nemo", "24.07"), ("nvcr.io/nvidia/cuda", "12.4.1-cudnn-devel-ubuntu22.04"),
    ("docker.io/pytorch/pytorch", "2.4.1-cuda12.4-cudnn9-devel"), ("nvcr.io/nvidia/vllm", "24.10-py3"),
]
REGISTRIES = ["docker.io"] * 11 + ["ghcr.io"] * 3 + ["quay.io"] * 2 + ["registry.k8s.io", "gcr.io", "k8s.gcr.io",
                                                                       "mcr.microsoft.com", "nvcr.io"]
WORDS = ["app", "api", "web", "worker", "agent", "operator", "proxy", "db", "cache", "runner", "exporter", "ml",
         "gateway", "auth", "search", "queue", "store", "sync", "mesh", "ingest", "notify", "billing", "report"]


class Catalog:
    """The images of the world, most popular first, with fixed digests (depends on the seed only)."""

    def __init__(self, seed: int, size: int = 3000):
        rng = random.Random(f"{seed}:catalog")
        names = list(WELL_KNOWN)
        seen = set(names)
        while len(names) < size:
            reg = rng.choice(REGISTRIES)
            name = f"{reg}/{rng.choice(WORDS)}{rng.randrange(200)}/{rng.choice(WORDS)}-{rng.choice(WORDS)}"
            tag = rng.choice(["latest", f"v{rng.randrange(4)}.{rng.randrange(30)}.{rng.randrange(10)}",
                              f"{rng.randrange(1, 9)}.{rng.randrange(20)}", "stable", "main"])
            if (name, tag) not in seen:
                seen.add((name, tag))
                names.append((name, tag))
        self.images = [_make_image(rng, n, t) for n, t in names]
        acc, self.cum = 0.0, []
        for rank in range(len(self.images)):
            acc += 1.0 / (rank + 1) ** 0.9
            self.cum.append(acc)
        self.huge = []
        for n, t in HUGE:      # 3-5 layers of 2-8 GB: 6-40 GB an image
            img = _make_image(rng, n, t, layers=(3, 5), size=(2e9, 8e9))
            img.blobs[1:] = [(d, int(rng.uniform(2e9, 8e9))) for d, _ in img.blobs[1:]]
            self.huge.append(img)

    def pick(self, rng: random.Random, k: int, top: int | None = None) -> list[Image]:
        """k distinct images, weighted by popularity, among the ``top`` most popular."""
        top = min(top or len(self.images), len(self.images))
        k = min(k, top)
        cum = self.cum[:top]
        got: dict[int, Image] = {}
        while len(got) < k:
            for img in rng.choices(self.images[:top], cum_weights=cum, k=k - len(got)):
                got.setdefault(id(img), img)
        return list(got.values())


# ---------------------------------------------------------------------------------------------- the log

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


FORMATS = ("main", "clf")


class _Log:
    """Lines of nginx ``main`` format, or CRProxy's ``clf`` (no user agent, referer or forwarded-for),
    kept only inside [t0, t1)."""

    def __init__(self, t0: float, t1: float, fmt: str = "main"):
        self.t0, self.t1, self.fmt = t0, t1, fmt
        self.rows: list[tuple[float, str]] = []
        self._stamps: dict[int, str] = {}
        self._uas: dict[str, str] = {}

    def kind_started(self, seed, kind: str) -> None:
        """The next lines are ``kind``'s (the redirect mode draws its choices per kind)."""

    def _stamp(self, s: int) -> str:
        d = datetime.fromtimestamp(s, TZ)
        out = f"{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year}:{d.hour:02d}:{d.minute:02d}:{d.second:02d} +0800"
        self._stamps[s] = out
        return out

    def add(self, t: float, who: _Who, ip: str, method: str, path: str, status: int, size: int, ua: str,
            xff: str = "-", started: float | None = None) -> None:
        """``started``: when a blob GET began (``t`` is when it ended); only the redirect mode uses it."""
        if not self.t0 <= t < self.t1:
            return
        s = int(t)
        stamp = self._stamps.get(s) or self._stamp(s)
        who.seen[ip] = None
        if self.fmt == "clf":
            self.rows.append((t, f'{ip} - - [{stamp}] "{method} {path} HTTP/2.0" {status} {size}'))
            return
        e = self._uas.get(ua)
        if e is None:
            e = self._uas[ua] = _esc(ua)
        self.rows.append((t, f'{ip} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} "-" "{e}" "{xff}"'))


def pull(log: _Log, rng: random.Random, who: _Who, t: float, ip: str, ua: str, img: Image, *,
         client: str = "docker", warm: bool = False, fetch: float = 1.0, bw: float = 50e6, xff: str = "-") -> float:
    """One pull as the client sends it; returns when it ended. ``warm``: the client has the image and
    only checks the tag; ``fetch``: the chance that each layer is missing locally (the config always is)."""
    base = f"/v2/{img.name}/manifests/"
    log.add(t, who, ip, "GET", "/v2/", 401, 87, ua, xff)
    t += rng.uniform(0.02, 0.15)
    if client == "podman":                       # no HEAD: the manifest every time
        log.add(t, who, ip, "GET", base + img.tag, 200, img.index_size, ua, xff)
        if warm:
            return t
    else:
        if warm or client != "docker":
            log.add(t, who, ip, "HEAD", base + img.tag, 200, 0, ua, xff)
            if warm:
                return t
            t += rng.uniform(0.02, 0.1)
        by = img.index if client in ("containerd", "cri-o") else img.tag
        log.add(t, who, ip, "GET", base + by, 200, img.index_size, ua, xff)
    t += rng.uniform(0.02, 0.1)
    log.add(t, who, ip, "GET", base + img.manifest, 200, img.manifest_size, ua, xff)
    blobs = img.blobs[:1] + [b for b in img.blobs[1:] if fetch >= 1.0 or rng.random() < fetch]
    lanes = [t, t, t]
    path = f"/v2/{img.name}/blobs/"
    for d, size in blobs:
        lane = lanes.index(min(lanes))
        end = lanes[lane] + rng.uniform(0.01, 0.08) + size / bw * rng.uniform(0.8, 1.25)
        log.add(end, who, ip, "GET", path + d, 200, size, ua, xff, started=lanes[lane])
        lanes[lane] = end
    return max(lanes)


# ---------------------------------------------------------------------------------------------- time

# Relative activity per local (+0800) hour.
H_LIGHT = [2, 1, 1, 0.5, 0.5, 0.5, 1, 2, 4, 7, 8, 8, 6, 7, 8, 8, 7, 6, 6, 7, 8, 8, 6, 4]
H_WORK = [0] * 9 + [8, 10, 10, 4, 7, 10, 10, 10, 8, 5] + [0] * 5
H_CI = [3] * 9 + [6] * 13 + [4] * 2
H_FLAT = [1] * 24


def _cum(weights):
    acc, out = 0.0, []
    for w in weights:
        acc += w
        out.append(acc)
    return out


_CUMS = {id(h): _cum(h) for h in (H_LIGHT, H_WORK, H_CI, H_FLAT)}


def _at(rng: random.Random, midnight: float, hours: list) -> float:
    """A time in the local day starting at ``midnight`` following the hourly profile."""
    h = rng.choices(range(24), cum_weights=_CUMS[id(hours)])[0]
    return midnight + h * 3600 + rng.random() * 3600


@dataclass
class _Ctx:
    rng: random.Random
    log: _Log
    cat: Catalog
    t0: float
    t1: float
    # What an actor keeps from one day to the next (its client version, the images its pipeline
    # pulls) when each day is drawn as a variant of its own (the demo month): a CI fleet does not
    # upgrade docker or change its pipeline every midnight. None without a variant: ``rng``.
    same: random.Random | None = None

    def fixed(self) -> random.Random:
        return self.same or self.rng

    def days(self):
        """(local midnight, weekend) of every local day that overlaps the span; lines outside it are dropped."""
        d = datetime.fromtimestamp(self.t0, TZ).replace(hour=0, minute=0, second=0, microsecond=0)
        while d.timestamp() < self.t1:
            yield d.timestamp(), d.weekday() >= 5
            d += timedelta(days=1)

    def windows(self):
        """Consecutive 24-hour windows from the start (the last one may be shorter)."""
        t = self.t0
        while t < self.t1:
            yield t, min(t + DAY, self.t1)
            t += DAY


def _name(kind: str, i: int) -> str:
    return kind if i == 0 else f"{kind}-{i + 1}"


# ---------------------------------------------------------------------------------------------- abusive kinds

def _storm_runs(ctx: _Ctx, who: _Who, ua: str, images: list[Image], intensity: float, address, bw: float):
    """Re-pull every image, every blob, every 10-20 minutes / intensity, from ``address(run_number)``."""
    rng = ctx.rng
    lo, hi = CI_STORM_INTERVAL_MIN
    t = ctx.t0 + rng.uniform(0, lo * 60 / intensity)
    n = 0
    while t < ctx.t1:
        ip = address(n)
        end = t
        for img in images:
            end = pull(ctx.log, rng, who, end + rng.uniform(0.2, 2), ip, ua, img, bw=bw)
        n += 1
        t += rng.uniform(lo, hi) * 60 / intensity


def _ci_storm(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("ci-storm", i), "ci-storm", None, 16509)
        ip = _host("ci-storm", 10 + i)
        fixed = ctx.fixed()
        images = ctx.cat.pick(fixed, fixed.choice([1, 2]), top=40)
        _storm_runs(ctx, who, _gitlab_docker(fixed), images, intensity, lambda _n: ip, rng.uniform(80e6, 250e6))
        out.append(who)
    return out


def _rotation(ctx: _Ctx, kind: str, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        if kind == "rotation-v4":
            net = _slash24("rotation-v4", i)
            pool = [str(net.network_address + h) for h in fixed.sample(range(2, 240), fixed.randint(42, 60))]
            who = _Who(_name(kind, i), kind, str(net), 45102)
        else:
            net = _slash64(24940, V6_SUBNETS["rotation-v6"] + i)
            pool = [_in64(net, fixed.getrandbits(64)) for _ in range(fixed.randint(50, 80))]
            who = _Who(_name(kind, i), kind, str(net), 24940)
        order: list[str] = []

        def address(k, pool=pool, order=order, rng=rng):
            if k % len(pool) == 0:           # every address once, in a new order each round
                order[:] = rng.sample(pool, len(pool))
            return order[k % len(pool)]

        images = ctx.cat.pick(fixed, fixed.choice([1, 2]), top=40)
        # enough runs that each address is used (about 1.4 times a day at least): 40+ addresses at any scale
        _storm_runs(ctx, who, _gitlab_docker(fixed), images, max(intensity, len(pool) / 70), address,
                    rng.uniform(80e6, 250e6))
        out.append(who)
    return out


def _reseller(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        asn = rng.choice([45102, 24940])
        who = _Who(_name("reseller", i), "reseller", None, asn)
        ip = _host(f"reseller-{asn}", 20 + i)
        uas = set()
        want = rng.randint(25, 35)
        while len(uas) < want:
            r = rng.random()
            uas.add(_random_docker(rng) if r < 0.6 else _containerd(rng) if r < 0.9 else _podman(rng))
        uas = sorted(uas)
        downstream = []
        for j in range(rng.randint(150, 300)):
            ua = rng.choice(uas)
            client = ("docker" if ua.startswith("docker/") else "podman" if ua.startswith("containers/")
                      else "containerd")
            addr = _host(rng.choice(["xff-4134", "xff-9808"]), rng.randrange(2000), scramble=True)
            downstream.append((ua, client, addr if rng.random() < 0.4 else "-"))
        images = ctx.cat.pick(rng, rng.randint(45, 80), top=600)
        icum = _cum([1 / (k + 1) ** 0.7 for k in range(len(images))])
        bw = rng.uniform(100e6, 300e6)
        for w0, w1 in ctx.windows():
            for _ in range(round(RESELLER_PULLS_PER_DAY * intensity * (w1 - w0) / DAY)):
                ua, client, xff = rng.choice(downstream)
                img = rng.choices(images, cum_weights=icum)[0]
                pull(ctx.log, rng, who, rng.uniform(w0, w1), ip, ua, img, client=client, xff=xff, bw=bw,
                     warm=rng.random() < 0.1, fetch=0.85)
        out.append(who)
    return out


def _lib_reseller(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A reseller built on a generic HTTP library: one user agent for everything it relays, the
    forwarded-for of its downstream clients on part of the requests, round the clock, no cache."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()           # the same server, software and customers every day
        asn = fixed.choice([24940, 14061, 4134])     # hosting, or a server in a residential ISP
        who = _Who(_name("lib-reseller", i), "lib-reseller", None, asn)
        ip = _host(f"lib-reseller-{asn}", 20 + i)
        ua = fixed.choice(["Go-http-client/1.1", "Go-http-client/2.0", "python-requests/2.31.0",
                           "python-requests/2.32.3"])
        forwards = fixed.uniform(0.15, 0.6)
        downstream = [_host(fixed.choice(["xff-4134", "xff-9808"]), fixed.randrange(2000), scramble=True)
                      for _ in range(fixed.randint(80, 250))]
        images = ctx.cat.pick(fixed, fixed.randint(40, 90), top=800)
        icum = _cum([1 / (k + 1) ** 0.7 for k in range(len(images))])
        bw = rng.uniform(100e6, 300e6)
        for w0, w1 in ctx.windows():
            for _ in range(round(LIB_RESELLER_PULLS_PER_DAY * intensity * (w1 - w0) / DAY)):
                img = rng.choices(images, cum_weights=icum)[0]
                xff = rng.choice(downstream) if rng.random() < forwards else "-"
                pull(ctx.log, rng, who, rng.uniform(w0, w1), ip, ua, img, xff=xff, bw=bw, fetch=0.9)
        out.append(who)
    return out


def _small_reseller(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A small reseller on a cloud VM: a few hundred pulls a day for a handful of downstream
    users, fewer than a busy office's, but flat over the day and the week."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        asn = fixed.choice([14061, 24940])
        who = _Who(_name("small-reseller", i), "small-reseller", None, asn)
        ip = _host(f"small-reseller-{asn}", 20 + i)
        downstream = []
        for _ in range(fixed.randint(3, 8)):
            r = fixed.random()
            ua = _random_docker(fixed) if r < 0.6 else _containerd(fixed)
            downstream.append((ua, "docker" if ua.startswith("docker/") else "containerd"))
        images = ctx.cat.pick(fixed, fixed.randint(25, 45), top=800)
        icum = _cum([1 / (k + 1) ** 0.5 for k in range(len(images))])
        bw = rng.uniform(30e6, 100e6)
        for w0, w1 in ctx.windows():
            want = max(SMALL_RESELLER_MIN_PULLS, SMALL_RESELLER_PULLS_PER_DAY * intensity)
            for _ in range(round(want * (w1 - w0) / DAY)):
                ua, client = rng.choice(downstream)
                img = rng.choices(images, cum_weights=icum)[0]
                pull(ctx.log, rng, who, rng.uniform(w0, w1), ip, ua, img, client=client, bw=bw,
                     warm=rng.random() < 0.1, fetch=0.85)
        out.append(who)
    return out


def _scanner(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("scanner", i), "scanner", None, 14061)
        ip = _host("scanner", 10 + i)
        ua = rng.choice(["python-requests/2.31.0", "python-requests/2.32.3", "Go-http-client/1.1"])
        for w0, w1 in ctx.windows():
            total = round(SCANNER_REPOS_PER_DAY * intensity * (w1 - w0) / DAY)
            sessions = rng.randint(2, 4)
            for s in range(sessions):
                t = rng.uniform(w0, w1)
                ctx.log.add(t, who, ip, "GET", "/v2/", 401, 87, ua)
                for q in ("/v2/_catalog", "/v2/_catalog?n=1000", "/v2/docker.io/_catalog"):
                    t += rng.uniform(0.1, 1)
                    ctx.log.add(t, who, ip, "GET", q, rng.choice([403, 401, 404]), rng.choice([55, 87, 96]), ua)
                for _ in range(total // sessions):
                    t += rng.uniform(0.2, 1.5)
                    if rng.random() < 0.3:
                        name = ctx.cat.images[rng.randrange(len(ctx.cat.images))].name
                    else:
                        name = f"{rng.choice(REGISTRIES)}/{rng.choice(WORDS)}{rng.randrange(1000)}/{rng.choice(WORDS)}"
                    r = rng.random()
                    status, size = (404, 96) if r < 0.55 else (401, 87) if r < 0.8 else (403, 55) if r < 0.95 else \
                        (200, rng.randrange(100, 3000))
                    suffix = "?n=100" if rng.random() < 0.1 else ""
                    ctx.log.add(t, who, ip, "GET", f"/v2/{name}/tags/list{suffix}", status, size, ua)
        out.append(who)
    return out


def _error_storm(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("error-storm", i), "error-storm", None, 14061)
        ip = _host("error-storm", 10 + i)
        containerd = rng.random() < 0.6
        ua = _containerd(rng) if containerd else _random_docker(rng)
        ghosts = [f"docker.io/{rng.choice(WORDS)}{rng.randrange(100)}/{rng.choice(WORDS)}-{rng.choice(WORDS)}"
                  for _ in range(rng.randint(1, 4))]
        tags = [f"v{rng.randrange(3)}.{rng.randrange(20)}.{rng.randrange(10)}-rc{k}" for k in range(4)]
        for w0, w1 in ctx.windows():
            want = round(max(ERROR_STORM_MIN_ERRORS, ERROR_STORM_ERRORS_PER_DAY * intensity) * (w1 - w0) / DAY)
            errors = 0
            while errors < want:         # retry bursts; the mirror answers 429 from the 5th request of a burst
                t = rng.uniform(w0, w1 - 60) if w1 - w0 > 120 else w0
                for k in range(min(rng.randint(3, 9), want - errors)):
                    t += rng.uniform(0.2, 3)
                    path = f"/v2/{rng.choice(ghosts)}/manifests/{rng.choice(tags)}"
                    method = "HEAD" if containerd else "GET"
                    status = 404 if k < 4 else 429
                    size = 0 if method == "HEAD" else 96 if status == 404 else 95
                    ctx.log.add(t, who, ip, method, path, status, size, ua)
                    errors += 1
        out.append(who)
    return out


# ---------------------------------------------------------------------------------------------- legitimate kinds

def _office_nat(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("office-nat", i), "office-nat", None, 4134)
        ip = _host("office-nat", 10 + i)
        ndev = max(5, round(OFFICE_DEVELOPERS * intensity))
        uas: set[str] = set()
        while len(uas) < ndev:
            uas.add(_random_docker(rng, desktop=0.45) if rng.random() < 0.9 else _containerd(rng))
        devs = [(ua, "containerd" if ua.startswith("containerd") else "docker", set()) for ua in sorted(uas)]
        rng.shuffle(devs)
        images = ctx.cat.pick(rng, rng.randint(80, 150), top=800)
        icum = _cum([1 / (k + 1) ** 0.8 for k in range(len(images))])
        bw = rng.uniform(20e6, 60e6)
        for midnight, weekend in ctx.days():
            for ua, client, have in devs:
                if weekend and rng.random() > 0.05:        # every developer on a workday, few at weekends
                    continue
                t = _at(rng, midnight, H_WORK)
                wanted = {id(img): img for img in rng.choices(images, cum_weights=icum, k=rng.randint(2, 6))}
                for img in wanted.values():
                    warm = img.index in have
                    t = pull(ctx.log, rng, who, t, ip, ua, img, client=client, warm=warm, bw=bw) + rng.uniform(5, 900)
                    have.add(img.index)
        out.append(who)
    return out


def _k8s_cluster(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("k8s-cluster", i), "k8s-cluster", None, 4837)
        ip = _host("k8s-cluster", 10 + i)
        crio = rng.random() < 0.3
        client = "cri-o" if crio else "containerd"
        versions = [(_crio if crio else _containerd)(rng) for _ in range(2)]
        nodes = [rng.choice(versions) for _ in range(max(3, round(K8S_NODES * intensity)))]
        deployed = ctx.cat.pick(rng, rng.randint(8, 14), top=120)
        org = f"{rng.choice(WORDS)}{rng.randrange(100)}"
        service = f"docker.io/{org}/{rng.choice(WORDS)}-{rng.choice(WORDS)}"
        release = [rng.randrange(1, 4), rng.randrange(30), 0]
        app = _make_image(rng, service, "v%d.%d.%d" % tuple(release))
        events = []                                     # (time, what)
        for midnight, _weekend in ctx.days():
            for hour in (10.5, 16.0):
                events.append((midnight + hour * 3600 + rng.uniform(-3600, 3600), "rollout"))
        events.sort()
        lo, hi = K8S_HEAD_INTERVAL_MIN
        node_next = [ctx.t0 + rng.uniform(0, hi * 60) for _ in nodes]
        bw = rng.uniform(40e6, 120e6)
        for when, _what in events + [(ctx.t1, "end")]:
            # kubelet's HEAD checks (imagePullPolicy: Always) until the next rollout
            for k, ua in enumerate(nodes):
                t = node_next[k]
                while t < when:
                    img = app if rng.random() < 0.3 else rng.choice(deployed)
                    ctx.log.add(t, who, ip, "HEAD", f"/v2/{img.name}/manifests/{img.tag}", 200, 0, ua)
                    t += rng.uniform(lo, hi) * 60
                node_next[k] = t
            if when >= ctx.t1:
                break
            release[2] += 1
            app = _make_image(rng, service, "v%d.%d.%d" % tuple(release))
            for ua in nodes:                             # a rolling update: every node pulls it once
                pull(ctx.log, rng, who, when + rng.uniform(0, 900), ip, ua, app, client=client, bw=bw)
        out.append(who)
    return out


def _hosted_ci(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    job = 0
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("hosted-ci", i), "hosted-ci", None, 16509)
        uas = [docker_ua(v, g, k) for v, g, k in
               [("26.1.3", "go1.21.10", "6.8.0-1017-aws"), ("27.3.1", "go1.22.7", "6.8.0-1018-aws"),
                ("27.4.0", "go1.22.10", "6.8.0-1019-aws")]]
        for midnight, weekend in ctx.days():
            for _ in range(round(HOSTED_CI_JOBS_PER_DAY * intensity * (0.5 if weekend else 1.0))):
                ip = _host("hosted-ci", job, scramble=True)    # a fresh runner: one job per address
                job += 1
                t = _at(rng, midnight, H_CI)
                ua = rng.choice(uas)
                for img in ctx.cat.pick(rng, rng.choice([2, 3]), top=200):
                    t = pull(ctx.log, rng, who, t, ip, ua, img, bw=rng.uniform(100e6, 300e6)) + rng.uniform(1, 30)
        out.append(who)
    return out


def _harbor(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("harbor-cache", i), "harbor-cache", None, 4134)
        ip = _host("harbor-cache", 10 + i)
        ua = "harbor-registry-client"
        order = list(range(len(ctx.cat.images)))
        rng.shuffle(order)
        order.sort(key=lambda k: k * rng.uniform(0.2, 1))    # popular images tend to come first
        fetched: list[Image] = []
        bw = rng.uniform(50e6, 150e6)
        for midnight, _weekend in ctx.days():
            pulls = []
            for _ in range(round(HARBOR_IMAGES_PER_DAY * intensity)):
                if order:
                    img = ctx.cat.images[order.pop(0)]
                    pulls.append((_at(rng, midnight, H_LIGHT), img, False))
                    fetched.append(img)
            for img in rng.sample(fetched, min(len(fetched) // 4, round(100 * intensity))):
                pulls.append((_at(rng, midnight, H_LIGHT), img, True))   # upstream checks of cached images
            for t, img, warm in pulls:
                pull(ctx.log, rng, who, t, ip, ua, img, client="harbor", warm=warm, bw=bw)
        out.append(who)
    return out


def _ai_user(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("ai-user", i), "ai-user", None, 9808)
        ip = _host("ai-user", 10 + i)
        for _ in range(500):
            images = rng.sample(ctx.cat.huge, rng.choice([2, 3]))
            if 30e9 <= sum(img.bytes for img in images) <= 60e9:
                break
        ua = _random_docker(rng, desktop=0.3)
        days = [m for m, _w in ctx.days() if m + 19 * 3600 >= ctx.t0 and m + 21 * 3600 < ctx.t1]
        t = rng.choice(days) + rng.uniform(19, 21) * 3600 if days else rng.uniform(ctx.t0, ctx.t1)
        bw = rng.uniform(20e6, 60e6)                  # home fibre: a 50 GB evening
        for img in images:
            t = pull(ctx.log, rng, who, t, ip, ua, img, bw=bw) + rng.uniform(5, 120)
        out.append(who)
    return out


def _privacy_v6(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng = ctx.rng
        net = _slash64(4134, V6_SUBNETS["privacy-v6"] + i)
        who = _Who(_name("privacy-v6", i), "privacy-v6", str(net), 4134)
        ua = _random_docker(rng, desktop=1.0)
        images = ctx.cat.pick(rng, rng.randint(4, 8), top=150)
        have: set[str] = set()
        changes = []                                   # (from, address): a new temporary address every few hours
        t = ctx.t0 - rng.uniform(0, 4 * 3600)
        while t < ctx.t1:
            changes.append((t, _in64(net, rng.getrandbits(64))))
            t += rng.uniform(2, 5) * 3600
        per_day = round(rng.randint(4, 8) * max(1.0, intensity))      # enough to see the address change
        times = sorted(_at(rng, m, H_LIGHT) for m, _w in ctx.days() for _ in range(per_day))
        for t in times:
            ip = [a for since, a in changes if since <= t][-1] if t >= changes[0][0] else changes[0][1]
            img = rng.choice(images)
            pull(ctx.log, rng, who, t, ip, ua, img, warm=img.index in have, bw=rng.uniform(10e6, 40e6))
            if ctx.t0 <= t < ctx.t1:
                have.add(img.index)
        out.append(who)
    return out


def _light_user(ctx: _Ctx, rng: random.Random, who: _Who, ip: str) -> None:
    r = rng.random()
    client = "docker" if r < 0.55 else "containerd" if r < 0.8 else "podman"
    ua = _random_docker(rng, desktop=0.4) if client == "docker" else _containerd(rng) if client == "containerd" \
        else _podman(rng)
    images = ctx.cat.pick(rng, rng.randint(2, 5), top=300)
    have: set[str] = set()
    bw = rng.uniform(5e6, 50e6)
    for midnight, weekend in ctx.days():
        if rng.random() > (0.6 if weekend else 0.8):
            continue
        for t in sorted(_at(rng, midnight, H_LIGHT) for _ in range(rng.randint(1, 5))):
            for img in rng.sample(images, min(len(images), rng.randint(1, 3))):
                # now and then a moved tag: the client has most layers already
                stale = img.index in have and rng.random() < 0.15
                t = pull(ctx.log, rng, who, t, ip, ua, img, client=client, warm=img.index in have and not stale,
                         fetch=0.3 if stale else 1.0, bw=bw) + rng.uniform(1, 60)
                if ctx.t0 <= t < ctx.t1:
                    have.add(img.index)
    if not who.seen:                 # every user pulls at least once, however short the span
        pull(ctx.log, rng, who, rng.uniform(ctx.t0, max(ctx.t0, ctx.t1 - 3600)), ip, ua, images[0], client=client,
             bw=bw)


def _light(ctx: _Ctx, scale: float) -> list[_Who]:
    out = []
    rng = ctx.rng
    per_asn = dict.fromkeys(RESIDENTIAL, 0)
    for j in range(max(1, round(LIGHT_USERS * scale))):
        asn = rng.choices(RESIDENTIAL, weights=[45, 30, 25])[0]
        k = per_asn[asn]
        per_asn[asn] += 1
        if rng.random() < 1 / 3:
            ip = _in64(_slash64(asn, V6_SUBNETS["light"] + k), rng.getrandbits(64))
        else:
            ip = _host(f"light-{asn}", k, scramble=True)
        who = _Who(f"light-{j + 1:03d}", "light", None, asn)
        _light_user(ctx, rng, who, ip)
        out.append(who)
    # one light user in the rotation-v4 /24: that prefix also carries an unrelated, innocent client
    net = _slash24("rotation-v4", 0)
    who = _Who("light-neighbour", "light", str(net), 45102)
    _light_user(ctx, rng, who, str(net.network_address + NEIGHBOUR_HOST))
    out.append(who)
    return out


# ---------------------------------------------------------------------------------------------- hidden shapes
# Issue 21: abusers whose shape the first rules missed, and the legitimate crowds that look like them.

CACHE_RESELLER_PULLS_PER_DAY = 2000   # its customers' pulls: each asks for manifests, few need a new blob
OFFICE_RESELLER_CUSTOMERS = (100, 300)
CI_BIGIMAGE_RUNS = (3, 7)             # a handful of runs a day, whatever the scale
CI_FLEET_JOBS_PER_DAY = 600
CAMPUS_USERS = 2500
CGNAT_USERS = (20, 60)
REPLICATOR_IMAGES = (150, 400)
# A relay whose customers live everywhere is busy at every hour; a campus is awake late.
H_NEARLY_FLAT = [0.8, 0.7, 0.7, 0.7, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.2, 1.2, 1.1, 1.2, 1.2, 1.2, 1.1, 1.1, 1.1, 1.1,
                 1.1, 1, 1, 0.9]
H_CAMPUS = [5, 4, 3, 1.5, 0.5, 0.5, 0.5, 1, 2, 4, 6, 7, 6, 7, 8, 8, 7, 6, 6, 7, 8, 8, 8, 7]
_CUMS.update({id(h): _cum(h) for h in (H_NEARLY_FLAT, H_CAMPUS)})


def _in_tz(rng: random.Random, midnight: float, hours: list, tz: int) -> float:
    """A time in the day starting at ``midnight`` (+0800) following ``hours`` as clocks read them in UTC+``tz``."""
    return _at(rng, midnight, hours) + (8 - tz) * 3600


def _cache_reseller(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A paid downstream proxy with its own blob cache: it asks for the manifests of every one of its
    customers' pulls (HEAD, then GET by tag and by digest) but downloads a blob only the first time
    anyone wants it. Its customers' interests are a long tail over the whole catalog, with new
    images every day; nearly flat round the clock; one HTTP library's user agent or its
    customers' passed through; no forwarded-for."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        asn = fixed.choice([14061, 24940, 4837])
        who = _Who(_name("cache-reseller", i), "cache-reseller", None, asn)
        ip = _host(f"cache-reseller-{asn}", 20 + i)
        if fixed.random() < 0.5:
            uas = [fixed.choice(["Go-http-client/1.1", "Go-http-client/2.0", "python-requests/2.32.3"])]
        else:
            uas = sorted({_random_docker(fixed) if fixed.random() < 0.6 else _containerd(fixed)
                          for _ in range(fixed.randint(60, 150))})
        images = ctx.cat.pick(fixed, fixed.randint(300, 600))
        icum = _cum([1 / (k + 1) ** 0.6 for k in range(len(images))])
        # a cache from a few days to months old: the blobs of its customers' most usual images
        # are in it, or few of them yet (then it fetches more blobs than it asks manifests)
        cached = {d for img in images[:round(len(images) * fixed.uniform(0, 0.6))] for d, _ in img.blobs}
        bw = rng.uniform(100e6, 300e6)
        for midnight, _weekend in ctx.days():
            fresh = ctx.cat.pick(rng, rng.randint(20, 60))      # what its customers discover today
            for _ in range(round(CACHE_RESELLER_PULLS_PER_DAY * intensity)):
                t = _at(rng, midnight, H_NEARLY_FLAT)
                img = rng.choice(fresh) if rng.random() < 0.1 else rng.choices(images, cum_weights=icum)[0]
                ua = rng.choice(uas)
                base = f"/v2/{img.name}/manifests/"
                if rng.random() < 0.1:
                    ctx.log.add(t, who, ip, "GET", "/v2/", 401, 87, ua)
                ctx.log.add(t, who, ip, "HEAD", base + img.tag, 200, 0, ua)
                if rng.random() < 0.3 and img.blobs[0][0] in cached:     # the tag has not moved: done
                    continue
                t += rng.uniform(0.02, 0.1)
                ctx.log.add(t, who, ip, "GET", base + img.tag, 200, img.index_size, ua)
                t += rng.uniform(0.02, 0.1)
                ctx.log.add(t, who, ip, "GET", base + img.manifest, 200, img.manifest_size, ua)
                for d, size in img.blobs:
                    if d not in cached:
                        cached.add(d)
                        t += rng.uniform(0.01, 0.08) + size / bw
                        ctx.log.add(t, who, ip, "GET", f"/v2/{img.name}/blobs/{d}", 200, size, ua)
        out.append(who)
    return out


def _office_reseller(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A reseller whose customers are in one time zone and keep office hours: a working day and
    quiet weekends, 100-300 customers whose user agents it passes through, no forwarded-for, no
    cache (every customer's cold pull is downloaded again), on a hosting network."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        asn = fixed.choice([14061, 24940])
        who = _Who(_name("office-reseller", i), "office-reseller", None, asn)
        ip = _host(f"office-reseller-{asn}", 20 + i)
        tz = fixed.choice([8, 9, 3, 1, -5])
        customers = []
        for _ in range(max(10, round(fixed.randint(*OFFICE_RESELLER_CUSTOMERS) * intensity))):
            r = fixed.random()
            ua = _random_docker(fixed, desktop=0.3) if r < 0.6 else _containerd(fixed) if r < 0.9 else _podman(fixed)
            client = "docker" if ua.startswith("docker/") else "podman" if ua.startswith("containers/") else "containerd"
            customers.append((ua, client, set()))
        images = ctx.cat.pick(fixed, fixed.randint(120, 250), top=1500)
        icum = _cum([1 / (k + 1) ** 0.6 for k in range(len(images))])
        bw = rng.uniform(80e6, 250e6)
        for midnight, weekend in ctx.days():
            for ua, client, have in customers:
                if rng.random() > (0.12 if weekend else 0.85):
                    continue
                t = _in_tz(rng, midnight, H_WORK, tz)
                wanted = {id(img): img for img in rng.choices(images, cum_weights=icum, k=rng.randint(2, 6))}
                for img in wanted.values():
                    t = pull(ctx.log, rng, who, t, ip, ua, img, client=client, warm=img.index in have,
                             bw=bw) + rng.uniform(5, 900)
                    have.add(img.index)
        out.append(who)
    return out


def _big_image(rng: random.Random, name: str, tag: str) -> Image:
    """An image of several GiB: 3-5 layers of 0.8-2.5 GB."""
    img = _make_image(rng, name, tag, layers=(3, 5))
    img.blobs[1:] = [(d, int(rng.uniform(0.8e9, 2.5e9))) for d, _ in img.blobs[1:]]
    return img


def _ci_bigimage(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A CI runner without a layer cache that pulls one image of several GiB a handful of times a
    day (commits in the working day, one nightly build): few requests, the same blobs every run,
    tens of GiB a day."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        asn = fixed.choice([14061, 24940])
        who = _Who(_name("ci-bigimage", i), "ci-bigimage", None, asn)
        ip = _host(f"ci-bigimage-{asn}", 20 + i)
        ua = _gitlab_docker(fixed)
        org = f"{fixed.choice(WORDS)}{fixed.randrange(100)}"
        name = f"ghcr.io/{org}/{fixed.choice(WORDS)}-builder"
        runs = fixed.randint(*CI_BIGIMAGE_RUNS)
        for _ in range(500):                 # tens of GiB on a weekday, whatever the draw
            big = _big_image(fixed, name, "cuda12")
            if big.bytes * runs >= 20e9:
                break
        helper = next(img for img in ctx.cat.images if img.name == "docker.io/library/docker")
        bw = rng.uniform(60e6, 200e6)
        for midnight, weekend in ctx.days():
            times = [midnight + rng.uniform(1, 3) * 3600]                       # the nightly build
            times += [_at(rng, midnight, H_WORK) for _ in range((runs if not weekend else max(2, runs // 2)) - 1)]
            for t in sorted(times):
                t = pull(ctx.log, rng, who, t, ip, ua, big, bw=bw)
                if rng.random() < 0.5:
                    pull(ctx.log, rng, who, t + rng.uniform(1, 20), ip, ua, helper, bw=bw)
        out.append(who)
    return out


def _ci_fleet(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """An enterprise's CI: hundreds of ephemeral runners behind one NAT, each job on a fresh runner
    (no layer cache), round the clock with a weekday peak, pulling the company's own images (new
    builds through the day) and a few base images."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        who = _Who(_name("ci-fleet", i), "ci-fleet", None, 4837)
        ip = _host("ci-fleet", 10 + i)
        org = f"{fixed.choice(WORDS)}{fixed.randrange(100)}corp"
        homes = fixed.sample(["docker.io", "ghcr.io", "quay.io"], fixed.randint(1, 2))
        company = [_make_image(fixed, f"{fixed.choice(homes)}/{org}/{w}", "main", layers=(2, 5))
                   for w in fixed.sample(WORDS, fixed.randint(8, 20))]
        base = fixed.sample([img for img in ctx.cat.images[:len(WELL_KNOWN)]
                             if img.name.startswith("docker.io/library/")], fixed.randint(4, 8))
        uas = [_gitlab_docker(fixed) for _ in range(fixed.randint(1, 3))]
        bw = rng.uniform(80e6, 250e6)
        for midnight, weekend in ctx.days():
            # builds push new versions through the day: a job pulls the newest one
            builds = sorted((_at(rng, midnight, H_WORK), k) for k in range(len(company)) for _ in range(rng.randint(0, 3)))
            jobs = sorted(_at(rng, midnight, H_CI)
                          for _ in range(round(CI_FLEET_JOBS_PER_DAY * intensity * (0.4 if weekend else 1.0))))
            b = 0
            for t in jobs:
                while b < len(builds) and builds[b][0] <= t:
                    k = builds[b][1]
                    old = company[k]
                    top = _make_image(rng, old.name, old.tag, layers=(1, 2))
                    company[k] = Image(old.name, old.tag, top.index, top.index_size, top.manifest, top.manifest_size,
                                       top.blobs[:1] + old.blobs[1:-1] + top.blobs[1:])
                    b += 1
                ua = rng.choice(uas)
                wanted = [rng.choice(company)] + ([rng.choice(base)] if rng.random() < 0.6 else [])
                for img in wanted:
                    t = pull(ctx.log, rng, who, t, ip, ua, img, bw=bw) + rng.uniform(1, 20)
        out.append(who)
    return out


def _campus_ua(rng: random.Random) -> tuple[str, str]:
    """(user agent, how it pulls) of one of a campus's many kinds of client."""
    r = rng.random()
    if r < 0.45:
        return _random_docker(rng, desktop=0.6), "docker"
    if r < 0.6:
        return _containerd(rng), "containerd"                 # containerd, and nerdctl on it
    if r < 0.75:
        return _podman(rng), "podman"
    if r < 0.85:
        return f"skopeo/1.{rng.randrange(13, 17)}.{rng.randrange(0, 4)}", "podman"   # containers/image too
    return f"buildkit/v0.{rng.randrange(12, 18)} moby/v{rng.choice(['26.1', '27.3', '27.4'])}", "containerd"


def _campus_nat(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A university's NAT: thousands of students and staff, every client kind, awake late,
    weekends included, each with a few interests of their own and a local image cache."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        who = _Who(_name("campus-nat", i), "campus-nat", None, 4837)
        ip = _host("campus-nat", 10 + i)
        users = []
        for _ in range(max(200, round(CAMPUS_USERS * intensity))):
            ua, client = _campus_ua(fixed)
            users.append((ua, client, ctx.cat.pick(fixed, fixed.randint(2, 8), top=2000), set()))
        bw = rng.uniform(20e6, 80e6)
        for midnight, weekend in ctx.days():
            for ua, client, interests, have in users:
                if rng.random() > (0.25 if weekend else 0.3):
                    continue
                for t in sorted(_at(rng, midnight, H_CAMPUS) for _ in range(rng.randint(1, 3))):
                    for img in rng.sample(interests, min(len(interests), rng.randint(1, 2))):
                        t = pull(ctx.log, rng, who, t, ip, ua, img, client=client, warm=img.index in have,
                                 bw=bw) + rng.uniform(1, 120)
                        have.add(img.index)
        out.append(who)
    return out


def _cgnat(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A mobile carrier's CGNAT address shared by dozens of unrelated light users."""
    out = []
    for i in range(n):
        rng = ctx.rng
        who = _Who(_name("cgnat", i), "cgnat", None, 4837)
        ip = _host("cgnat", 10 + i)
        for _ in range(rng.randint(*CGNAT_USERS)):
            _light_user(ctx, rng, who, ip)
        out.append(who)
    return out


def _replicator(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A company's registry replicator in a cloud: every night it syncs hundreds of upstream
    images (skopeo sync: the tags list, the tag's manifest) and copies each new version's new
    blobs once."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        who = _Who(_name("replicator", i), "replicator", None, 24940)
        ip = _host("replicator", 10 + i)
        ua = fixed.choice(["skopeo/1.14.2", "skopeo/1.15.1", "crane/v0.20.2 go-containerregistry/v0.20.2"])
        images = ctx.cat.pick(fixed, round(fixed.randint(*REPLICATOR_IMAGES) * max(0.5, min(intensity, 2))))
        have = {d for img in images for d, _ in img.blobs}
        bw = rng.uniform(100e6, 300e6)
        for midnight, _weekend in ctx.days():
            t = midnight + rng.uniform(0.5, 1.5) * 3600                         # a cron job after midnight
            for k, img in enumerate(images):
                ctx.log.add(t, who, ip, "GET", "/v2/", 401, 87, ua)
                t += rng.uniform(0.05, 0.3)
                ctx.log.add(t, who, ip, "GET", f"/v2/{img.name}/tags/list", 200, rng.randrange(200, 4000), ua)
                if rng.random() < 0.12:                                        # a new release upstream
                    top = _make_image(rng, img.name, f"{img.tag}-r{rng.randrange(100)}", layers=(1, 2))
                    img = images[k] = Image(img.name, top.tag, top.index, top.index_size, top.manifest,
                                            top.manifest_size, top.blobs[:1] + img.blobs[1:-1] + top.blobs[1:])
                t += rng.uniform(0.05, 0.3)
                ctx.log.add(t, who, ip, "GET", f"/v2/{img.name}/manifests/{img.tag}", 200, img.index_size, ua)
                if all(d in have for d, _ in img.blobs):
                    t += rng.uniform(0.5, 3)
                    continue
                t += rng.uniform(0.05, 0.3)
                ctx.log.add(t, who, ip, "GET", f"/v2/{img.name}/manifests/{img.manifest}", 200, img.manifest_size, ua)
                for d, size in img.blobs:
                    if d not in have:
                        have.add(d)
                        t += rng.uniform(0.05, 0.2) + size / bw
                        ctx.log.add(t, who, ip, "GET", f"/v2/{img.name}/blobs/{d}", 200, size, ua)
                t += rng.uniform(0.5, 3)
        out.append(who)
    return out


SINGLE = {
    "ci-storm": _ci_storm, "reseller": _reseller, "scanner": _scanner, "error-storm": _error_storm,
    "lib-reseller": _lib_reseller, "small-reseller": _small_reseller,
    "rotation-v4": lambda c, n, i: _rotation(c, "rotation-v4", n, i),
    "rotation-v6": lambda c, n, i: _rotation(c, "rotation-v6", n, i),
    "office-nat": _office_nat, "k8s-cluster": _k8s_cluster, "hosted-ci": _hosted_ci, "harbor-cache": _harbor,
    "ai-user": _ai_user, "privacy-v6": _privacy_v6,
    "cache-reseller": _cache_reseller, "office-reseller": _office_reseller, "ci-bigimage": _ci_bigimage,
    "ci-fleet": _ci_fleet, "campus-nat": _campus_nat, "cgnat": _cgnat, "replicator": _replicator,
}


def _play(log: _Log, cat: Catalog, seed, order, kinds, scales, variant: str = "") -> list[_Who]:
    """Every wanted kind's actors, in ``order``, writing to ``log``."""
    whos: list[_Who] = []
    for kind in order:                       # each kind draws from its own stream: filtering changes nothing else
        if kinds is not None and kind not in kinds:
            continue
        ctx = _Ctx(random.Random(f"{seed}:{kind}{variant}"), log, cat, log.t0, log.t1,
                   random.Random(f"{seed}:{kind}") if variant else None)
        log.kind_started(f"{seed}{variant}", kind)       # the redirect draws differ per variant too
        sc = scales.get(kind, 1.0)
        n = max(1, round(sc))
        whos += _light(ctx, sc) if kind == "light" else SINGLE[kind](ctx, n, sc / n)
    return whos


def _checked(days, start: datetime, scale, kinds, fmt: str, order) -> dict[str, float]:
    """The scale of each kind of ``order``, once the arguments are known to make sense."""
    scales = scale if isinstance(scale, dict) else dict.fromkeys(order, scale)
    if min(scales.get(k, 1.0) for k in order) <= 0 or days <= 0:
        raise ValueError("days and scale must be positive")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    unknown = set(kinds or ()) - set(order)
    if unknown:
        raise ValueError(f"unknown kinds: {sorted(unknown)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: {', '.join(FORMATS)}")
    return scales


def generate(days: int = 2, start: datetime = datetime(2024, 11, 18, tzinfo=timezone.utc), seed: int = 1,
             scale: float | dict[str, float] = 1.0, kinds: set[str] | None = None, variant: str = "",
             until: datetime | None = None, fmt: str = "main") -> tuple[list[str], list[Actor]]:
    """Log lines sorted by time, and the actors that produced them. ``fmt`` is nginx ``main`` or
    CRProxy's ``clf`` (the same requests, without user agents and forwarded-for). ``variant`` gives the actors
    other draws with the same catalog and addresses (the demo month: one variant per day);
    ``until`` drops the lines after it (a day that is not over yet), leaving the earlier ones
    exactly as they were."""
    scales = _checked(days, start, scale, kinds, fmt, KINDS)
    t0 = start.timestamp()
    log = _Log(t0, t0 + days * DAY, fmt)
    cat = Catalog(seed)
    whos = _play(log, cat, seed, KINDS, kinds, scales, variant)
    rows = log.rows
    if until is not None:
        rows = [r for r in rows if r[0] < until.timestamp()]
    rows.sort(key=lambda r: r[0])
    for k, (_t, line) in enumerate(rows):      # in place: a benchmark's millions of lines are not held twice
        rows[k] = line
    log.rows = []
    return rows, [w.actor() for w in whos]


# ---------------------------------------------------------------------------------------------- redirect mode

REDIRECT_KINDS = ("redirect-relay", "split-egress-v6", "split-egress-corp", "direct-read", "backup")
REDIRECT_ABUSIVE = ("redirect-relay",)
STORES = ("s3", "oss", "logpush")
OLD_PROXY_SHARE = 0.10        # downloads whose signed URL came from an older proxy node: no referer in it
RANGE_SHARE = 0.15            # downloads split into 2-5 Range requests (206), as podman and some SDKs do
RELAY_PULLS_PER_DAY = 200     # never fewer than RELAY_MIN_PULLS, whatever the scale
RELAY_MIN_PULLS = 40
RELAY_SELF_SHARE = 0.15       # the links a relay fetches itself (its own cache); the rest go to its customers
SPLIT_V6_PULLS_PER_DAY = 8    # cold pulls: 20+ downloads a day from its IPv6, past any per-day threshold
CORP_DEVELOPERS = 40
DIRECT_READS_PER_DAY = 3
BACKUP_READS_PER_DAY = 40     # an operator's backup job reading fresh blobs with its own key, minutes after a pull
RELAY_LATE = (60, 1140)       # seconds after the 307 a relay's customer fetches its link (the link lives 1200)
MIRROR_ADDRESS = "10.20.0.5"  # the mirror itself: Stat-ing each blob before its redirect, filling the bucket
BACKUP_ADDRESS = "10.20.0.9"  # the operator's backup host
# who the stores' logs say made a request: the mirror signs its links with its own identity
MIRROR_REQUESTER = {"s3": "arn:aws:iam::123456789012:user/crproxy", "oss": "1657136103983691", "logpush": None}
BACKUP_REQUESTER = {"s3": "arn:aws:iam::123456789012:user/backup", "oss": "203847561029384756", "logpush": None}
SDK_UA = {"s3": "aws-sdk-go-v2/1.30.3", "oss": "aliyun-sdk-go/3.0.2", "logpush": "aws-sdk-go-v2/1.30.3"}


@dataclass
class Truth:
    """What a redirect-mode mirror really served, from the generator's side of the wire."""
    served: dict[str, int]        # per requesting address: its proxy bytes (redirects left out) + the object
    #                               bytes of the signed URLs it asked for (a direct read: the downloading address)
    proxy_bytes: int              # the proxy log's bytes, redirects left out
    redirect_bytes: int           # the 307s' own bytes (not served bytes)
    object_bytes: int             # the store logs' GET 200/206 bytes
    unjoined_bytes: int           # of those, direct reads of the bucket and the backup's reads (no signed link)
    listings: int                 # the mirror's own ListObjects (a Stat before each redirect): no download
    rows: dict[str, list[dict]]   # per store, one row per line of ``objects[store]`` (see sample_logs/objectstores.py)


class Redirected(tuple):
    """(lines, objects, actors, truth): the proxy log, each store's log lines, the actors, the truth."""
    __slots__ = ()

    def __new__(cls, lines, objects, actors, truth):
        return super().__new__(cls, (lines, objects, actors, truth))

    lines = property(lambda self: self[0])
    objects = property(lambda self: self[1])
    actors = property(lambda self: self[2])
    truth = property(lambda self: self[3])


def _store_of(address: str, stores: tuple) -> str:
    """The bucket a client's signed URLs point at: one per region, so fixed per asking address."""
    return stores[zlib.crc32(address.encode()) % len(stores)]


class _RedirectLog(_Log):
    """A redirect-mode mirror: every blob GET is answered with a 307 to a signed URL (a few hundred
    bytes; nginx does not log the Location) at the moment it starts, and the download that follows
    seconds later is a row of the object store's log."""

    def __init__(self, t0: float, t1: float, fmt: str, stores: tuple, no_referer: tuple = ()):
        super().__init__(t0, t1, fmt)
        self.stores = stores
        self.no_referer = no_referer
        self.rng = random.Random()
        self.rows: list[tuple[float, str]] = []
        self.objects: list[dict] = []
        self.redirects: dict[str, list[float]] = {}     # digest -> 307 times
        self.filled: set[tuple[str, str]] = set()       # (store, digest) already in the bucket
        self.served: dict[str, int] = {}
        self.proxy_bytes = self.redirect_bytes = 0

    def kind_started(self, seed, kind: str) -> None:
        self.rng = random.Random(f"{seed}:{kind}:redirect")

    def add(self, t, who, ip, method, path, status, size, ua, xff="-", started=None) -> None:
        blob = method == "GET" and status == 200 and "/blobs/sha256:" in path
        if blob and started is not None:
            t = started + self.rng.uniform(0.01, 0.05)
        if not self.t0 <= t < self.t1:
            return
        if not blob:
            self.served[ip] = self.served.get(ip, 0) + size
            self.proxy_bytes += size
            super().add(t, who, ip, method, path, status, size, ua, xff)
            return
        rng = self.rng
        body = rng.randrange(300, 900)
        self.redirect_bytes += body
        self.served.setdefault(ip, 0)
        super().add(t, who, ip, method, path, 307, body, ua, xff)
        image, _, digest = path[len("/v2/"):].partition("/blobs/sha256:")
        self.redirects.setdefault(digest, []).append(t)
        store = _store_of(ip, self.stores)
        if (store, digest) not in self.filled:          # the first pull: the mirror fills the bucket
            self.filled.add((store, digest))
            self._row(store, t - rng.uniform(0.2, 2), MIRROR_ADDRESS, None, image, digest, size, 0, 200,
                      SDK_UA[store], "PUT")
        if store != "logpush":                          # the driver's Stat (R2's API calls are not in Logpush)
            self._row(store, t - rng.uniform(0.01, 0.2), MIRROR_ADDRESS, None, image, digest, size,
                      rng.randrange(300, 700), 200, SDK_UA[store], "LIST")
        dl, own = who.fetch(rng, ip) if who.fetch else (ip, True)
        (who.seen if own else who.relayed)[dl] = None
        asker = None if store in self.no_referer or (dl == ip and rng.random() < OLD_PROXY_SHARE) else ip
        late = rng.uniform(*RELAY_LATE) if not own else rng.uniform(0.3, 8)
        self.download(store, t + late, dl, asker, image, digest, size, ua)
        self.served[ip] += size

    def download(self, store, t, ip, asker, image, digest, size, ua, unsigned=False, requester=None) -> None:
        """One blob fetched from the store: one GET, or a few Range requests whose parts add up to it."""
        rng = self.rng
        if size > 4_000_000 and rng.random() < RANGE_SHARE:
            cuts = sorted(rng.sample(range(1, size), rng.randint(1, 4)))
            for a, b in zip([0, *cuts], [*cuts, size]):
                self._row(store, t + rng.uniform(0, 0.8), ip, asker, image, digest, size, b - a, 206, ua, "GET",
                          unsigned, requester)
        else:
            self._row(store, t, ip, asker, image, digest, size, size, 200, ua, "GET", unsigned, requester)

    def _row(self, store, t, ip, asker, image, digest, size, nbytes, status, ua, method, unsigned=False,
             requester=None):
        if requester is None and not unsigned:
            requester = MIRROR_REQUESTER[store]
        self.objects.append({"store": store, "t": t, "ts": datetime.fromtimestamp(int(t), UTC), "ip": ip,
                             "asker": asker, "image": image, "digest": digest, "size": size, "bytes": nbytes,
                             "status": status, "ua": ua, "method": method, "unsigned": unsigned,
                             "requester": requester, "rid": request_id(self.rng, store)})


def _redirect_relay(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        who = _Who(_name("redirect-relay", i), "redirect-relay", None, 24940)
        ip = _host("redirect-relay", 20 + i)
        customers = sorted({_host(f"relay-customers-{asn}", rng.randrange(254), scramble=True)
                            for asn in rng.choices(RESIDENTIAL, k=rng.randint(25, 45))})

        def fetch(r, asker, customers=customers):
            return (asker, True) if r.random() < RELAY_SELF_SHARE else (r.choice(customers), False)
        who.fetch = fetch
        ua = _containerd(fixed)
        images = ctx.cat.pick(fixed, fixed.randint(30, 60), top=600)
        bw = rng.uniform(100e6, 300e6)
        for w0, w1 in ctx.windows():                  # round the clock, for whoever buys
            for _ in range(round(max(RELAY_MIN_PULLS, RELAY_PULLS_PER_DAY * intensity) * (w1 - w0) / DAY)):
                pull(ctx.log, rng, who, rng.uniform(w0, w1), ip, ua, rng.choice(images), client="containerd", bw=bw)
        out.append(who)
    return out


def _split_v6(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A dual-stack build host: the mirror has only an A record, the bucket an AAAA too, so its IPv4
    asks and its IPv6 downloads (same ASN, another family: never the same /24 or /64)."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        who = _Who(_name("split-egress-v6", i), "split-egress-v6", None, 4837)
        ip = _host("split-v6-4837", 10 + i)
        v6 = _in64(_slash64(4837, V6_SUBNETS["split-egress-v6"] + i), fixed.getrandbits(64))
        who.fetch = lambda r, asker, v6=v6: (v6, True)
        ua = _random_docker(fixed)
        images = ctx.cat.pick(fixed, fixed.randint(15, 25), top=300)
        for midnight, _weekend in ctx.days():
            t = midnight
            for _ in range(max(6, round(SPLIT_V6_PULLS_PER_DAY * intensity))):   # cold builds: no layer cache
                t = max(t, _at(rng, midnight, H_LIGHT))
                t = pull(ctx.log, rng, who, t, ip, ua, rng.choice(images), bw=rng.uniform(20e6, 80e6)) + 30
        out.append(who)
    return out


def _split_corp(ctx: _Ctx, n: int, intensity: float) -> list[_Who]:
    """A company whose registry traffic leaves by its proxy's egress /24 and whose big downloads
    by another /24 of the same ISP (policy routing)."""
    out = []
    for i in range(n):
        rng, fixed = ctx.rng, ctx.fixed()
        who = _Who(_name("split-egress-corp", i), "split-egress-corp", None, 9808)
        ip = _host("corp-ask-9808", 10 + i)
        egress = [_host("corp-egress-9808", 10 + 4 * i + k) for k in range(4)]
        who.fetch = lambda r, asker, egress=egress: (r.choice(egress), True)
        devs = sorted({_random_docker(fixed, desktop=0.45) for _ in range(max(5, round(CORP_DEVELOPERS * intensity)))})
        images = ctx.cat.pick(fixed, fixed.randint(40, 80), top=500)
        have: set[str] = set()
        bw = rng.uniform(20e6, 60e6)
        for midnight, weekend in ctx.days():
            for ua in devs:
                if weekend and rng.random() > 0.1:
                    continue
                t = _at(rng, midnight, H_WORK)
                for img in rng.sample(images, rng.randint(1, 4)):
                    t = pull(ctx.log, rng, who, t, ip, ua, img, warm=img.index in have and rng.random() < 0.5,
                             bw=bw) + rng.uniform(5, 600)
                    if ctx.t0 <= t < ctx.t1:
                        have.add(img.index)
        out.append(who)
    return out


SINGLE.update({"redirect-relay": _redirect_relay, "split-egress-v6": _split_v6, "split-egress-corp": _split_corp})


def _direct_reads(log: _RedirectLog, cat: Catalog, seed, scale: float) -> _Who:
    """Someone reading the bucket with no signed URL and no 307 for that blob near it: the download
    can be joined to nobody and counts for the downloading address."""
    rng = random.Random(f"{seed}:direct-read")
    log.rng = rng
    who = _Who("direct-read", "direct-read", None, 4837)
    per_day = max(1, round(DIRECT_READS_PER_DAY * scale))
    k = 0
    t = log.t0
    while t < log.t1:
        for _ in range(round(per_day * min(DAY, log.t1 - t) / DAY) or 1):
            at = rng.uniform(t, min(t + DAY, log.t1) - 60)
            while True:
                img = rng.choice(cat.images[:300])
                digest, size = rng.choice(img.blobs)
                digest = digest.removeprefix("sha256:")
                if all(not at - 1800 <= r <= at + 600 for r in log.redirects.get(digest, ())):
                    break
            ip = _host("direct-read-4837", 10 + k % 3)
            k += 1
            who.seen[ip] = None
            log.download(_store_of(ip, log.stores), at, ip, None, img.name, digest, size, "curl/8.5.0", unsigned=True)
            log.served[ip] = log.served.get(ip, 0) + size
        t += DAY
    return who


def _backup(log: _RedirectLog, seed, scale: float) -> _Who:
    """The operator's backup job: it copies blobs the mirror has just cached, reading them with its
    own access key (S3 AuthHeader, no signature in the URI) minutes after a client's 307 for the
    same blob. No 307 handed these reads out: they count for the backup host, unjoined."""
    rng = random.Random(f"{seed}:backup")
    log.rng = rng
    who = _Who("backup", "backup", None, 64496)
    pulls = [o for o in log.objects if o["method"] == "PUT"]
    for o in rng.sample(pulls, min(len(pulls), max(1, round(BACKUP_READS_PER_DAY * scale * (log.t1 - log.t0) / DAY)))):
        at = o["t"] + rng.uniform(30, 300)
        if at >= log.t1:
            continue
        who.seen[BACKUP_ADDRESS] = None
        log.download(o["store"], at, BACKUP_ADDRESS, None, o["image"], o["digest"], o["size"], "rclone/v1.68.1",
                     unsigned=True, requester=BACKUP_REQUESTER[o["store"]])
        log.served[BACKUP_ADDRESS] = log.served.get(BACKUP_ADDRESS, 0) + o["size"]
    return who


def _expired(log: _RedirectLog, seed) -> None:
    """Now and then a client retries a signed URL after it expired: 403, not a download."""
    rng = random.Random(f"{seed}:expired")
    gets = [o for o in log.objects if o["method"] == "GET" and o["status"] == 200 and o["asker"]]
    for o in rng.sample(gets, min(len(gets), max(1, round((log.t1 - log.t0) / DAY)))):
        t = o["t"] + rng.uniform(1300, 3000)
        log.rng = rng
        log._row(o["store"], t, o["ip"], o["asker"], o["image"], o["digest"], o["size"], 243, 403, o["ua"], "GET")


def generate_redirect(days: int = 2, start: datetime = datetime(2024, 11, 18, tzinfo=UTC), seed: int = 1,
                      scale: float | dict[str, float] = 1.0, kinds: set[str] | None = None, fmt: str = "main",
                      stores: tuple[str, ...] = ("s3", "oss"), no_referer: tuple[str, ...] = (),
                      variant: str = "", until: datetime | None = None) -> Redirected:
    """A redirect-mode mirror (CRProxy with a blob cache in object storage): the same clients as
    ``generate`` (same seed, same requests) plus the kinds only this mode has — ``redirect-relay``
    (a reseller asking from one address and handing the signed URLs to customers in other ASNs:
    should be banned), ``split-egress-v6`` (IPv4 asks, IPv6 downloads, same ASN), ``split-egress-corp``
    (asks from one /24, downloads from another of the same ASN) and ``direct-read`` (a few reads of
    the bucket with no 307: unjoined) — none of them to ban but the relay.

    Every blob GET becomes a 307 with a few hundred bytes, stamped when it starts; the download
    starts 0.3-8 s later in the store that serves the asking address (its region: one of
    ``stores``, s3 / oss / logpush, fixed per address), sometimes as 2-5 Range requests (206) whose
    parts add up to the blob; a relay's customers fetch theirs 1-19 minutes later, inside the link's
    20 minutes. The signed URL carries ``referer=<asking ip>:<host>/<image>`` (CRProxy's OSS and OBS
    drivers; OBS writes the ``s3`` layout), except for the ~10% signed by an older proxy node (the
    client downloads them itself) and every link of the stores in ``no_referer`` (AWS S3 and R2:
    distribution's s3-aws driver signs a plain GetObject). The stores' logs also hold the mirror's
    own calls — a ListObjects (max-keys=1) Stat-ing each blob before its redirect (not in Logpush),
    the PUT of each blob it caches —, an operator's backup job reading fresh blobs with its own key
    (``backup``), and a few 403s for expired links.

    ``variant`` gives the actors other draws with the same catalog and addresses, and ``until``
    drops the proxy lines and store rows after it, as in ``generate`` (the demo month's days; the
    truth stays the whole span's).

    Returns ``(lines, objects, actors, truth)``: proxy lines sorted by time, ``{store: lines}``
    sorted by time, the actors, and a ``Truth``."""
    order = KINDS + REDIRECT_KINDS
    scales = _checked(days, start, scale, kinds, fmt, order)
    if not stores or set(stores) - set(STORES):
        raise ValueError(f"stores are some of {', '.join(STORES)}")
    t0 = start.timestamp()
    log = _RedirectLog(t0, t0 + days * DAY, fmt, tuple(stores), tuple(no_referer))
    cat = Catalog(seed)
    whos = _play(log, cat, seed, order[:-2], kinds, scales, variant)
    if kinds is None or "direct-read" in kinds:
        whos.append(_direct_reads(log, cat, f"{seed}{variant}", scales.get("direct-read", 1.0)))
    if kinds is None or "backup" in kinds:
        whos.append(_backup(log, f"{seed}{variant}", scales.get("backup", 1.0)))
    _expired(log, f"{seed}{variant}")
    log.rows.sort(key=lambda r: r[0])
    cut = math.inf if until is None else until.timestamp()
    lines = [line for t, line in log.rows if t < cut]
    objects, rows = {}, {}
    for store in stores:
        # a cut day's rows are the first of the whole day's (each line's draws depend only on the rows before it)
        rows[store] = sorted((o for o in log.objects if o["store"] == store and o["t"] < cut), key=lambda o: o["t"])
        objects[store] = WRITERS[store](random.Random(f"{seed}:{store}:lines"), rows[store], damaged=False)
    gets = [o for o in log.objects if o["method"] == "GET" and o["status"] in (200, 206)]
    truth = Truth(served=log.served, proxy_bytes=log.proxy_bytes, redirect_bytes=log.redirect_bytes,
                  object_bytes=sum(o["bytes"] for o in gets),
                  unjoined_bytes=sum(o["bytes"] for o in gets if o["asker"] is None and o["unsigned"]),
                  listings=sum(o["method"] == "LIST" for o in log.objects), rows=rows)
    return Redirected(lines, objects, [w.actor() for w in whos], truth)


if __name__ == "__main__":       # volumes: python sample_logs/scenarios.py [days] [scale]
    import sys
    import time
    from collections import Counter

    d = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    s = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    began = time.perf_counter()
    lines, actors = generate(days=d, scale=s)
    took = time.perf_counter() - began
    kind_of = {a: act.kind for act in actors for a in act.addresses}
    per_kind, per_bytes = Counter(), Counter()
    for line in lines:
        ip, _, rest = line.partition(" ")
        k = kind_of[ip]
        per_kind[k] += 1
        per_bytes[k] += int(rest.split('" ', 2)[1].split()[1])
    for k in KINDS:
        print(f"{k:14} {per_kind[k]:>9} lines {per_bytes[k] / 2**30:10.1f} GiB "
              f"{sum(1 for a in actors if a.kind == k):>5} actors")
    print(f"{'total':14} {len(lines):>9} lines {sum(per_bytes.values()) / 2**30:10.1f} GiB  in {took:.2f} s")
