import pytest

from enforcer.imagelist import canonical, matches


@pytest.mark.parametrize("pattern, image, expected", [
    ("docker.io/library/*", "docker.io/library/nginx", True),
    ("docker.io/library/*", "docker.io/nginx:1.27", True),                # docker.io/x is docker.io/library/x
    ("docker.io/nginx", "docker.io/library/nginx@sha256:ab", True),
    ("docker.io/library/*", "docker.io/bitnami/redis", False),
    ("ghcr.io/*", "ghcr.io/actions/runner", False),                        # * is one segment
    ("ghcr.io/**", "ghcr.io/actions/runner", True),                        # ** any depth
    ("ghcr.io/**", "ghcr.io/a/b/c/d", True),
    ("quay.io/*/node-exporter", "quay.io/prometheus/node-exporter:v1.8", True),
    ("registry.k8s.io/kube-*", "registry.k8s.io/kube-apiserver", True),
    ("registry.k8s.io/kube-*", "registry.k8s.io/pause", False),
    ("localhost:5000/app", "localhost:5000/app:1", True),
])
def test_crproxy_patterns(pattern, image, expected):
    assert matches(pattern, image) is expected


def test_canonical():
    assert canonical("docker.io/busybox:1.36") == "docker.io/library/busybox"
    assert canonical("localhost:5000/team/app@sha256:00") == "localhost:5000/team/app"
