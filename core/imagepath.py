"""How a registry request's path names an image: the grammar ingest (SQL over DuckDB) and the
enforcer (Python for /v1/check, PCRE for nginx) both read, written once so that detection
charges a request to the image enforcement checks.

A registry takes the name from the front of the path and the route from its end: the reference
is the last segment, so a name may itself hold a `manifests` or `blobs` segment
(/v2/ghcr.io/org/blobs/tool/blobs/sha256:… is ghcr.io/org/blobs/tool). The route is one of
ROUTE's, fixed by the last two or three segments, so a path splits one way: the name is
everything between `/v2/` and it (a greedy match). The expressions are plain enough for
Python's re, PCRE and RE2 alike.

The registry is the name's first segment when that looks like a host (a dot or a port, or
`localhost`) and something follows it (CRProxy's prefix style); else containerd's `?ns=` when
its value is a host (NS_HOST); else the one the request's Host stands for, or default_registry
(docker's registry-mirrors sends Docker Hub paths without one). A registry host is read
case-blind and without the trailing dot of a fully qualified name. `registry-1.docker.io` is
NOT docker.io here: CRProxy checks its lists against the host as the path spells it (its
docker.io → registry-1.docker.io alias comes after the check), and a `docker.io/...` pattern
covers registry-1.docker.io anyway as a subdomain.
"""
from __future__ import annotations

ROUTE = r"/(?:(?:manifests|blobs|referrers)/[^/?]+|blobs/uploads/[^/?]*|tags/list)"
# containerd's mirror request names the registry as `?ns=docker.io`; only a value that is a host
NS_HOST = r"[A-Za-z0-9._-]*[.:][A-Za-z0-9.:_-]*|localhost"
DOCKER_HUB = "docker.io"


def looks_like_host(segment: str) -> bool:
    """Docker's rule for the first path segment: a host has a dot or a port, or is localhost."""
    return "." in segment or ":" in segment or segment == "localhost"
