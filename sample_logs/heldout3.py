"""Held-out labelled traffic, third set: the abusers who hide their shape and the legitimate crowds
that look like them (issue 21), for checking the rules, never for tuning them.

Written from the domain description alone (how a pull looks on the wire, the clients' user agents,
the two log formats, what each kind of client does and why), without reading the rules, their
features or thresholds, or the tuning generator (sample_logs/scenarios.py); only the interface of
sample_logs/heldout.py was followed. Everything else differs on purpose: the address blocks
(240.0.0.0/8 stands in for public IPv4, because the documentation blocks, 100.64.0.0/10 and
198.18.0.0/15 are the other generators'; 2001:db8:4000::/34 for IPv6) with other real-world AS
numbers, the image catalog and sizes, the seeds, a start on a Thursday (12 June 2025), the
mirror's log offset (+05:30) and the clients' time zones (Sao Paulo -03:00, Berlin +02:00,
New York -04:00, India +05:30), and seven days by default so that weekends exist.

``generate(days, seed, scale, fmt)`` returns the log lines (nginx ``main`` or CRProxy ``clf``) and
the actors; ``expect`` says what detection must do with each: "ban", "throttle-or-ban",
"throttle-ok" (may be throttled, never banned) or "leave" (neither). ``scale`` sizes the legitimate
crowds; an abuser's intensity is its nature and is drawn per seed from the ranges below.

Abusive archetypes (one actor each, one address, no X-Forwarded-For)

===============  ===============  ==============================================================
kind             expect           shape
===============  ===============  ==============================================================
reseller-cache   ban              a paid relay with its own blob cache on OVH or Contabo (IPv4,
                                  or IPv6 at OVH, by seed): 900-2,200 customer pulls a day,
                                  nearly flat round the clock (+-20% per hour); every pull asks
                                  the manifests (HEAD, GET by tag and by platform digest, 30% of
                                  them pinned by digest instead of tag), a blob only when its
                                  cache lacks it (one idle for 3 days may have been evicted:
                                  fetched again at 5%), a /v2/ ping now and then; half the
                                  pulls from a long tail of 2,400 images over 300+ namespaces
                                  on every registry, 30% popular images, 20% a version
                                  published since (new layers); ONE library user agent
                                  (Go-http-client, python-httpx, axios) or its customers' passed
                                  through (60+ strings), by seed
reseller-office  ban              a relay on Vultr or Linode whose 100-300 downstream clients work
                                  in Sao Paulo (-03:00): a working-day curve (lunch dip, little at
                                  night), weekends at 15-30%; 3-7 pulls a weekday each; 25-40% of
                                  the clients are their CI (cold every time), the rest developers
                                  with their own layer store; no cache in the relay: every
                                  client's missing layers are fetched again; passed-through UAs
                                  of every client kind
ci-bigimage      throttle-or-ban  one runner on Scaleway or Google Cloud re-pulling one 5-10 GiB
                                  image (one 1.5-4 GiB layer) 3-7 times a weekday and 2-4 on
                                  weekend days, no layer cache: every blob every run, plus a
                                  small image or two; 50-450 requests and 10-70 GiB a day
===============  ===============  ==============================================================

Legitimate archetypes

=============  ===========  =====================================================================
kind           expect       shape
=============  ===========  =====================================================================
ci-fleet       throttle-ok  200-600 x scale (at least 100) ephemeral runners of one company behind
                            one NAT on an enterprise ISP (Vodafone GmbH): 1.5-3 jobs a runner on a
                            Berlin (+02:00) weekday, round the clock with a day peak, 15% on
                            weekends; each job pulls 1-3 of the company's 14-30 images cold (Zipf:
                            a few dominate), the company's own ones rebuilt daily
campus-nat     throttle-ok  one university NAT on an education network (NKN): 2,000-5,000 x scale
                            (at least 500) users, 3-8% of them on a given day, every client kind
                            (docker desktop and engine, containerd/nerdctl, podman, skopeo,
                            buildkit, crane, cri-o), each with its own layer store; coursework
                            images, ML images of several GiB now and then, typos (404); India
                            (+05:30) day, evening and night, weekends at 80%
replicator     leave        a company's registry replication (harbor-registry-client or skopeo)
                            on a business link (Cogent) at 01:00-04:30 New York (-04:00): checks
                            200-500 images by HEAD every night, copies the 5-12% that changed
                            (both platforms, amd64 and arm64), each new blob once; onboards a
                            batch of new images once in the week
mobile-cgnat   leave        one carrier-grade NAT address of a mobile carrier (Airtel): 25-80
                            unrelated light users over the week, 1-3 pulls each, popular images
home           leave        80-250 x scale (at least 40) home users on ISPs (Jio, Comcast, Claro,
                            Airtel broadband; IPv4 and IPv6), 1-5 pulls in the week, evenings
small-office   leave        8-25 developers of one office on an ISP in Sao Paulo (Claro): the
                            reseller-office rhythm, at a tenth of its clients
k8s-cluster    leave        one cloud NAT (Oracle Cloud or Google Cloud) of 8-30 containerd nodes:
                            manifest HEAD of every imagePullPolicy Always cron job every 5-15
                            minutes round the clock, 1-3 rollouts a weekday, pods pinned by
                            digest, new nodes now and then pulling all they run
=============  ===========  =====================================================================

Every pull is made as its client makes it: docker pings ``/v2/`` (401), HEADs the tag when it has
the image, GETs the index by tag, the platform manifest by digest, the config and the missing
layers three at a time; containerd, nerdctl, cri-o and BuildKit resolve by HEAD and GET by digest
without a ping; podman, skopeo and crane ping and GET the manifest by tag. Paths come in CRProxy's
prefix style (``/v2/docker.io/library/nginx/...``; docker users also write ``docker.io/nginx``,
which nobody rewrites), in ``registry-mirrors`` style for docker (``/v2/library/nginx/...``) and in
containerd's ``?ns=`` style. Blobs are streamed (200): a 307 would move the bytes into an
object-storage log this set does not write. In ``clf`` every actor loses its user agent (and there
is no X-Forwarded-For in either format): then only the shape is left.
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

START = datetime(2025, 6, 12, tzinfo=UTC)        # a Thursday
LOG_TZ = timezone(timedelta(hours=5, minutes=30))  # the mirror logs India time
DAY = 86400
ABUSIVE = {"reseller-cache": "ban", "reseller-office": "ban", "ci-bigimage": "throttle-or-ban"}
LEGIT = {"ci-fleet": "throttle-ok", "campus-nat": "throttle-ok", "replicator": "leave",
         "mobile-cgnat": "leave", "home": "leave", "small-office": "leave", "k8s-cluster": "leave"}

# (network, ASN, organisation as GeoLite2-ASN names it, hosting?)
NETWORKS = [
    ("240.1.0.0/16", 16276, "OVH SAS", True),
    ("240.2.0.0/16", 51167, "Contabo GmbH", True),
    ("240.3.0.0/16", 20473, "AS-CHOOPA", True),                       # Vultr
    ("240.4.0.0/16", 63949, "Akamai Connected Cloud", True),          # Linode
    ("240.5.0.0/16", 12876, "SCALEWAY S.A.S.", True),
    ("240.6.0.0/16", 396982, "GOOGLE-CLOUD-PLATFORM", True),
    ("240.7.0.0/16", 31898, "ORACLE-BMC-31898", True),
    ("240.8.0.0/16", 3209, "Vodafone GmbH", False),
    ("240.9.0.0/16", 55824, "NKN Core Network", False),
    ("240.10.0.0/16", 174, "COGENT-174", False),
    ("240.11.0.0/16", 45609, "Bharti Airtel Ltd. AS for GPRS Service", False),
    ("240.12.0.0/15", 55836, "Reliance Jio Infocomm Limited", False),
    ("240.14.0.0/16", 7922, "COMCAST-7922", False),
    ("240.15.0.0/16", 28573, "Claro NXT Telecomunicacoes Ltda", False),
    ("240.16.0.0/16", 24560, "Bharti Airtel Ltd., Telemedia Services", False),
    ("2001:db8:4000::/38", 16276, "OVH SAS", True),
    ("2001:db8:4400::/38", 20473, "AS-CHOOPA", True),
    ("2001:db8:4800::/38", 55836, "Reliance Jio Infocomm Limited", False),
    ("2001:db8:4c00::/38", 7922, "COMCAST-7922", False),
    ("2001:db8:5000::/38", 396982, "GOOGLE-CLOUD-PLATFORM", True),
    ("2001:db8:5400::/38", 28573, "Claro NXT Telecomunicacoes Ltda", False),
]
ASN_OF: dict[int, list[str]] = {}
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
    expect: str                  # "ban" | "throttle-or-ban" | "throttle-ok" | "leave"
    asn: int
    addresses: list[str] = field(default_factory=list)
    prefix: str | None = None    # unused here (no rotators): kept for heldout.Actor's shape


# ---------------------------------------------------------------------------- images
def _digest(*parts) -> str:
    return "sha256:" + hashlib.sha256(("h3/" + "/".join(map(str, parts))).encode()).hexdigest()


@dataclass(frozen=True)
class Image:
    registry: str
    repo: str
    tag: str
    index: tuple[str, int]                   # the tag's image index: digest, bytes
    platform: tuple[str, int]                # the linux/amd64 manifest
    config: tuple[str, int]
    layers: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        return sum(s for _, s in self.layers)

    def arm64(self) -> Image:
        """The linux/arm64 manifest of the same index: its own config and layers, similar sizes."""
        key = (self.index[0], "arm64")
        return Image(self.registry, self.repo, self.tag, self.index, (_digest(*key, "m"), self.platform[1]),
                     (_digest(*key, "c"), self.config[1]),
                     tuple((_digest(*key, i), int(s * 0.93)) for i, (_, s) in enumerate(self.layers)))

    def bump(self, tag: str, changed: int, build: str = "") -> Image:
        """A new build: the base layers kept, the top ``changed`` rebuilt (``build`` tells two
        builds pushed under one tag apart)."""
        keep = self.layers[:max(0, len(self.layers) - changed)]
        key = (self.registry, self.repo, tag, build)
        new = tuple((_digest(*key, "l", i), s) for i, (_, s) in enumerate(self.layers[len(keep):]))
        return Image(self.registry, self.repo, tag, (_digest(*key, "i"), self.index[1]), (_digest(*key, "m"),
                     self.platform[1]), (_digest(*key, "c"), self.config[1]), keep + new)


def _image(rng, registry: str, repo: str, tag: str, mb: float, nlayers: int, big: float = 0.0) -> Image:
    """``big``: the share of the bytes in the one large layer (a CUDA or model layer)."""
    key = (registry, repo, tag)
    weights = [rng.lognormvariate(0, 1.2) for _ in range(nlayers)]
    total = sum(weights)
    sizes = [max(120, int(mb * 1e6 * (1 - big) * w / total)) for w in weights]
    if big:
        sizes[rng.randrange(1, nlayers)] += int(mb * 1e6 * big)
    return Image(registry, repo, tag, (_digest(*key, "i"), rng.randint(900, 9800)),
                 (_digest(*key, "m"), rng.randint(480, 3600)), (_digest(*key, "c"), rng.randint(1400, 22000)),
                 tuple((_digest(*key, "l", i), s) for i, s in enumerate(sizes)))


# registry, repository, tag, MB, layers: what most people pull
POPULAR = [
    ("docker.io", "library/nginx", "1.27.3-alpine", 21, 8), ("docker.io", "library/nginx", "stable", 68, 7),
    ("docker.io", "library/redis", "7.2.6", 41, 6), ("docker.io", "library/postgres", "16.6", 152, 14),
    ("docker.io", "library/postgres", "15-alpine", 95, 11), ("docker.io", "library/python", "3.13-slim", 44, 4),
    ("docker.io", "library/python", "3.11", 370, 7), ("docker.io", "library/node", "22-bookworm", 400, 7),
    ("docker.io", "library/node", "18-alpine", 48, 4), ("docker.io", "library/golang", "1.22-alpine", 85, 5),
    ("docker.io", "library/alpine", "latest", 3, 1), ("docker.io", "library/ubuntu", "noble", 29, 1),
    ("docker.io", "library/debian", "12", 48, 1), ("docker.io", "library/busybox", "latest", 2, 1),
    ("docker.io", "library/mariadb", "11.4", 110, 9), ("docker.io", "library/rabbitmq", "3.13-management", 105, 10),
    ("docker.io", "library/httpd", "2.4", 58, 6), ("docker.io", "library/openjdk", "17-jdk-slim", 210, 4),
    ("docker.io", "library/wordpress", "6.6-php8.2", 240, 21), ("docker.io", "library/traefik", "v3.2", 50, 5),
    ("docker.io", "library/elasticsearch", "8.15.3", 640, 10),
    ("docker.io", "library/sonarqube", "10-community", 560, 9),
    ("docker.io", "library/jenkins", "lts-jdk17", 280, 12), ("docker.io", "library/php", "8.3-fpm", 170, 11),
    ("docker.io", "hashicorp/terraform", "1.9", 30, 4), ("docker.io", "bitnami/redis", "7.4", 40, 3),
    ("docker.io", "bitnami/nginx", "1.27", 38, 3), ("docker.io", "portainer/portainer-ce", "2.21.4", 90, 9),
    ("docker.io", "jupyter/base-notebook", "latest", 320, 19), ("docker.io", "apache/airflow", "2.10.3", 480, 17),
    ("gcr.io", "distroless/base-debian12", "latest", 9, 3), ("gcr.io", "google-containers/pause", "3.2", 1, 1),
    ("registry.k8s.io", "kube-apiserver", "v1.30.6", 32, 5), ("registry.k8s.io", "pause", "3.9", 1, 1),
    ("registry.k8s.io", "metrics-server/metrics-server", "v0.7.2", 19, 4),
    ("registry.k8s.io", "ingress-nginx/controller", "v1.12.0", 108, 13),
    ("quay.io", "prometheus/alertmanager", "v0.27.0", 30, 6), ("quay.io", "argoproj/argocd", "v2.13.1", 170, 14),
    ("quay.io", "keycloak/keycloak", "26.0", 210, 7), ("quay.io", "cilium/cilium", "v1.16.4", 190, 12),
    ("ghcr.io", "home-assistant/home-assistant", "stable", 560, 20),
    ("ghcr.io", "open-webui/open-webui", "main", 1900, 16), ("mcr.microsoft.com", "dotnet/runtime", "8.0", 75, 5),
    ("mcr.microsoft.com", "playwright", "v1.49.0-noble", 850, 9), ("k8s.gcr.io", "pause", "3.1", 1, 1),
    ("mcr.microsoft.com", "azure-cli", "2.67.0", 340, 11),
]
# the images of several GiB that ML users and one CI runner pull
HUGE = [
    ("nvcr.io", "nvidia/pytorch", "24.12-py3", 10400, 46),
    ("nvcr.io", "nvidia/cuda", "12.4.1-devel-ubuntu22.04", 4400, 14),
    ("docker.io", "pytorch/pytorch", "2.4.1-cuda12.1-cudnn9-devel", 9100, 22),
    ("docker.io", "vllm/vllm-openai", "v0.6.4", 8300, 28), ("nvcr.io", "nvidia/tritonserver", "24.11-py3", 7200, 31),
    ("docker.io", "tensorflow/tensorflow", "2.18.0-gpu", 4600, 18),
    ("ghcr.io", "huggingface/text-generation-inference", "2.4", 5800, 24),
]
TAIL_REGISTRIES = (["docker.io"] * 10 + ["ghcr.io"] * 4 + ["quay.io"] * 2
                   + ["gcr.io", "mcr.microsoft.com", "registry.k8s.io", "nvcr.io", "k8s.gcr.io"])
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "be", "do", "fa", "gu", "ho", "ji", "pe", "sa", "ty",
             "wen", "xo", "qua", "ri", "sol", "tor", "vin"]
NOUNS = ["api", "web", "worker", "ingest", "scheduler", "notifier", "gateway", "frontend", "backend", "etl",
         "exporter", "operator", "controller", "agent", "bot", "dashboard", "mailer", "indexer", "cron", "proxy",
         "auth", "billing", "search", "media", "render", "sync", "relay", "migrator", "toolbox", "runner"]


def _name(rng) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


@lru_cache(maxsize=8)
def catalog(seed: str) -> tuple[list[Image], list[Image], list[Image]]:
    """Popular, long-tail (2,400 images over 300+ namespaces) and huge images; sizes per seed."""
    rng = random.Random(f"pullwarden-heldout3:{seed}:catalog")
    popular = [_image(rng, r, p, t, mb, n) for r, p, t, mb, n in POPULAR]
    huge = [_image(rng, r, p, t, mb, n, big=rng.uniform(0.25, 0.45)) for r, p, t, mb, n in HUGE]
    namespaces = sorted({_name(rng) + rng.choice(["", "-io", "labs", "hq", str(rng.randint(1, 99))])
                         for _ in range(420)})
    tail, seen = [], set()
    while len(tail) < 2400:
        registry = rng.choice(TAIL_REGISTRIES)
        repo = f"{rng.choice(namespaces)}/{rng.choice(NOUNS)}" + rng.choice(["", "", f"-{_name(rng)}"])
        if (registry, repo) in seen:
            continue
        seen.add((registry, repo))
        mb = min(2500, max(1.5, rng.lognormvariate(math.log(90), 1.1)))
        tag = rng.choice(["latest", "main", f"v{rng.randint(0, 3)}.{rng.randint(0, 24)}.{rng.randint(0, 12)}",
                          f"{rng.randint(1, 9)}.{rng.randint(0, 9)}", f"sha-{rng.getrandbits(28):07x}"])
        tail.append(_image(rng, registry, repo, tag, mb, rng.randint(2, 16)))
    return popular, tail, huge


# ---------------------------------------------------------------------------- clients
DOCKER = [("24.0.5", "1.20.6"), ("24.0.7", "1.20.10"), ("25.0.3", "1.21.7"), ("26.1.3", "1.21.10"),
          ("26.1.5", "1.21.11"), ("27.0.3", "1.21.11"), ("27.2.1", "1.22.7"), ("27.3.1", "1.22.7"),
          ("27.4.1", "1.22.10"), ("27.5.1", "1.22.11"), ("28.1.1", "1.23.8")]
KERNELS = {"linux": ["6.8.0-49-generic", "5.15.0-126-generic", "6.1.0-28-amd64", "5.14.0-503.14.1.el9_5.x86_64",
                     "6.11.0-1006-azure", "6.5.0-1025-gcp", "6.10.14-200.fc40.x86_64"],
           "darwin": ["6.10.14-linuxkit", "6.6.31-linuxkit"], "windows": ["5.15.167.4-microsoft-standard-WSL2"]}
OTHERS = {
    "containerd": ["containerd/v1.7.24", "containerd/v1.7.23", "containerd/v1.6.36", "containerd/2.0.1",
                   "containerd/1.7.12+unknown"],
    "nerdctl": ["containerd/v1.7.24", "containerd/2.0.1"],       # nerdctl resolves with containerd's UA
    "cri-o": ["cri-o/1.31.2 go/go1.22.9 os/linux arch/amd64", "cri-o/1.30.8 go/go1.22.8 os/linux arch/amd64"],
    "podman": ["containers/5.33.0 (github.com/containers/image)", "containers/5.29.2 (github.com/containers/image)",
               "containers/5.32.2 (github.com/containers/image)"],
    "skopeo": ["skopeo/1.17.0", "skopeo/1.13.3", "skopeo/1.16.1"],
    "buildkit": ["buildkit/v0.17 moby/v27.4", "buildkit/v0.18 moby/v27.5", "buildkit/v0.15"],
    "crane": ["crane/v0.20.2 go-containerregistry/v0.20.2", "go-containerregistry/v0.19.2"],
}
# how each kind resolves a tag: ping /v2/ first?, HEAD first?, the index fetched by digest after
# the HEAD (containerd's resolver) or by tag. "lib": a replication tool (stops at the HEAD when the
# digest is the one it has); "relay": a reseller's resolver, which asks every manifest each time
BEHAVIOUR = {"docker": (True, "when-held", "tag"), "containerd": (False, "always", "digest"),
             "nerdctl": (False, "always", "digest"), "cri-o": (True, "never", "tag"),
             "buildkit": (False, "always", "digest"), "podman": (True, "never", "tag"),
             "skopeo": (True, "never", "tag"), "crane": (True, "never", "tag"), "lib": (False, "always", "tag"),
             "relay": (False, "always", "tag")}


@dataclass
class Client:
    kind: str                    # a key of BEHAVIOUR
    ua: str
    h2: bool = False
    have: set | None = None      # layers held (None: nothing kept between pulls)
    images: list = field(default_factory=list)   # what this one usually pulls


def docker_ua(rng, os_: str | None = None, sdk: bool = False) -> str:
    version, go = rng.choice(DOCKER)
    os_ = os_ or rng.choice(["linux", "linux", "darwin", "windows"])
    kernel = rng.choice(KERNELS[os_])
    arch = "arm64" if os_ == "darwin" and rng.random() < 0.7 else "amd64"
    upstream = "Go-http-client/1.1" if sdk else f"Docker-Client/{version} \\({os_}\\)"
    commit = hashlib.md5(version.encode()).hexdigest()[:7]
    return (f"docker/{version} go/go{go} git-commit/{commit} kernel/{kernel} os/linux arch/{arch} "
            f"UpstreamClient({upstream})")


def client(rng, kinds: dict[str, float], keep: bool = True) -> Client:
    kind = rng.choices(list(kinds), list(kinds.values()))[0]
    ua = docker_ua(rng) if kind == "docker" else rng.choice(OTHERS[kind])
    return Client(kind, ua, h2=kind not in ("docker", "lib", "relay"), have=set() if keep else None)


ANYONE = {"docker": 55, "containerd": 9, "nerdctl": 4, "podman": 12, "skopeo": 4, "buildkit": 9, "crane": 3,
          "cri-o": 4}


# ---------------------------------------------------------------------------- time
class Zone:
    """Local days and hours of one UTC offset, as seconds from the start of the log."""

    def __init__(self, hours: float, start: datetime):
        self.offset, self.start = hours * 3600, start

    def at(self, day: int, hour: float) -> float:
        return day * DAY - self.offset + hour * 3600

    def weekday(self, day: int) -> bool:
        return (self.start + timedelta(days=day)).weekday() < 5

    def sample(self, rng, day: int, weights: list[float]) -> float:
        return self.at(day, rng.choices(range(24), weights)[0] + rng.random())


OFFICE_W = [0.15, 0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.5, 6, 9, 10, 9.5, 4, 7, 9.5, 10, 9, 7, 3.5, 1.8, 1, 0.7,
            0.4, 0.25]
CAMPUS_W = [3.5, 2.2, 1.2, 0.6, 0.3, 0.2, 0.3, 0.6, 1.2, 2.5, 4, 5, 5, 4.5, 5.5, 6, 6, 6, 6.5, 7.5, 8.5, 8.5,
            7, 5]
FLEET_W = [2, 1.6, 1.5, 1.5, 1.6, 2, 3, 6, 10, 12, 12, 11, 8, 11, 12, 12, 11, 9, 6, 4, 3, 3, 2.5, 2]
EVENING_W = [1.2, 0.5, 0.2, 0.1, 0.1, 0.2, 0.6, 1.5, 2, 2.5, 2.5, 2.5, 3, 2.5, 2.5, 2.5, 3, 3.5, 4.5, 6, 7,
             7, 5, 2.5]


# ---------------------------------------------------------------------------- addresses
class Addresses:
    """Hands out addresses, each to one actor; an abuser's /24 or /64 is its own, so that a range
    decision against it can only hit it."""

    def __init__(self, rng):
        self.rng, self.used, self.reserved = rng, set(), set()

    @staticmethod
    def _block(addr):
        return ipaddress.ip_network(f"{addr}/{24 if addr.version == 4 else 64}", strict=False)

    def one(self, asn: int, v6: bool = False, own_block: bool = False) -> str:
        nets = [ipaddress.ip_network(n) for n in ASN_OF[asn] if (":" in n) == v6]
        while True:
            net = self.rng.choice(nets)
            addr = net[self.rng.randrange(2, min(net.num_addresses, 1 << 48) - 2)]
            if addr in self.used or self._block(addr) in self.reserved:
                continue
            if own_block and any(self._block(a) == self._block(addr) for a in self.used):
                continue
            self.used.add(addr)
            if own_block:
                self.reserved.add(self._block(addr))
            return str(addr)


# ---------------------------------------------------------------------------- requests
# a request: (start s, end s, address, method, uri, status, bytes, user agent, http/2?)

def _path(img: Image, style: str) -> tuple[str, str]:
    """The repository part of the path and the query, as the client's configuration writes them."""
    repo = img.repo
    if img.registry == "docker.io" and style == "short" and repo.startswith("library/"):
        return f"/v2/docker.io/{repo[8:]}", ""          # `docker pull m.example.io/docker.io/nginx`
    if style == "mirror" and img.registry == "docker.io":
        return f"/v2/{repo}", ""                        # daemon.json registry-mirrors
    if style == "ns":
        return f"/v2/{repo}", f"?ns={img.registry}"     # containerd hosts.toml
    return f"/v2/{img.registry}/{repo}", ""


