"""Detection sees the image enforcement checks: for many request paths, hostile ones included,
the registry/repository a real ingest stores (a real log into a real DuckDB file) is what
imagelist.request_image — /v1/check's and nginx's reading — says; and /v1/check reads a short
name on the policy's default_registry or the Host's registry, as nginx does."""
from __future__ import annotations

import itertools
import random

import httpx

from enforcer.imagelist import host_registry, request_image
from tests.conftest import write
from tests.enforcer_helpers import Enforcer

LOG_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
              '"$http_user_agent" "$http_x_forwarded_for" $host')
REQUESTS = {"default_registry": "quay.io",
            "host_registries": {"gcr.m.example": "gcr.io", "docker.m.example": "docker.io", "k8s.m.example": "K8S.IO."}}

# written by hand: each one a way the two readings used to differ, or could
HOSTILE = [
    "/v2/ghcr.io/badorg/blobs/tool/blobs/sha256:00",           # a name holding a route's word: from the end
    "/v2/ghcr.io/badorg/manifests/x/manifests/latest",
    "/v2/ghcr.io/a/tags/list/manifests/1",
    "/v2/ghcr.io/badorg/x/referrers/sha256:00",                 # referrers name an image too
    "/v2/ghcr.io/badorg/x/referrers/sha256:00?artifactType=application%2Fspdx",
    "/v2/GHCR.IO/badorg/x/manifests/1", "/v2/DOCKER.IO/evil/manifests/1",    # upper-case hosts
    "/v2/ghcr.io./badorg/x/manifests/1", "/v2/docker.io./evil/manifests/1",  # trailing dots
    "/v2/GHCR.IO.:443/badorg/x/manifests/1", "/v2/ghcr.io.:/x/manifests/1", "/v2/ghcr.io../x/manifests/1",
    "/v2/registry-1.docker.io/nginx/manifests/1", "/v2/registry-1.docker.io/bitnami/redis/blobs/sha256:00",
    "/v2/index.docker.io/library/nginx/manifests/1",
    "/v2/nginx/manifests/1?ns=docker.io", "/v2/badorg/x/manifests/1?ns=GHCR.IO.",  # containerd
    "/v2/nginx/manifests/1?ns=notahost", "/v2/nginx/manifests/1?ns=", "/v2/nginx/manifests/1?ns=&ns=ghcr.io",
    "/v2/nginx/manifests/1?a=1&ns=registry-1.docker.io", "/v2/nginx/manifests/1?x=ns=ghcr.io",
    "/v2/nginx/manifests/1?ns=gh%2Ecr.io", "/v2/ghcr.io/x/manifests/1?ns=quay.io",
    "/v2/ghcr.io/manifests/latest",                              # a host needs a name after it
    "/v2/ghcr.io//manifests/latest", "/v2//x/manifests/1", "/v2/x//manifests/1",
    "/v2/localhost/x/manifests/1", "/v2/LOCALHOST/x/manifests/1", "/v2/localhost:5000/x/blobs/uploads/",
    "/v2/ghcr.io/x/blobs/uploads", "/v2/ghcr.io/x/blobs/uploads/5b1c", "/v2/ghcr.io/x/blobs/uploads/5b1c/more",
    "/v2/ghcr.io/x/manifests/", "/v2/ghcr.io/x/tags/list?n=100", "/v2/ghcr.io/x/tags/other",
    "/v2/ghcr.io/bad%2Forg/x/manifests/1", "/v2/gh%63r.io/x/manifests/1",      # percent escapes, undecoded
    "/v2/ghcr.io/caf\u00e9/x/manifests/1", "/v2/R\u00c9G.io/x/manifests/1",   # non-ASCII: \xHH in the log
    '/v2/ghcr.io/a"b/manifests/1', "/v2/ghcr.io/a\\b/manifests/1",              # " and \ are escaped too
    "/v2/", "/v2/_catalog", "/v2/x/manifests", "/v3/ghcr.io/x/manifests/1", "/ghcr.io/x/manifests/1",
    "/v2/./x/manifests/1", "/v2/ghcr.io/../x/manifests/1",
]
HOSTS = ["m.example", "gcr.m.example", "GCR.M.EXAMPLE:8443", "docker.m.example", "k8s.m.example", "unknown.example"]

FIRST = ["docker.io", "DOCKER.IO", "docker.io.", "ghcr.io", "Ghcr.Io.", "registry-1.docker.io", "localhost",
         "localhost:5000", "a:1", "x", "manifests", "blobs", "library"]
SEGMENTS = ["library", "nginx", "blobs", "manifests", "tags", "list", "referrers", "uploads", "a.b", "x-b", "_"]
ROUTES = ["manifests/latest", "manifests/sha256:ab", "blobs/sha256:ab", "blobs/uploads/", "blobs/uploads/u1",
          "blobs/uploads", "tags/list", "referrers/sha256:cd", "manifests/", "tags/x", "list"]
