"""CRProxy's image patterns: `*` one path segment, `**` any depth, `docker.io/x` is
`docker.io/library/x`."""
from __future__ import annotations

import re
from functools import lru_cache


def canonical(image: str) -> str:
    image = image.split("@", 1)[0]
    name = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    parts = name.split("/")
    if parts[0] == "docker.io" and len(parts) == 2:
        parts.insert(1, "library")
    return "/".join(parts)


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern:
    parts = canonical(pattern).split("/")
    out = []
    for p in parts:
        if p == "**":
            out.append(r"(?:[^/]+(?:/[^/]+)*)")
        else:
            out.append(re.escape(p).replace(r"\*", "[^/]*"))
    return re.compile("^" + "/".join(out) + "$")


def matches(pattern: str, image: str) -> bool:
    return bool(_compile(pattern).match(canonical(image)))