class Traffic:
    def __init__(self):
        self.reqs: list[tuple] = []

    def add(self, t, ip, c: Client, method, uri, status, nbytes, rate=25e6):
        self.reqs.append((t, t + 0.015 + nbytes / rate, ip, method, uri, status, nbytes, c.ua, c.h2))

    def pull(self, rng, t: float, ip: str, c: Client, img: Image, style: str = "prefix",
             by_digest: bool = False, missing_tag: bool = False, blobs=None, platforms=(None,)) -> float:
        """One pull as client ``c`` makes it; returns when it ended. ``blobs(digest)`` says whether
        to fetch a blob (default: what ``c.have`` lacks); ``missing_tag``: a tag that does not exist."""
        ping, head, index_by = BEHAVIOUR[c.kind]
        base, q = _path(img, style)
        ref = img.index[0] if by_digest else img.tag
        rate = rng.uniform(4e6, 60e6)
        if ping:
            self.add(t, ip, c, "GET", "/v2/", 401, 87)
            t += rng.uniform(0.03, 0.3)
        if missing_tag:
            ref = rng.choice(["latest", "lastest", "v1", img.tag + "-dev", "stable"])
            if head != "never":
                self.add(t, ip, c, "HEAD", f"{base}/manifests/{ref}{q}", 404, 0)
                if c.kind != "docker":
                    return t + 0.05
            self.add(t + 0.05, ip, c, "GET", f"{base}/manifests/{ref}{q}", 404, 174)
            return t + 0.1
        fetch = blobs or (lambda d: c.have is None or d not in c.have)
        held = all(not fetch(d) for d, _ in img.layers)
        if head == "always" or (head == "when-held" and held and c.have is not None):
            self.add(t, ip, c, "HEAD", f"{base}/manifests/{ref}{q}", 200, 0)
            t += rng.uniform(0.02, 0.15)
            if held and c.kind != "relay":
                return t                                 # up to date: the HEAD was the whole pull
        index_ref = img.index[0] if index_by == "digest" else ref
        self.add(t, ip, c, "GET", f"{base}/manifests/{index_ref}{q}", 200, img.index[1])
        t += rng.uniform(0.03, 0.25)
        end = t
        for plat in platforms:
            p = img if plat is None else plat
            self.add(t, ip, c, "GET", f"{base}/manifests/{p.platform[0]}{q}", 200, p.platform[1])
            t += rng.uniform(0.03, 0.25)
            if fetch(p.config[0]) or c.kind not in ("lib", "relay"):
                self.add(t, ip, c, "GET", f"{base}/blobs/{p.config[0]}{q}", 200, p.config[1])
            lanes = [t + 0.08] * 3                       # three layers at a time
            for digest, size in p.layers:
                if not fetch(digest):
                    continue
                i = lanes.index(min(lanes))
                self.add(lanes[i], ip, c, "GET", f"{base}/blobs/{digest}{q}", 200, size, rate)
                lanes[i] += 0.04 + size / rate
                if c.have is not None:
                    c.have.add(digest)
            end = max(lanes)
            t = end
        return end


