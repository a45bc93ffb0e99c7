from __future__ import annotations

import pytest

from ingest.useragent import classify

DOCKER = ("docker/27.3.1 go/go1.22.7 git-commit/41ca978 kernel/6.8.0-57-generic os/linux arch/amd64 "
          "UpstreamClient(Docker-Client/27.3.1 \\(linux\\))")


@pytest.mark.parametrize("ua, family, version, upstream", [
    (DOCKER, "docker", "27.3.1", "Docker-Client/27.3.1 (linux)"),
    ("docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/5.15.0 os/linux arch/amd64 UpstreamClient(Go-http-client/1.1)",
     "docker", "24.0.7", "Go-http-client/1.1"),
    ("containerd/v1.7.22", "containerd", "1.7.22", None),
    ("containerd/1.7.20+unknown", "containerd", "1.7.20+unknown", None),
    ("cri-o/1.30.4 go/go1.22.5 os/linux arch/amd64", "cri-o", "1.30.4", None),
    ("containers/5.28.1 (github.com/containers/image)", "podman", "5.28.1", None),
    ("skopeo/1.14.2", "skopeo", "1.14.2", None),
    ("Buildah/1.33.7", "buildah", "1.33.7", None),
    ("buildkit/v0.16 moby/v27.3", "buildkit", "0.16", None),
    ("go-containerregistry/v0.20.2", "go-containerregistry", "0.20.2", None),
    ("crane/v0.20.2 go-containerregistry/v0.20.2", "crane", "0.20.2", None),
    ("kaniko/v1.23.2", "kaniko", "1.23.2", None),
    ("harbor-registry-client", "harbor", None, None),
    ("Helm/3.16.2", "helm", "3.16.2", None),
    ("Go-http-client/1.1", "go-http-client", "1.1", None),
    ("curl/8.5.0", "curl", "8.5.0", None),
    ("python-requests/2.31.0", "python-requests", "2.31.0", None),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
     "browser", "131.0.0.0", None),
    ("Wget/1.21", "other", None, None),
    (None, "other", None, None),
])
def test_classify(ua, family, version, upstream):
    assert tuple(classify(ua)) == (family, version, upstream)
