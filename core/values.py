"""Every value that names a client on its way in — an address, a range, an AS number, a user —
parsed into its one canonical spelling or refused with the reason; and the tier names and
limits that nginx's include carries bare. Shared by the admin changes (API and command line),
the allowlist and the agent's check of what it is sent (enforcer/policy_doc.py), so that a value
is judged the same wherever it enters.

Some values parse but must not be banned or throttled: the whole address space, ranges wider
than the configured limit, addresses no client comes from (loopback, link-local, unspecified,
multicast, broadcast), and the server's own addresses (with our load balancers,
`trusted_proxies`: banning one of those bans everyone behind it). A manual decision there needs
`force`, and the caller audits that it was forced; a rule's is held (rules/policy.py), and
ingest never charges a forwarded hop no client comes from (ingest/forwarded.py).
"""
from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from functools import lru_cache

ASN_MAX = 4_294_967_294          # 32-bit AS numbers; 4294967295 is reserved (RFC 7300)
USER_MAX = 128
WIDEST = {4: 16, 6: 32}          # the stock limits: settings widest_ipv4 / widest_ipv6


def _unmapped(net):
    """An IPv4-mapped IPv6 range (::ffff:a.b.c.d/n, n >= 96) is the IPv4 range it maps."""
    if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped:
        return ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    return net


def address(value: str) -> str:
    """One address, canonical (IPv4-mapped IPv6 as IPv4)."""
    text = str(value).strip()
    if "%" in text:
        raise ValueError(f"not a client address: {value!r} (an IPv6 zone belongs to one host's interface)")
    if "/" in text:
        raise ValueError(f"not one address: {value!r} (a range is scope range / kind cidr)")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None
    return str(addr.ipv4_mapped or addr) if addr.version == 6 else str(addr)


def network(value: str):
    """A range as an ipaddress network (host bits dropped, IPv4-mapped unmapped)."""
    text = str(value).strip()
    if "%" in text:
        raise ValueError(f"not a range: {value!r} (an IPv6 zone belongs to one host's interface)")
    try:
        return _unmapped(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"not an address range (CIDR): {value!r}") from None


def asn(value: str) -> str:
    text = str(value).strip()
    digits = text[2:] if text[:2].upper() == "AS" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
        raise ValueError(f"not an AS number: {value!r} (e.g. 16509 or AS16509)")
    n = int(digits)
    if not 1 <= n <= ASN_MAX:
        raise ValueError(f"AS number out of range: {value!r} (1 to {ASN_MAX}; AS0 is reserved)")
    return str(n)


def user(value: str) -> str:
    text = str(value)
    if not text or len(text) > USER_MAX:
        raise ValueError(f"a user name is 1 to {USER_MAX} characters: {value!r}")
    bad = [c for c in text if c.isspace() or unicodedata.category(c).startswith("C")]
    if bad:
        raise ValueError(f"a user name has no spaces or control characters: {value!r}")
    return text


# A registry host or a mirror's Host is written into nginx's include as a map key and value, and
# compared with what a request names: a DNS name (an optional port), nothing nginx could read as
# syntax.
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"{LABEL}(?:\.{LABEL})*(?::[0-9]{{1,5}})?")


def registry_host(value) -> str:
    text = value.lower().rstrip(".") if isinstance(value, str) else ""
    if not (0 < len(text) <= 253 and HOST_RE.fullmatch(text)):
        raise ValueError(f"not a registry host name: {value!r} (e.g. docker.io or gcr.m.example:5000)")
    return text


# A tier name is written bare into nginx's include: a `map` key, a `geo` value, a variable and a
# zone name. So it is a short identifier, and never a word nginx reads as a parameter there
# (map: default hostnames include volatile; geo: default delete include proxy proxy_recursive
# ranges) nor the include's own word for a banned address. nginx hashes variable names in
# buckets of 64 bytes (variables_hash_bucket_size): $pw_key_<name> fits up to 39 characters.
TIER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
TIER_RESERVED = frozenset({"default", "hostnames", "include", "volatile", "delete", "proxy", "proxy_recursive",
                           "ranges", "banned"})
# what a tier's limits may be (the admin API's bounds; the agent holds the policy to them)
TIER_LIMITS = {"requests_per_minute": (1, 10**6), "burst": (1, 10**6), "concurrent": (1, 10**5),
               "blob_bytes_per_second": (1024, 10**12), "window_bytes": (1, 10**16), "window_seconds": (60, 10**7)}


def tier_name(value) -> str:
    """A tier's name as the include can carry it, or ValueError saying why not."""
    if not isinstance(value, str) or not TIER_NAME.fullmatch(value):
        raise ValueError(f"a tier name is a letter, then up to 31 of a-z, 0-9, _ and - (e.g. ci_runners): {value!r}")
    if value in TIER_RESERVED:
        raise ValueError(f"{value!r} cannot name a tier: nginx's include reads it as a word of its own "
                         f"(reserved: {', '.join(sorted(TIER_RESERVED))})")
    return value


def tier_zone(name: str) -> str:
    """The name in nginx's zones and variables, where '-' cannot go."""
    return name.replace("-", "_")


def tier_clash(name: str, others) -> str | None:
    """Why ``name`` cannot stand beside the tiers ``others`` (two names, one nginx zone: every
    reload would fail with "already bound"), or None."""
    for other in others:
        if other != name and tier_zone(other) == tier_zone(name):
            return f"tier {name!r} would share nginx's zone pw_{tier_zone(name)} with tier {other!r}: name it otherwise"
    return None