def _style(rng, c: Client) -> str:
    if c.kind in ("containerd", "cri-o", "nerdctl") and rng.random() < 0.6:
        return "ns"
    if c.kind == "docker":
        return rng.choices(["prefix", "short", "mirror"], [5, 2, 3])[0]
    return "prefix"


# ---------------------------------------------------------------------------- abusers
def _abusers(tr: Traffic, seed, days: int, start: datetime, addr: Addresses) -> list[Actor]:
    def rng_of(name):
        return random.Random(f"pullwarden-heldout3:{seed}:{name}")
    popular, tail, huge = catalog(seed)
    actors = []

    def actor(kind, asns):
        a = Actor(kind, kind, True, ABUSIVE[kind], rng_of(f"{kind}/asn").choice(asns))
        actors.append(a)
        return a, rng_of(kind)

    # a relay with a blob cache: the manifests of every customer pull, a blob once
    a, rng = actor("reseller-cache", [16276, 51167])
    ip = addr.one(a.asn, v6=a.asn == 16276 and rng.random() < 0.4, own_block=True)
    a.addresses = [ip]
    if rng.random() < 0.5:
        one = Client("relay", rng.choice(["Go-http-client/1.1", "Go-http-client/2.0", "python-httpx/0.27.2",
                                        "axios/1.7.9"]))
        pool = [one]
    else:
        pool = [client(rng, ANYONE, keep=False) for _ in range(70)]
        for c in pool:
            c.kind = "relay"                             # the relay's own resolver, the customer's UA
    last: dict[str, int] = {}                            # blob -> the day the relay last served it

    def fetch(d):
        """Fetched when not cached; a blob nobody asked for in three days may have been evicted."""
        return d not in last or (day - last[d] >= 3 and rng.random() < 0.05)

    hourly = [rng.uniform(0.8, 1.2) for _ in range(24)]
    zone = Zone(0, start)
    newer: list[Image] = []
    for day in range(days):
        for _ in range(rng.randint(900, 2200)):
            r = rng.random()
            if r < 0.15:                                 # a version published since: new layers on top
                src = rng.choice(tail + popular)
                img = src.bump(_build_tag(src.tag, day, rng.randint(0, 9)), rng.randint(1, 3))
                newer.append(img)
            elif r < 0.2 and newer:
                img = rng.choice(newer)
            elif r < 0.7:
                img = rng.choice(tail)
            else:
                img = popular[min(len(popular) - 1, int(rng.paretovariate(1.2)) - 1)]
            c = rng.choice(pool)
            t = zone.sample(rng, day, hourly)
            if rng.random() < 0.04:
                tr.add(t - 0.2, ip, c, "GET", "/v2/", 401, 87)
            tr.pull(rng, t, ip, c, img, style=rng.choice(["prefix"] * 9 + ["short"]),
                    by_digest=rng.random() < 0.3, missing_tag=rng.random() < 0.02, blobs=fetch)
            for d, _ in (img.config, *img.layers):
                last[d] = day

    # a relay for one time zone's office workers, no cache
    a, rng = actor("reseller-office", [20473, 63949])
    ip = addr.one(a.asn, own_block=True)
    a.addresses = [ip]
    sp = Zone(-3, start)
    mine = [i for i in tail if i.size < 1.5e9]
    clients, ci_share = [], rng.uniform(0.25, 0.4)
    for _ in range(rng.randint(100, 300)):
        c = client(rng, ANYONE, keep=rng.random() > ci_share)   # CI runners keep nothing
        c.images = rng.sample(popular, rng.randint(4, 9)) + rng.sample(mine, rng.randint(3, 8))
        clients.append(c)
    weekend = rng.uniform(0.15, 0.3)
    for day in range(-1, days + 1):
        share = 1.0 if sp.weekday(day) else weekend
        for c in clients:
            for _ in range(_poisson(rng, rng.uniform(3, 7) * share)):
                img = rng.choice(c.images)
                if rng.random() < 0.15:
                    img = img.bump(_build_tag(img.tag, day, rng.randint(0, 5)), rng.randint(1, 2))
                tr.pull(rng, sp.sample(rng, day, OFFICE_W), ip, c, img, style=_style(rng, c),
                        missing_tag=rng.random() < 0.015)

    # a CI runner re-pulling one very large image, cold every time
    a, rng = actor("ci-bigimage", [12876, 396982])
    ip = addr.one(a.asn, own_block=True)
    a.addresses = [ip]
    big = [i for i in huge if 5e9 <= i.size <= 1.1e10]
    img = rng.choice(big)
    small = rng.sample([i for i in popular if i.size < 1e8], 2)
    c = Client("docker", docker_ua(rng, "linux", sdk=True))
    zone = Zone(rng.choice([-4, 1, 2, 5.5]), start)
    for day in range(-1, days + 1):
        runs = rng.randint(3, 7) if zone.weekday(day) else rng.randint(2, 4)
        for _ in range(runs):
            t = zone.sample(rng, day, OFFICE_W if runs > 3 else [1] * 24)
            t = tr.pull(rng, t, ip, c, img)
            for s in small[:rng.randint(0, 2)]:
                t = tr.pull(rng, t + rng.uniform(20, 600), ip, c, s)
    return actors


