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
matched here (for /v1/check) and rendered as regular expressions over the request (for nginx,
request_regex) by the same rules. A request's image is read once, request_image, as nginx's
regular expressions read it.
"""
from __future__ import annotations

import re

from core.imagepath import NS_HOST, ROUTE, looks_like_host


def _split(image: str) -> tuple[str, str]:
    host, _, name = image.partition("/")
    return host, name


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
    return _normal(*_split(image))


def _normal(host: str, name: str) -> str:
    """`host/name` as CRProxy matches it: the host lower-cased and without the trailing dot of a
    fully qualified name (`ghcr.io.` is ghcr.io), `library/` added to one-segment docker.io names."""
    hostname, port = _port(host.lower())
    host = hostname.removesuffix(".") + (f":{port}" if port else "")
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
    hostname, port = _port(host.lower())
    host = hostname.removesuffix(".") + (f":{port}" if port else "")
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


def host_registry(requests: dict, host: str | None) -> str:
    """The registry a request to ``host`` is for, as nginx's `map $host` gives it (the policy's
    requests section: host_registries, else default_registry); $host is lower case, without
    port or trailing dot."""
    if host:
        host = _port(host.strip().lower())[0].removesuffix(".")
        if host in requests["host_registries"]:
            return requests["host_registries"][host]
    return requests["default_registry"]


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


def matches(pattern: str, image: str, default_registry: str = "docker.io") -> bool:
    """Whether CRProxy's list entry ``pattern`` matches ``image`` (any spelling: a tag, a
    digest, a short name, which is on ``default_registry``)."""
    if pattern == "*":
        return True
    ph, pp = _split(pattern)
    host, name = _split(image_name(image, default_registry))
    return _host_matches(ph.lower(), host) and _path_matches(pp, name)


# ---- a request's image, as the proxy reads it (the grammar: core/imagepath.py) -----------------
_REQUEST = re.compile(rf"/v2/([^?]+){ROUTE}")
_NS = re.compile(NS_HOST)


def request_image(uri: str, registry: str) -> str | None:
    """The image a request for ``uri`` (the path and query as sent) names, or None (the ping,
    a token, anything that is not a registry route). The registry comes from the path when its
    first segment is a host (CRProxy's prefix style), else from `?ns=` (containerd), else it is
    ``registry``: the one the request's Host stands for (host_registries), or default_registry
    (docker's registry-mirrors sends Docker Hub paths without one)."""
    path, _, query = uri.partition("?")
    m = _REQUEST.fullmatch(path)
    if m is None:
        return None
    name = m.group(1)
    first, _, rest = name.partition("/")
    if rest and looks_like_host(first):
        return _normal(first, rest)
    ns = next((p[3:] for p in query.split("&") if p.startswith("ns=")), None) if query else None
    if ns is not None and _NS.fullmatch(ns):
        registry = ns
    return _normal(registry, name)


def _host_part(ph: str, stop: str) -> str:
    """A PCRE for a registry host hostmatcher's ``ph`` takes, in text that ends the host at one
    of the ``stop`` characters: any case, a trailing dot, any port unless the pattern names one."""
    name, port = _port(ph.lower())
    port = f":{port}" if port else "(?::[0-9]+)?"
    other = f"[^{re.escape(stop)}]"
    if name == "*":
        return f"{other}+"
    if name.startswith("*.") or name.startswith("."):
        return f"(?i:{other}*" + re.escape("." + name.lstrip("*.")) + r")\.?" + port
    return f"(?i:(?:{other}*\\.)?" + re.escape(name) + r")\.?" + port


def _consume(pp: str, prefix: str):
    """hostmatcher's walk of pattern path ``pp`` over a name that begins with ``prefix`` (ends with
    '/'): ('rest', pattern left) once the prefix is read, ('ends', text) when a `**` is reached
    in it (the name must then end with the text), or None when the prefix already fails."""
    i = j = 0
    while i < len(pp) and j < len(prefix):
        if pp[i] == "*":
            if pp[i + 1:i + 2] == "*":
                return "ends", pp[i + 2:]
            i, j = i + 1, prefix.find("/", j)
        elif pp[i] == prefix[j]:
            i, j = i + 1, j + 1
        else:
            return None
    return ("rest", pp[i:]) if j == len(prefix) and i < len(pp) else None


def _ends_with(text: str, prefix: str, tail: str) -> str | None:
    """A lookahead at the start of a name (one segment when ``prefix`` is set) for "prefix + name
    ends with ``text``"; None when it cannot."""
    if "/" not in text:
        return f"(?=[^?]*{re.escape(text)}{tail})"
    if not prefix:
        return f"(?=[^?]*{re.escape(text)}{tail})"
    head, _, last = text.rpartition("/")
    if "/" in head or not last or not prefix[:-1].endswith(head):
        return None
    return f"(?={re.escape(last)}{tail})"


def _name_part(pp: str, tail: str, prefix: str = "") -> str | None:
    """A PCRE for the names hostmatcher's pattern path ``pp`` takes, followed by ``tail``;
    with ``prefix``, for one-segment names (the request's form says so) that it takes once
    ``prefix`` is put before them (docker.io's `library/`). None when no name can match."""
    if prefix:
        walked = _consume(pp, prefix)
        if walked is None:
            return None
        if walked[0] == "ends":
            ahead = _ends_with(walked[1], prefix, tail) if walked[1] else ""
            return None if ahead is None else f"{ahead}[^/?]+"
        pp = walked[1]
    out, ahead = [], ""
    if "*" not in pp:
        return "".join(out) + re.escape(pp)
    for i, c in enumerate(pp):
        if c != "*":
            out.append(re.escape(c))
        elif pp[i + 1:i + 2] == "*":
            rest = pp[i + 2:]
            if rest:
                ahead = _ends_with(rest, prefix, tail)
                if ahead is None:
                    return None
            out.append("[^?]+")
            break
        else:
            out.append("[^/?]+" if i == len(pp) - 1 else "[^/?]*")
    return ahead + "".join(out)


_END = r"(?:\?|$)"
_TAIL = ROUTE + _END
_HOSTLIKE = r"(?:[^/?]*[.:][^/?]*|localhost)"
_DOCKER = r"(?i:docker\.io)\.?"
_FIRST_NS = r"\?(?:(?!ns=)[^&]*&)*ns="
_NS_HOST = rf"(?:{NS_HOST})(?:&|$)"
# A request's form, told once per request (the first that matches), so that each pattern's
# expression needs no look at the others: its first letter rules out every other form.
#   odd  a /v2/ path the upstream reads otherwise than nginx (see render.ODD_PATH), set by render
#   L    /v2/docker.io/<one segment>/…: docker.io's library/ name in CRProxy's prefix style
#   P    /v2/<host>/<name>/…: CRProxy's prefix style
#   M, N no host in the path, the registry in containerd's ?ns= (M: docker.io, one segment)
#   O, B no host, no ?ns=: the Host's registry, before the URI (O: one segment, which is
#        library/<name> when that registry is docker.io)
FORMS = [
    ("L", rf"^/v2/{_DOCKER}/[^/?]+{_TAIL}"),
    ("P", rf"^/v2/{_HOSTLIKE}/[^?]+{_TAIL}"),
    ("M", rf"^/v2/[^/?]+{ROUTE}{_FIRST_NS}{_DOCKER}(?:&|$)"),
    ("N", rf"^/v2/[^?]+{ROUTE}{_FIRST_NS}{_NS_HOST}"),
    ("O", rf"^/v2/[^/?]+{_TAIL}"),
    ("B", rf"^/v2/[^?]+{_TAIL}"),
]


def request_key(uri: str, registry: str) -> str:
    """What nginx's `$pullwarden_image_key` is for a request (render writes FORMS as its map):
    the form's letter, the Host's registry for O and B, and the URI; "" when it names no image."""
    for letter, form in FORMS:
        if re.match(form, uri):
            return f"{letter} {registry} {uri}" if letter in "OB" else f"{letter} {uri}"
    return ""


def request_regex(pattern: str) -> str:
    """A PCRE without a capturing group that matches request_key() of a request exactly when
    request_image() of it is an image ``pattern`` matches, as matches() decides."""
    if pattern == "*":
        return "^[LPMNOB] "
    ph, pp = _split(pattern)
    name = _name_part(pp, _TAIL)
    lib = _name_part(pp, _TAIL, "library/") if _host_matches(ph, "docker.io") else None
    # the name once, after any of the forms' beginnings: nginx reads a parameter of at most
    # 4 KiB, and a 300-byte pattern's name expression is up to twice that
    forms = []
    if lib is not None:
        forms.append(rf"(?:L /v2/[^/?]+/|M /v2/|O {_DOCKER} /v2/){lib}{_TAIL}")
    if name is not None:
        ns = rf"(?=[^?]*{_FIRST_NS}{_host_part(ph, '&')}(?:&|$))"
        forms.append(rf"(?:P /v2/{_host_part(ph, '/?')}/|N {ns}/v2/|O (?!{_DOCKER} ){_host_part(ph, ' ')} /v2/|"
                     rf"B {_host_part(ph, ' ')} /v2/){name}{_TAIL}")
    return "^(?:" + "|".join(forms) + ")" if forms else "^(?!)"
