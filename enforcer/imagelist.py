"""Image patterns with one meaning: CRProxy's.

CRProxy (DaoCloud/crproxy cmd/crproxy) matches its allow and privileged lists with
wzshiming/hostmatcher against `host/name`, after `library/` is added to one-segment docker.io
names. Read at hostmatcher 92cb567 ("Fix path match"), the rules are:

- A pattern is split at its first `/`: the host part is matched as a domain — `docker.io`
  matches docker.io and every subdomain of it, `*.example.com` (or `.example.com`) only the
  subdomains, `*` any host. A pattern without `/` names a host alone and never matches an
  image (CRProxy always asks about `host/name`), except a bare `*`, which matches everything.
- The path part without `*` must equal the name. With `*`, it is read from the left: a literal
  must equal the name's next byte; `*` takes the rest of the name's current segment (at least
  one byte when it is the pattern's last one) and may only be followed by `/`; `**` at the end
  takes everything left (at least one byte); `**` followed by more says "the name ends with
  that text". So `ng*x` matches nothing, `ng*` matches nginx, and `docker.io/busybox` matches
  nothing until it is written `docker.io/library/busybox`.

Patterns are canonicalized on the way in, refused when CRProxy could never match them, and
matched here (for /v1/check) and rendered as regular expressions (for nginx) by the same rules.
"""
from __future__ import annotations

import re


def _split(image: str) -> tuple[str, str]:
    host, _, name = image.partition("/")
    return host, name


def looks_like_host(segment: str) -> bool:
    """Docker's rule for the first path segment: a host has a dot or a port, or is localhost."""
    return "." in segment or ":" in segment or segment == "localhost"


def image_name(image: str, default_registry: str = "docker.io") -> str:
    """A request's image as CRProxy sees it: `host/name`, tag and digest dropped, `library/`
    added to one-segment docker.io names. `nginx:1.27` is docker.io/library/nginx."""
    image = image.strip().split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image = image[: len(image) - len(last)] + last.split(":", 1)[0]
    first = image.split("/", 1)[0]
    if "/" not in image or not looks_like_host(first):
        image = f"{default_registry}/{image}"
    host, name = _split(image)
    host = host.lower()
    if host == "docker.io" and "/" not in name:
        name = f"library/{name}"
    return f"{host}/{name}"


def canonical_pattern(pattern: str) -> str:
    """The pattern as CRProxy will read it, or ValueError saying why CRProxy could never
    match it."""
    p = pattern.strip()
    if not p or any(c.isspace() for c in p) or len(p) > 300:
        raise ValueError(f"{pattern!r}: a pattern is host/path without spaces, e.g. docker.io/library/* or ghcr.io/**")
    if p == "*":
        return p
    if "/" not in p:
        raise ValueError(f"{pattern!r} names a host alone, which CRProxy never matches against an image: "
                         f"write {p}/** for everything on it")
    host, path = _split(p)
    host = host.lower()
    if not host or not path or "//" in p or p.endswith("/"):
        raise ValueError(f"{pattern!r}: a pattern is host/path, e.g. docker.io/library/nginx")
    if "@" in path or ":" in path:
        raise ValueError(f"{pattern!r}: no tag or digest — a pattern names repositories (CRProxy reads "
                         "'name:tag' in a host as a port)")
    if "*" in host.lstrip("*.") or (host.startswith("*") and host != "*" and not host.startswith("*.")):
        raise ValueError(f"{pattern!r}: in the host only a leading '*.' (subdomains) or '*' alone (any host) works")
    i = 0
    while i < len(path):
        if path[i] == "*":
            if path[i + 1:i + 2] == "*":
                break                                     # ** ends what is read from the left
            if i + 1 < len(path) and path[i + 1] != "/":
                raise ValueError(f"{pattern!r}: in CRProxy '*' takes the rest of a path segment, so nothing but "
                                 f"'/' may follow it ({path[:i + 2]!r} never matches); write "
                                 f"{host}/{path[:i + 1]} or use '**'")
        i += 1
    if host == "docker.io" and "/" not in path:
        path = f"library/{path}"                          # CRProxy adds library/ to one-segment names
    return f"{host}/{path}"


def _port(host: str) -> tuple[str, str]:
    name, sep, port = host.rpartition(":")
    return (name, port) if sep and port.isdigit() else (host, "")


def _host_matches(pattern_host: str, host: str) -> bool:
    """hostmatcher's domain match: the host or its subdomains; a pattern without a port takes
    any port."""
    if pattern_host == "*":
        return True
    (ph, pport), (h, port) = _port(pattern_host.lower()), _port(host.lower())
    if pport and pport != port:
        return False
    if ph.startswith("*."):
        ph = ph[1:]
    if ph.startswith("."):
        return h.endswith(ph)
    return h == ph or h.endswith("." + ph)


def _path_matches(pattern: str, path: str) -> bool:
    if "*" not in pattern:
        return pattern == path
    i = j = 0                                             # into pattern, into path
    while i < len(pattern) and j < len(path):
        c = pattern[i]
        if c == "*":
            if pattern[i + 1:i + 2] == "*":
                rest = pattern[i + 2:]
                return not rest or path.endswith(rest)
            slash = path.find("/", j)
            if slash < 0:
                return i == len(pattern) - 1
            i, j = i + 1, slash
        elif c == path[j]:
            i, j = i + 1, j + 1
        else:
            return False
    return i == len(pattern) and j == len(path)


def matches(pattern: str, image: str) -> bool:
    """Whether CRProxy's list entry ``pattern`` matches ``image`` (any spelling: a tag, a
    digest, a one-segment docker.io name)."""
    if pattern == "*":
        return True
    ph, pp = _split(pattern)
    host, name = _split(image_name(image))
    return _host_matches(ph.lower(), host) and _path_matches(pp, name)


def regex(pattern: str) -> str:
    """The same test as a PCRE over `host/name` (nginx `map`), anchored."""
    if pattern == "*":
        return "^.+$"
    ph, pp = _split(pattern)
    name, port = _port(ph.lower())
    port = f":{port}" if port else "(?::[0-9]+)?"
    if name == "*":
        host = "[^/]+"
    elif name.startswith("*.") or name.startswith("."):
        host = r"[^/]*\." + re.escape(name.lstrip("*.")) + port
    else:
        host = r"(?:[^/]*\.)?" + re.escape(name) + port
    if "*" not in pp:
        return f"^{host}/{re.escape(pp)}$"
    out, ahead = [], ""
    for i, c in enumerate(pp):
        if c != "*":
            out.append(re.escape(c))
        elif pp[i + 1:i + 2] == "*":
            rest = pp[i + 2:]
            if rest:            # hostmatcher then asks whether the whole name ends with the rest
                ahead = f"(?=.*{re.escape(rest)}$)"
            out.append(".+")    # and only gets there with at least one byte left
            break
        else:
            out.append("[^/]+" if i == len(pp) - 1 else "[^/]*")
    return f"^{host}/{ahead}{''.join(out)}$"