def _build_tag(tag: str, day: int, n: int) -> str:
    """The tag of a build pushed on ``day``: ``v1.4.2-20250613.3``."""
    return f"{tag}-{START + timedelta(days=day):%Y%m%d}.{n}"


def _poisson(rng, mean: float) -> int:
    n, p, limit = 0, 1.0, math.exp(-mean)
    while True:
        p *= rng.random()
        if p < limit:
            return n
        n += 1


# ---------------------------------------------------------------------------- legitimate
def _legit(tr: Traffic, seed, days: int, start: datetime, scale: float, addr: Addresses) -> list[Actor]:
    def rng_of(name):
        return random.Random(f"pullwarden-heldout3:{seed}:{name}")
    popular, tail, huge = catalog(seed)
    actors = []

    def actor(kind, asn, name=None):
        a = Actor(name or kind, kind, False, LEGIT[kind], asn)
        actors.append(a)
        return a, rng_of(name or kind)

    # an enterprise CI fleet: new runners, so every job pulls its images cold
    a, rng = actor("ci-fleet", 3209)
    ip = addr.one(3209)
    a.addresses = [ip]
    berlin = Zone(2, start)
    company = rng.choice(["acme-platform", "northwind", "contoso-eng", "initech"])
    own = [_image(rng, "ghcr.io", f"{company}/{n}", "main", rng.uniform(150, 1400), rng.randint(6, 14))
           for n in rng.sample(["ci-base", "build-jdk21", "build-node22", "e2e-chromium", "terraform-runner",
                                "lint", "sonar-scanner", "helm-deploy", "python-ml", "db-migrate", "go-build",
                                "android-sdk"], rng.randint(6, 12))]
    bases = rng.sample([i for i in popular if i.registry == "docker.io"], rng.randint(8, 18))
    images = own + bases
    zipf = [1 / (k + 1) ** 1.1 for k in range(len(images))]
    rng.shuffle(zipf)
    uas = [docker_ua(rng, "linux", sdk=True) for _ in range(2)]
    runners = max(100, int(rng.randint(200, 600) * scale))
    for day in range(-1, days + 1):
        if berlin.weekday(day):
            for k in rng.sample(range(len(own)), rng.randint(2, 5)):   # the nightly builds of its own images
                own_k = images[k]
                images[k] = own_k.bump(_build_tag("main", day, k), rng.randint(1, 2))
        jobs = int(runners * (rng.uniform(1.5, 3) if berlin.weekday(day) else rng.uniform(0.1, 0.2)))
        for _ in range(jobs):
            t = berlin.sample(rng, day, FLEET_W if berlin.weekday(day) else [1] * 24)
            c = (Client("docker", rng.choice(uas)) if rng.random() < 0.8
                 else Client("buildkit", "buildkit/v0.17 moby/v27.4", h2=True))
            for img in {id(i): i for i in rng.choices(images, zipf, k=rng.randint(1, 3))}.values():
                t = tr.pull(rng, t, ip, c, img) + rng.uniform(0.5, 5)

    # a campus NAT: thousands of users, every client kind, day and night
    a, rng = actor("campus-nat", 55824)
    ip = addr.one(55824)
    a.addresses = [ip]
    india = Zone(5.5, start)
    courses = [rng.sample(popular, 4) + rng.sample(tail, 4) for _ in range(12)]
    users = []
    for _ in range(max(500, int(rng.randint(2000, 5000) * scale))):
        c = client(rng, {"docker": 45, "containerd": 6, "nerdctl": 5, "podman": 14, "skopeo": 5, "buildkit": 10,
                         "crane": 3, "cri-o": 3})
        c.images = rng.choice(courses) + rng.sample(popular, 3)
        users.append(c)
    for day in range(-1, days + 1):
        share = rng.uniform(0.03, 0.08) * (1 if india.weekday(day) else 0.8)
        for c in rng.sample(users, int(len(users) * share)):
            for _ in range(rng.randint(1, 4)):
                img = rng.choice(huge) if rng.random() < 0.02 else rng.choice(c.images)
                tr.pull(rng, india.sample(rng, day, CAMPUS_W), ip, c, img, style=_style(rng, c),
                        missing_tag=rng.random() < 0.03)

    # a registry replicator: every image checked each night, the changed ones copied, each blob once
    a, rng = actor("replicator", 174)
    ip = addr.one(174)
    a.addresses = [ip]
    ny = Zone(-4, start)
    c = Client("lib", rng.choice(["harbor-registry-client", "skopeo/1.16.1"]))
    held: set = set()
    mirrored = rng.sample(popular, 20) + rng.sample(tail, rng.randint(180, 480))
    pending = rng.sample([i for i in tail if i not in mirrored], rng.randint(20, 40))
    onboard = rng.randrange(1, max(2, days - 1))
    gone = set(rng.sample(range(len(mirrored)), 3))
    for img in mirrored:                                 # replicated before the log begins
        held.update(d for d, _ in (img.config, *img.layers, img.arm64().config, *img.arm64().layers))

    def fetch(d):
        return d not in held

    for day in range(days + 1):
        if day == onboard:
            mirrored += pending
        t = ny.at(day, 1 + rng.random() * 0.3)
        for k, img in enumerate(mirrored):
            if k in gone:
                tr.add(t, ip, c, "HEAD", f"{_path(img, 'prefix')[0]}/manifests/{img.tag}", 404, 0)
                t += rng.uniform(2, 12)
                continue
            if rng.random() < rng.uniform(0.05, 0.12):
                img = mirrored[k] = img.bump(img.tag, rng.randint(1, 3), build=str(day))   # the tag moved
            t = tr.pull(rng, t, ip, c, img, blobs=fetch, platforms=(img, img.arm64()))
            for p in (img, img.arm64()):
                held.update(d for d, _ in (p.config, *p.layers))
            t += rng.uniform(2, 16)

    # a mobile carrier's CGNAT address: dozens of unrelated light users
    a, rng = actor("mobile-cgnat", 45609)
    ip = addr.one(45609)
    a.addresses = [ip]
    for _ in range(rng.randint(25, 80)):
        c = client(rng, {"docker": 70, "podman": 20, "containerd": 5, "crane": 5})
        for _ in range(rng.randint(1, 3)):
            day = rng.randrange(days)
            tr.pull(rng, india.sample(rng, day, EVENING_W), ip, c, _favourite(rng, popular, tail),
                    style=_style(rng, c), missing_tag=rng.random() < 0.03)

    # home users
    n = max(40, int(rng_of("home").randint(80, 250) * scale))
    for i in range(n):
        a, rng = actor("home", 0, f"home-{i}")
        v6 = rng.random() < 0.25
        a.asn = rng.choice([55836, 7922, 28573] if v6 else [55836, 7922, 28573, 24560])
        a.addresses = [addr.one(a.asn, v6=v6)]
        zone = Zone({55836: 5.5, 24560: 5.5, 7922: -4, 28573: -3}[a.asn], start)
        c = client(rng, ANYONE)
        for _ in range(rng.randint(1, 5)):
            img = rng.choice(huge) if rng.random() < 0.03 else _favourite(rng, popular, tail)
            tr.pull(rng, zone.sample(rng, rng.randrange(days), EVENING_W), a.addresses[0], c, img,
                    style=_style(rng, c), missing_tag=rng.random() < 0.03)

    # a small office in Sao Paulo: the office-hours relay's rhythm, on an ISP, a tenth of its clients
    a, rng = actor("small-office", 28573)
    ip = addr.one(28573)
    a.addresses = [ip]
    sp = Zone(-3, start)
    stack = rng.sample(popular, 8) + rng.sample(tail, 6)
    devs = [client(rng, {"docker": 80, "podman": 10, "buildkit": 10}) for _ in range(rng.randint(8, 25))]
    for day in range(days + 1):
        if not sp.weekday(day):
            continue
        for k in rng.sample(range(len(stack)), 2):
            stack[k] = stack[k].bump(_build_tag(stack[k].tag.split("-2025")[0], day, 0), 1)
        for c in devs:
            for _ in range(rng.randint(0, 5)):
                tr.pull(rng, sp.sample(rng, day, OFFICE_W), ip, c, rng.choice(stack), style=_style(rng, c))

    # a Kubernetes cluster behind a cloud NAT, its team in Central Europe
    a, rng = actor("k8s-cluster", rng_of("k8s-cluster/asn").choice([31898, 396982]))
    ip = addr.one(a.asn)
    a.addresses = [ip]
    cet = Zone(2, start)
    workload = rng.sample(popular, 10) + rng.sample(tail, rng.randint(6, 20))
    system = [i for i in popular if i.registry in ("registry.k8s.io", "quay.io")][:6]
    nodes = [Client("containerd", "containerd/v1.7.24", h2=True,
                    have={d for i in workload + system for d, _ in (i.config, *i.layers)})
             for _ in range(rng.randint(8, 30))]
    cron = rng.sample(workload, rng.randint(3, 8))
    pinned = set(rng.sample(range(len(workload)), len(workload) // 3))
    for day in range(days + 1):
        for img in cron:                                 # imagePullPolicy: Always: a HEAD each run
            every = rng.uniform(300, 900)
            t = day * DAY + rng.uniform(0, every)
            while t < (day + 1) * DAY:
                tr.pull(rng, t, ip, rng.choice(nodes), img, style="ns")
                t += every
        for r in range(rng.randint(1, 3) if cet.weekday(day) else 0):
            k = rng.randrange(len(workload))
            tag = _build_tag(workload[k].tag.split("-2025")[0], day, r)
            workload[k] = workload[k].bump(tag, rng.randint(1, 3))
            t0 = cet.sample(rng, day, OFFICE_W)
            for node in rng.sample(nodes, rng.randint(2, len(nodes))):
                tr.pull(rng, t0 + rng.uniform(0, 300), ip, node, workload[k], style="ns", by_digest=k in pinned)
        if rng.random() < 0.4:                           # the autoscaler adds a node: it pulls all it runs
            node = Client("containerd", "containerd/v1.7.24", h2=True, have=set())
            nodes.append(node)
            t0 = day * DAY + rng.uniform(0, DAY)
            for img in system + rng.sample(workload, 6):
                t0 = tr.pull(rng, t0, ip, node, img, style="ns")
    return actors


def _favourite(rng, popular, tail) -> Image:
    if rng.random() < 0.15:
        return rng.choice(tail)
    return popular[min(len(popular) - 1, int(rng.paretovariate(1.0)) - 1)]


# ---------------------------------------------------------------------------- rendering
def _stamp(start: datetime, seconds: float) -> str:
    return (start + timedelta(seconds=seconds)).astimezone(LOG_TZ).strftime("%d/%b/%Y:%H:%M:%S %z")


def _nginx(text: str | None) -> str:
    return text.replace("\\", "\\x5C").replace('"', "\\x22") if text else "-"


def render(reqs: list[tuple], fmt: str, start: datetime, seed) -> list[str]:
    """nginx writes a line when a request ends, stamped then; CRProxy's gorilla handler writes it
    when it ends but stamps it with its start (so its lines are out of order), and its slog JSON
    application log shares the stream."""
    if fmt not in ("main", "clf"):
        raise ValueError(f"fmt must be 'main' or 'clf', not {fmt!r}")
    rng = random.Random(f"pullwarden-heldout3:{seed}:render")
    out = []
    for t0, t1, ip, method, uri, status, nbytes, ua, h2 in sorted(reqs, key=lambda r: (r[1], r[2], r[4])):
        proto = "HTTP/2.0" if h2 else "HTTP/1.1"
        if fmt == "main":
            out.append(f'{ip} - - [{_stamp(start, t1)}] "{method} {uri} {proto}" {status} {nbytes} "-" '
                       f'"{_nginx(ua)}" "-"')
            continue
        out.append(f'{ip} - - [{_stamp(start, t0)}] "{method} {uri} {proto}" {status} {nbytes}')
        if "/blobs/" in uri and rng.random() < 0.015:
            when = (start + timedelta(seconds=t1)).astimezone(LOG_TZ).isoformat(timespec="milliseconds")
            out.append(json.dumps({"time": when, "level": "INFO", "msg": rng.choice(["Cache hit", "Cache miss"]),
                                   "digest": uri.rsplit("/", 1)[1].split("?")[0]}, separators=(",", ":")))
    return out


def generate(days: int = 7, seed: str | int = "third-a", scale: float = 1.0, fmt: str = "main",
             start: datetime = START) -> tuple[list[str], list[Actor]]:
    """Log lines in ``fmt`` ('main' or 'clf') over ``days`` UTC days from ``start``, and the actors."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    tr = Traffic()
    addr = Addresses(random.Random(f"pullwarden-heldout3:{seed}:addresses"))
    actors = _abusers(tr, seed, days, start, addr) + _legit(tr, seed, days, start, scale, addr)
    horizon = days * DAY
    tr.reqs = [r for r in tr.reqs if 0 <= r[0] < horizon]
    return render(tr.reqs, fmt, start, seed), actors
