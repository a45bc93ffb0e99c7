"""Image patterns mean what CRProxy (wzshiming/hostmatcher at 92cb567) makes of them, in
/v1/check, in the nginx include's regular expressions, and on the way in."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.imagelist import canonical_pattern, image_name, matches, regex

CASES = [
    ("docker.io/library/*", "docker.io/library/nginx", True),
    ("docker.io/library/*", "docker.io/nginx:1.27", True),                # docker.io/x is docker.io/library/x
    ("docker.io/library/nginx", "docker.io/library/nginx@sha256:ab", True),
    ("docker.io/library/*", "docker.io/bitnami/redis", False),
    ("docker.io/library/*", "nginx", True),                               # no host: the default registry
    ("ghcr.io/*", "ghcr.io/actions/runner", False),                        # * is the rest of one segment
    ("ghcr.io/**", "ghcr.io/actions/runner", True),                        # ** any depth
    ("ghcr.io/**", "ghcr.io/a/b/c/d", True),
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
]


@pytest.mark.parametrize("pattern, image, expected", CASES)
def test_crproxy_patterns(pattern, image, expected):
    assert matches(pattern, image) is expected
    assert bool(re.match(regex(pattern), image_name(image))) is expected     # nginx's map says the same


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
    assert bool(re.match(regex(p), f"quay.io/{name}")) is matches(p, f"quay.io/{name}"), (p, name)