QUERIES = ["", "?ns=docker.io", "?ns=GHCR.IO.", "?a=1&ns=ghcr.io", "?ns=&ns=ghcr.io", "?ns=foo", "?x=ns=ghcr.io",
           "?ns=registry-1.docker.io"]


def generated(n: int) -> list[str]:
    """A seeded sample of prefix, registry-mirror and ?ns= paths whose names hold route words."""
    rng = random.Random(20)
    out = []
    for _ in range(n):
        segments = [rng.choice(FIRST)] + [rng.choice(SEGMENTS) for _ in range(rng.randint(0, 3))]
        out.append("/v2/" + "/".join(segments) + "/" + rng.choice(ROUTES) + rng.choice(QUERIES))
    return out


def nginx_escaped(text: str) -> str:
    """$request as nginx writes it in the log: ", \\ and bytes outside printable ASCII as \\xHH."""
    return "".join(chr(b) if 0x20 <= b <= 0x7e and b not in b'"\\' else f"\\x{b:02X}" for b in text.encode())


def test_ingest_stores_the_image_check_and_nginx_read(tmp_path, run):
    requests = [(uri, host) for uri, host in itertools.product(HOSTILE, HOSTS)]
    requests += [(uri, HOSTS[i % len(HOSTS)]) for i, uri in enumerate(generated(3000))]
    # each line's number in its byte count, to pair events with requests
    lines = [f'198.51.100.1 - - [20/Nov/2024:10:00:00 +0000] "GET {nginx_escaped(uri)} HTTP/1.1" 200 {i} "-" '
             f'"containerd/v1.7.22" "-" {host}' for i, (uri, host) in enumerate(requests)]
    r = run(log_format=LOG_FORMAT, **REQUESTS)
    report = r.ingest(write(tmp_path / "access.log", lines))
    assert report.total("events") == len(lines)
    rows = r.store.execute("""
        select kind, registry, repository, reference, digest from events order by bytes""")
    wrong = []
    for (uri, host), (kind, registry, repository, reference, digest) in zip(requests, rows, strict=True):
        want = request_image(uri, host_registry(REQUESTS | {"host_registries": {
            h.lower(): v for h, v in REQUESTS["host_registries"].items()}}, host))
        got = f"{registry}/{repository}" if registry is not None and kind != "token" else None
        # the kind, reference and digest are read from the same end of the path
        segs = uri.split("?")[0].split("/")
        upload = segs[-3:-1] == ["blobs", "uploads"] or segs[-2:] == ["blobs", "uploads"]
        want_kind = want and ("upload" if upload else "tags" if segs[-2:] == ["tags", "list"] else
                              {"manifests": "manifest", "blobs": "blob", "referrers": "referrers"}[segs[-2]])
        if got != want or (want and (kind != want_kind
                                     or (kind in ("manifest", "referrers") and reference != segs[-1])
                                     or (kind == "blob" and digest != segs[-1]))):
            wrong.append((uri, host, want, want_kind, got, kind, reference, digest))
    assert not wrong, f"{len(wrong)} of {len(requests)} differ, e.g. {wrong[:5]}"


def test_check_reads_a_short_name_on_the_policy_default_registry_and_the_hosts(tmp_path):
    """A registry-mirror path /v2/evil/miner/… on a mirror whose default_registry is quay.io is
    quay.io/evil/miner for nginx; /v1/check says the same of image=evil/miner, and of a short
    name sent to a one-host-per-registry Host."""
    api = Enforcer(tmp_path, default_registry="quay.io", host_registries={"gcr.m.example": "gcr.io"})
    try:
        with api.services.lock:
            for pattern in ("quay.io/evil/*", "gcr.io/distroless/*"):
                api.store.execute("insert into image_lists values ('blocked', ?, 'test', ?)", [pattern, api.clock()])
        api.clock.advance(seconds=1)
        api.services.publisher.publish()

        def allowed(**params) -> bool:
            return httpx.get(api.url + "/v1/check", params={"ip": "192.0.2.1", **params},
                             headers=api.headers("proxy"), timeout=10).json()["allowed"]
        assert not allowed(image="evil/miner:1")
        assert allowed(image="docker.io/evil/miner:1")
        assert allowed(image="distroless/static")                      # quay.io/distroless/static
        assert not allowed(image="distroless/static", host="GCR.M.EXAMPLE:443")
        assert allowed(image="evil/miner", host="gcr.m.example")       # gcr.io/evil/miner
        assert not allowed(image="evil/miner", host="elsewhere.example")
        assert [request_image("/v2/evil/miner/manifests/1", "quay.io")] == ["quay.io/evil/miner"]
    finally:
        api.stop()
