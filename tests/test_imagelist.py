"""Image patterns mean what CRProxy (wzshiming/hostmatcher at 92cb567) makes of them, in
/v1/check, in the nginx include's regular expressions, and on the way in."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.imagelist import (canonical_pattern, image_name, matches, request_image, request_key,
                                request_regex)

CASES = [
    ("docker.io/library/*", "docker.io/library/nginx", True),
    ("docker.io/library/*", "docker.io/nginx:1.27", True),                # docker.io/x is docker.io/library/x
    ("docker.io/library/nginx", "docker.io/library/nginx@sha256:ab", True),
    ("docker.io/library/*", "docker.io/bitnami/redis", False),
    ("docker.io/library/*", "nginx", True),                               # no host: the default registry
    ("ghcr.io/*", "ghcr.io/actions/runner", False),                        # * is the rest of one segment
    ("ghcr.io/**", "ghcr.io/actions/runner", True),                        # ** any depth
    ("ghcr.io/**", "ghcr.io/a/b/c/d", True),
    ("docker.io/bitnami/*", "registry-1.docker.io/bitnami/redis", True),   # a docker.io pattern covers Docker Hub's API host
    ("docker.io/library/*", "registry-1.docker.io/nginx", False),          # as CRProxy: no library/ there
    ("quay.io/*/node-exporter", "quay.io/prometheus/node-exporter:v1.8", True),
    ("registry.k8s.io/kube-*", "registry.k8s.io/kube-apiserver", True),
    ("registry.k8s.io/kube-*", "registry.k8s.io/pause", False),
    ("registry.k8s.io/kube-*", "registry.k8s.io/kube-", False),            # * takes at least one byte at the end
    ("docker.io/library/ng*", "docker.io/library/nginx", True),
    ("localhost:5000/app", "localhost:5000/app:1", True),
    ("localhost/app", "localhost:5000/app", True),                         # no port in the pattern: any port
    ("localhost:5001/app", "localhost:5000/app", False),
    ("docker.io/library/nginx", "mirror.docker.io/library/nginx", True),   # a domain matches its subdomains
    ("*.example.com/team/app", "example.com/team/app", False),
    ("*.example.com/team/app", "eu.example.com/team/app", True),
    ("*/library/**", "quay.io/library/x", True),
    ("ghcr.io/**-runner", "ghcr.io/actions/actions-runner", True),         # ** then text: the name ends with it
    ("ghcr.io/ac**ns", "ghcr.io/actions", True),
    ("*", "anything.io/at/all", True),
    ("ghcr.io/badorg/**", "ghcr.io./badorg/x", True),                      # a fully qualified name is the host
    ("ghcr.io/badorg/**", "GHCR.IO/badorg/x", True),
    ("ghcr.io/badorg/**", "ghcr.io/BadOrg/x", False),                      # names keep their case
]


@pytest.mark.parametrize("pattern, image, expected", CASES)
def test_crproxy_patterns(pattern, image, expected):
    assert matches(pattern, image) is expected
    # nginx's map says the same of a request for it
    request = request_key(f"/v2/{image_name(image)}/manifests/latest", "quay.io")
    assert bool(re.match(request_regex(pattern), request)) is expected


@pytest.mark.parametrize("typed, stored", [
    ("docker.io/busybox", "docker.io/library/busybox"), ("docker.io/*", "docker.io/library/*"),
    ("Docker.IO/library/nginx", "docker.io/library/nginx"), ("ghcr.io/**", "ghcr.io/**"), ("*", "*")])
def test_patterns_are_stored_as_crproxy_reads_them(typed, stored):
    assert canonical_pattern(typed) == stored


@pytest.mark.parametrize("typed, why", [
    ("nginx:latest", "names a host alone"), ("ghcr.io", "ghcr.io/**"), ("docker.io/library/nginx:1.27", "no tag"),
    ("docker.io/library/nginx@sha256:00", "no tag or digest"), ("docker.io/library/ng*x", "nothing but '/'"),
    ("quay.io/*-exporter/x", "nothing but '/'"), ("docker.io/", "host/path"), ("a b/c", "without spaces"),
    ("gh*r.io/x", "in the host")])
def test_patterns_crproxy_could_never_match_are_refused(typed, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        canonical_pattern(typed)


SEGMENT = st.text("abn-x*", min_size=1, max_size=5)


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(pattern=st.lists(SEGMENT, min_size=1, max_size=3).map("/".join),
       name=st.lists(st.text("abnx-", min_size=1, max_size=5), min_size=1, max_size=3).map("/".join))
def test_the_nginx_regex_and_check_agree_on_any_pattern_and_name(pattern, name):
    try:
        p = canonical_pattern(f"quay.io/{pattern}")
    except ValueError:
        return
    request = request_key(f"/v2/quay.io/{name}/manifests/latest", "docker.io")
    assert bool(re.match(request_regex(p), request)) is matches(p, f"quay.io/{name}"), (p, name)


@pytest.mark.parametrize("uri, registry, image", [
    ("/v2/", "docker.io", None),
    ("/v2/library/nginx/manifests/latest", "docker.io", "docker.io/library/nginx"),    # registry-mirrors
    ("/v2/nginx/manifests/latest", "docker.io", "docker.io/library/nginx"),
    ("/v2/distroless/static/manifests/nonroot", "gcr.io", "gcr.io/distroless/static"),  # the Host's registry
    ("/v2/docker.io/library/nginx/blobs/sha256:00", "gcr.io", "docker.io/library/nginx"),
    ("/v2/GHCR.IO./badorg/x/tags/list", "docker.io", "ghcr.io/badorg/x"),
    ("/v2/ghcr.io/badorg/blobs/tool/blobs/sha256:00", "docker.io", "ghcr.io/badorg/blobs/tool"),   # from the end
    ("/v2/ghcr.io/badorg/x/referrers/sha256:00", "docker.io", "ghcr.io/badorg/x"),
    ("/v2/ghcr.io/badorg/x/blobs/uploads/", "docker.io", "ghcr.io/badorg/x"),
    ("/v2/ghcr.io/badorg/x/blobs/uploads/5b1c", "docker.io", "ghcr.io/badorg/x"),
    ("/v2/badorg/x/manifests/1?ns=ghcr.io", "docker.io", "ghcr.io/badorg/x"),           # containerd
    ("/v2/nginx/manifests/1?a=b&ns=docker.io", "gcr.io", "docker.io/library/nginx"),
    ("/v2/nginx/manifests/1?ns=&ns=ghcr.io", "docker.io", "docker.io/library/nginx"),   # the first ns=, empty
    ("/v2/nginx/manifests/1?ns=notahost", "docker.io", "docker.io/library/nginx"),
    ("/v2/ghcr.io/manifests/latest", "docker.io", "docker.io/library/ghcr.io"),         # a host needs a name after it
    ("/v2/ghcr.io/x/manifests/", "docker.io", None),
    # Docker Hub's API host is the registry the path names, as CRProxy checks it (its docker.io ->
    # registry-1.docker.io alias comes after the check): no library/ for its one-segment names
    ("/v2/registry-1.docker.io/nginx/manifests/1", "docker.io", "registry-1.docker.io/nginx"),
    ("/v2/nginx/manifests/1?ns=registry-1.docker.io", "docker.io", "registry-1.docker.io/nginx"),
])
def test_a_request_names_the_image_a_registry_would_serve(uri, registry, image):
    assert request_image(uri, registry) == image


HOSTS = ["docker.io", "DOCKER.IO", "docker.io.", "ghcr.io", "GHCR.IO.", "ghcr.io:443", "a.ghcr.io", "localhost",
         "localhost:5000", "x"]
SEGMENTS = ["library", "nginx", "blobs", "manifests", "a", "x-b", "tags", "uploads"]
ROUTES = ["manifests/latest", "blobs/sha256:ab", "blobs/uploads/", "blobs/uploads/u1", "tags/list",
          "referrers/sha256:cd", "manifests/", "tags/x"]
QUERIES = ["", "?ns=docker.io", "?ns=ghcr.io", "?a=1&ns=GHCR.IO.", "?ns=&ns=ghcr.io", "?ns=foo", "?x=ns=ghcr.io"]
REQUEST_PATTERNS = ["docker.io/library/*", "docker.io/library/nginx", "ghcr.io/**", "*", "*/library/**", "docker.io/**",
                    "docker.io/library/**/x", "docker.io/**ginx", "docker.io/lib*/nginx", "*/*", "ghcr.io/*/blobs",
                    "*.io/**", "docker.io/*/n", "docker.io/li**", "docker.io/**y/nginx", "docker.io/**/nginx", "io/**",
                    "docker.io/library/blobs", "ghcr.io/a/**-b", "localhost:5000/**"]


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(host=st.sampled_from([None, *HOSTS]), segments=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3),
       route=st.sampled_from(ROUTES), query=st.sampled_from(QUERIES),
       registry=st.sampled_from(["docker.io", "ghcr.io", "quay.io"]))
def test_nginx_reads_a_request_as_check_does(host, segments, route, query, registry):
    """request_regex(pattern) over request_key() (what the nginx map sees)
    says what matches(pattern, request_image(...)) says, for every pattern here (the library/
    of one-segment docker.io names, `**` with a tail, any host, ports), prefix, registry-mirror
    and ?ns= requests, names holding a route's words."""
    uri = "/v2/" + "/".join(([host] if host else []) + segments) + "/" + route + query
    image = request_image(uri, registry)
    for p in map(canonical_pattern, REQUEST_PATTERNS):
        want = image is not None and matches(p, image)
        assert bool(re.match(request_regex(p), request_key(uri, registry))) is want, (p, uri, registry, image)