def tier_names(names) -> list[str]:
    """A set of tier names (a policy's, say): each one valid, no two sharing a zone."""
    names = [tier_name(n) for n in names]
    seen: dict[str, str] = {}
    for n in names:
        if tier_zone(n) in seen:
            raise ValueError(tier_clash(n, [seen[tier_zone(n)]]))
        seen[tier_zone(n)] = n
    return names


def tier_limit(field: str, value) -> int | None:
    """One tier limit: None (unlimited) or a whole number within its bounds."""
    if field not in TIER_LIMITS:
        raise ValueError(f"unknown tier limit {field}: the limits are {', '.join(TIER_LIMITS)}")
    if value is None:
        return None
    low, high = TIER_LIMITS[field]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{field} is a whole number from {low} to {high}, or none for unlimited: {value!r}")
    return value


def canonical(scope: str, value: str) -> str:
    """The canonical spelling of a decision's or allowlist entry's value, or ValueError."""
    if scope == "ip":
        return address(value)
    if scope in ("range", "cidr"):
        return str(network(value))
    if scope == "asn":
        return asn(value)
    if scope == "user":
        return user(value)
    raise ValueError(f"scope must be one of ip, range, asn, user (not {scope!r})")


@lru_cache(maxsize=1)
def own_addresses() -> frozenset:
    """This host's addresses, as far as its name resolves (no network needed)."""
    found = set()
    for name in {socket.gethostname(), socket.getfqdn(), "localhost"}:
        try:
            found |= {info[4][0].split("%")[0] for info in socket.getaddrinfo(name, None)}
        except (OSError, UnicodeError):
            continue
    return frozenset(ipaddress.ip_address(a) for a in found)


def too_wide(net, widest: dict[int, int]) -> str | None:
    if net.prefixlen == 0:
        return f"{net} is the whole IPv{net.version} address space"
    if net.prefixlen < widest[net.version]:
        return f"{net} is wider than /{widest[net.version]} (setting widest_ipv{net.version})"
    return None


# What a decision does, for the sentences that refuse or hold one.
VERB = {"ban": ("ban", "bans", "banned"), "throttle": ("throttle", "throttles", "throttled"),
        "boost": ("boost", "boosts", "boosted")}

# Ranges no client connects from (RFC 6890): an X-Forwarded-For header or a misconfigured log
# can name them, a packet from the internet cannot. A decision there stops nobody, and the
# loopback ones are this host.
NO_CLIENT = [(label, ipaddress.ip_network(n)) for label, nets in (
    ("unspecified", ("0.0.0.0/8", "::/128")),           # 0.0.0.0/8 is "this network": never a source
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("broadcast", ("255.255.255.255/32",))) for n in nets]


_SPANS = [(label, special, int(special.network_address), int(special.broadcast_address))
          for label, special in NO_CLIENT]


def no_client(net, name: str | None = None) -> str | None:
    """Why no client comes from ``net`` (a network or one address: it is, or reaches into,
    loopback, link-local, unspecified, multicast or broadcast space), or None. Compared as
    integers: ingest asks it of every distinct X-Forwarded-For hop."""
    if isinstance(net, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        net = net.ipv4_mapped or net if net.version == 6 else net
        lo = hi = int(net)
    else:
        net = _unmapped(net)
        lo, hi = int(net.network_address), int(net.broadcast_address)
    for label, special, first, last in _SPANS:
        if special.version == net.version and lo <= last and first <= hi:
            if first <= lo and hi <= last:
                return f"{name or net} is {label}: no client comes from there"
            return f"{name or net} reaches {label} addresses ({special}): no client comes from there"
    return None


def why_not_ban(scope: str, value: str, widest: dict[int, int], protected: list[str] = (),
                effect: str = "ban") -> str | None:
    """Why a ban (or a throttle, a boost: ``effect``) on this canonical value needs `force`, or
    None. ``protected``: addresses and ranges of our own (the server's listen address,
    trusted_proxies)."""
    if scope not in ("ip", "range"):
        return None
    net = ipaddress.ip_network(value, strict=False)
    wide = too_wide(net, widest) if scope == "range" else None
    return wide or why_held(net, protected, value, effect)


def why_held(net, protected=(), name: str | None = None, effect: str = "ban") -> str | None:
    """Why a decision on ``net`` must not be in force without a person's say: no client comes
    from there, or it is ours. The one guard for manual bans and throttles and for rules."""
    return no_client(net, name) or covers_ours(net, protected, name, effect)


def covers_ours(net, protected=(), name: str | None = None, effect: str = "ban") -> str | None:
    """Why banning or throttling ``net`` would hit everyone (it covers this server's own
    addresses or a trusted proxy: the address a misconfigured log gives every client), or None."""
    ours = {ipaddress.ip_network(a) for a in own_addresses()}
    for p in protected:
        try:
            ours.add(ipaddress.ip_network(str(p).strip(), strict=False))
        except ValueError:
            continue
    noun, verb, _ = VERB[effect]
    for mine in sorted(ours, key=lambda n: (n.version, n)):
        if mine.version == net.version and mine.overlaps(net):
            return (f"{name or net} covers this server or a trusted proxy ({mine}): a {noun} there {verb} "
                    "everyone behind it")
    return None


def prefix_of(ip: str) -> str | None:
    """The /24 of an IPv4 address, the /64 of an IPv6 one: where rotation happens, and what
    counts as one client's own network."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    bits = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))
