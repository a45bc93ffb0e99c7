"""User agent → client family, version and docker's UpstreamClient.

Run once per distinct user-agent string (a mirror sees thousands, not millions), so plain
Python regular expressions are fine here. The order matters: docker's UA mentions go and
the kernel, BuildKit's mentions moby, crane's mentions go-containerregistry.
"""
from __future__ import annotations

import re
from typing import NamedTuple


class Client(NamedTuple):
    family: str
    version: str | None
    upstream_client: str | None


_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("docker", re.compile(r"^docker/(?P<v>[\w.+~-]+)")),
    ("containerd", re.compile(r"^containerd/v?(?P<v>[\w.+~-]+)")),
    ("cri-o", re.compile(r"^cri-o/(?P<v>[\w.+~-]+)")),
    ("podman", re.compile(r"^(?:libpod|podman)/(?P<v>[\w.+~-]+)", re.I)),
    # containers/image is podman's (and skopeo's when it does not say so) library
    ("skopeo", re.compile(r"^skopeo/(?P<v>[\w.+~-]+)", re.I)),
    ("buildah", re.compile(r"^buildah/(?P<v>[\w.+~-]+)", re.I)),
    ("podman", re.compile(r"^containers/(?P<v>[\w.+~-]+) \(github\.com/containers/image\)")),
    ("buildkit", re.compile(r"^buildkit/v?(?P<v>[\w.+~-]+)")),
    ("kaniko", re.compile(r"kaniko(?:/v?(?P<v>[\w.+~-]+))?", re.I)),
    ("crane", re.compile(r"^crane/v?(?P<v>[\w.+~-]+)")),
    ("go-containerregistry", re.compile(r"^go-containerregistry/v?(?P<v>[\w.+~-]+)")),
    ("harbor", re.compile(r"^harbor-registry-client(?:/v?(?P<v>[\w.+~-]+))?", re.I)),
    ("helm", re.compile(r"^helm/v?(?P<v>[\w.+~-]+)", re.I)),
    ("go-http-client", re.compile(r"^Go-http-client/(?P<v>[\w.]+)")),
    ("curl", re.compile(r"^curl/(?P<v>[\w.+~-]+)")),
    ("python-requests", re.compile(r"^python-requests/(?P<v>[\w.+~-]+)")),
    ("browser", re.compile(r"^Mozilla/5\.0 .*?(?:Firefox|Chrome|Version)/(?P<v>[\d.]+)")),
]
_UPSTREAM = re.compile(r"UpstreamClient\(([^)\\]*(?:\\.[^)\\]*)*)\)")


def classify(ua: str | None) -> Client:
    if not ua:
        return Client("other", None, None)
    upstream = None
    m = _UPSTREAM.search(ua)
    if m:
        upstream = m.group(1).replace("\\(", "(").replace("\\)", ")").strip()
    for family, pattern in _RULES:
        m = pattern.search(ua)
        if m:
            return Client(family, m.groupdict().get("v"), upstream)
    return Client("other", None, upstream)
