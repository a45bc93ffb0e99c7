"""The renderer as it was before the fast paths (issue 20 §5), kept only to hold the fast one
byte for byte to it (tests/test_render_fast.py). Not imported by the code.

The published policy rendered into the files proxies read: CRProxy's lists and flags, and
nginx's includes. Pure functions of one policy document (GET /v1/policy), which already has
the allowlist cut out of banned ranges: each dialect says what /v1/check says, as far as its
reader can, and `unexpressed()` lists what it cannot.

What a reader takes (checked against its source):
- CRProxy (DaoCloud/crproxy cmd/crproxy, dev = v0.13): `--block-ip-list-from-file` is CSV read
  by Go's encoding/csv (RFC 4180; every record two fields, `ip,reason`), exact addresses only;
  `--allow-image-list-from-file` and `--privileged-image-list-from-file` are one pattern a line,
  sorted in byte order, never empty ("no hosts found"); `--ips-speed-limit BYTES/DURATION` and
  `--blobs-speed-limit BYTES` are flags, read at start.
- nginx: `geo` (the longest prefix wins), `map` (exact keys, then regular expressions in order),
  `limit_req`/`limit_conn`/`limit_rate`.
"""
from __future__ import annotations

import csv
import io
import ipaddress
import re
import sys

from core.values import tier_zone
from enforcer import asnets
from enforcer.imagelist import FORMS, request_regex
from enforcer.snapshot import REQUESTS

RANGE_EXPAND_MAX = 256      # CRProxy's block list takes exact addresses: small ranges are expanded
# CRProxy refuses an empty list, and a missing file at a restart: the list of no images is one
# pattern that no image can match (.invalid is reserved, RFC 2606)
NO_IMAGE = "pullwarden.invalid/no-image"
GIB, MIB, KIB = 1 << 30, 1 << 20, 1 << 10


def _network(value: str):
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _sorted(items) -> list[str]:
    return sorted(set(items), key=lambda s: s.encode())      # byte order, as CRProxy checks


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def render(policy: dict, warn=lambda m: print(m, file=sys.stderr)) -> dict[str, str]:
    """File name → content; what a dialect cannot say goes to ``warn``."""
    files = {**crproxy(policy), **nginx(policy)}
    for note in unexpressed(policy):
        warn(f"agent: {note}")
    return files


# ---- CRProxy --------------------------------------------------------------------------------

def _blocked_addresses(policy: dict) -> dict[str, str]:
    blocked: dict[str, str] = {}
    for e in policy["bans"].values():
        net = _network(e["value"]) if e["scope"] in ("ip", "range") else None
        if net is not None and net.num_addresses <= RANGE_EXPAND_MAX:
            for addr in net:
                blocked.setdefault(str(addr), _one_line(e["reason"]))
    for net, reason in asnets.expandable(policy, RANGE_EXPAND_MAX)[0]:     # banned AS numbers, as far as it can
        for addr in net:
            blocked.setdefault(str(addr), _one_line(reason))
    return blocked


def _size(n: int) -> str:
    for unit, name in ((GIB, "Gi"), (MIB, "Mi"), (KIB, "Ki")):
        if n % unit == 0:
            return f"{n // unit}{name}"
    return str(n)


def _span(seconds: int) -> str:
    for unit, name in ((3600, "h"), (60, "m")):
        if seconds % unit == 0:
            return f"{seconds // unit}{name}"
    return f"{seconds}s"


def crproxy_flags(policy: dict) -> list[str]:
    """The anonymous default tier as CRProxy's byte flags (it has no request-rate or in-flight
    limit, and one set of limits for everyone)."""
    tier = policy["tiers"].get(policy["default_tiers"]["anonymous"]) or {}
    flags = []
    if tier.get("window_bytes") and tier.get("window_seconds"):
        flags.append(f"--ips-speed-limit={_size(tier['window_bytes'])}/{_span(tier['window_seconds'])}")
    if tier.get("blob_bytes_per_second"):
        flags.append(f"--blobs-speed-limit={_size(tier['blob_bytes_per_second'])}")
    return flags


def crproxy(policy: dict) -> dict[str, str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")         # quotes a field with , " or a line break
    blocked = _blocked_addresses(policy)
    for ip in _sorted(blocked):
        writer.writerow([ip, blocked[ip]])
    images = policy["images"]
    # no allow list means every image: `*` alone is hostmatcher's match-all
    allows = _sorted(images["allowed"]) or ["*"]
    privileged = _sorted(images["unlimited"]) or [NO_IMAGE]
    return {"block-ips.csv": out.getvalue(),
            "allows.txt": "".join(p + "\n" for p in allows),
            "privileged-images.txt": "".join(p + "\n" for p in privileged),
            "crproxy-flags.txt": "".join(f + "\n" for f in crproxy_flags(policy))}


# ---- nginx ----------------------------------------------------------------------------------

def _q(text: str) -> str:
    """A quoted nginx string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_zone = tier_zone          # core/values.py: names that share a zone are refused there


# A request's image is read from the request as the client sent it ($request_uri, $host), never
# from $uri, which a rewrite changes. The key is the request's form and URI
# (imagelist.request_key) for a registry route, "odd" for a /v2/ path the upstream reads
# otherwise than nginx ($request_uri is not decoded, a registry decodes a percent escape and
# may resolve a dot segment), "" for anything else (the ping, a token).
ODD_PATH = r"^/v2/[^?]*(?:%|//|/\.\.?(?:/|\?|$))"


def _requests(policy: dict) -> dict:
    return {**REQUESTS, **(policy.get("requests") or {})}


def _request_maps(policy: dict) -> list[str]:
    reading = _requests(policy)
    hosts = sorted(reading["host_registries"].items())
    return ["map $host $pullwarden_host_registry {", f"    default {_q(reading['default_registry'])};",
            *(f"    {_q(h.lower())} {_q(r)};" for h, r in hosts), "}",
            "map $request_uri $pullwarden_image_key {", '    default "";', f"    {_q('~' + ODD_PATH)} odd;",
            *(f"    {_q('~' + form)} " + _q(f"{letter} $pullwarden_host_registry $request_uri" if letter in "OB"
                                           else f"{letter} $request_uri") + ";" for letter, form in FORMS),
            "}"]


# nginx reads a configuration parameter of at most 4 KiB (NGX_CONF_BUFFER): the alternatives
# of one map key stay under this
PARAMETER_MAX = 3000


def _alternatives(parts: list[str], head: str, tail: str) -> list[str]:
    """Map keys, each a regular expression `head(?:a|b|…)tail`, as few as fit nginx's parameter
    size: they all give one value, and nginx's cost is mostly per expression tried."""
    keys, chunk, size = [], [], 0
    for part in parts:
        cost = len(part) * 2 + 1                # at most: _q doubles each backslash
        if chunk and size + cost > PARAMETER_MAX:
            keys.append(chunk)
            chunk, size = [], 0
        chunk.append(part)
        size += cost
    if chunk:
        keys.append(chunk)
    return [_q(f"~{head}(?:" + "|".join(c) + f"){tail}") for c in keys]


def _user_bans(policy: dict) -> list[str]:
    return [e["value"] for e in policy["bans"].values() if e["scope"] == "user"]


def _fits(user: str) -> bool:
    return len(re.escape(user)) * 2 < PARAMETER_MAX


def _patterns_regex(patterns: list[str]) -> list[str]:
    return _alternatives([request_regex(p)[1:] for p in _sorted(patterns)], "^", "")   # each is ^(…)


def _users_regex(users: list[str], prefix: str) -> list[str]:
    """Case-sensitive regular expressions for exact names, as /v1/check compares them (a map's
    exact keys are compared without case)."""
    return _alternatives([re.escape(u) for u in users], f"^{prefix}", "$")


def _address_layers(policy: dict) -> tuple[list, list, list]:
    """(ban networks, assignment (network, tier, effect), allowlisted networks)."""
    bans = [n for e in policy["bans"].values() if e["scope"] in ("ip", "range") and (n := _network(e["value"]))]
    bans += [n for n, _, _ in asnets.banned(policy)]
    entries = sorted((e for e in policy["assignments"].values() if e["scope"] in ("ip", "range")),
                     key=lambda e: (e["scope"] != "ip", e["effect"] != "throttle", e["value"]))
    assigned = [(n, e["tier"], e["effect"]) for e in entries if (n := _network(e["value"]))]
    allowed = [n for v in policy.get("allowlist", []) if (n := _network(v))]
    return bans, assigned, allowed


def _inside(net, others) -> bool:
    return any(net.version == o.version and net.subnet_of(o) for o in others)


def nginx(policy: dict) -> dict[str, str]:
    tiers, defaults = policy["tiers"], policy["default_tiers"]
    authenticated = defaults.get("authenticated", defaults["anonymous"])
    # "-": no assignment covers the address, the default tier for who asks applies
    default = "-"
    bans, assigned, allowed = _address_layers(policy)
    # geo takes the longest prefix, which is how /v1/check ranks too (an address beats its
    # range); what geo cannot rank is said by leaving entries out: a tier inside a banned range
    # (a ban beats a tier) and a throttle inside an allowlisted network (nothing throttles it)
    kept = [(n, t, eff) for n, t, eff in assigned
            if not _inside(n, bans) and not (eff == "throttle" and _inside(n, allowed))]
    tier_geo, throttle_geo = [f"    default {default};"], ["    default 0;"]
    seen = set()
    for n, t, eff in kept:          # in /v1/check's order: an address before an equal /32 range
        if n in seen:
            continue
        seen.add(n)
        tier_geo.append(f"    {n} {t};")
        throttle_geo.append(f"    {n} {int(eff == 'throttle')};")
    for a in allowed:
        if a in seen:
            continue
        seen.add(a)
        # the boost that covers it still applies; a throttle around it does not
        boosts = [(n, t) for n, t, eff in kept if eff != "throttle" and n.version == a.version and a.subnet_of(n)]
        tier_geo.append(f"    {a} {max(boosts, key=lambda x: x[0].prefixlen)[1] if boosts else default};")
        throttle_geo.append(f"    {a} 0;")
    for n in sorted(set(bans), key=lambda n: (n.version, n)):
        tier_geo.append(f"    {n} banned;")
    # no version number in the files: a new version that changes nothing nginx enforces
    # gives the same bytes, and the agent neither rewrites nor reloads
    http = ["# pullwarden: include inside http {}",
            "geo $pullwarden_address_tier {", *tier_geo, "}",
            "geo $pullwarden_throttled {", *throttle_geo, "}",
            "geo $pullwarden_allowlisted {", "    default 0;", *(f"    {a} 1;" for a in sorted(set(allowed), key=lambda n: (n.version, n))), "}",
            "map $pullwarden_tier $pullwarden_banned { banned 1; default 0; }"]
    # who is logged in: nginx sees a basic-auth user ($remote_user) or a bearer token, and
    # checks neither; only an upstream that refuses bad credentials makes them mean something
    http += ['map "$remote_user:$http_authorization" $pullwarden_authenticated {', "    default 0;",
             *(['    "~^(?:[^:]+:|:(?i:bearer) +[^ ])" 1;'] if _requests(policy)["upstream_checks_credentials"] else []),
             "}",
             'map "$pullwarden_address_tier:$pullwarden_authenticated" $pullwarden_tier {',
             "    default $pullwarden_address_tier;",
             f"    -:0 {defaults['anonymous']};", f"    -:1 {authenticated};", "}"]
    # the ban's reason, for the client to read in the 403 (docker prints the body); one per
    # network, the first by its text when two rules ban the same one
    reasons: dict = {}
    for e in sorted(policy["bans"].values(), key=lambda e: str(e["reason"])):
        if e["scope"] in ("ip", "range") and (n := _network(e["value"])) is not None:
            reasons.setdefault(n, _one_line(e["reason"]))
    for n, reason, _ in asnets.banned(policy):
        reasons.setdefault(n, _one_line(reason))
    http += ["geo $pullwarden_reason {", '    default "";',
             *(f"    {n} {_q(reasons[n])};" for n in sorted(reasons, key=lambda n: (n.version, n))), "}"]
    users = sorted(u for u in _user_bans(policy) if _fits(u))
    # a user is known to nginx only by HTTP basic auth ($remote_user); an allowlisted address
    # is never banned, so the key carries both
    http += ['map "$pullwarden_allowlisted:$remote_user" $pullwarden_user_banned {', "    default 0;",
             *(f"    {r} 1;" for r in _users_regex(users, "0:")), "}"]
    images = policy["images"]
    listed = bool(images["blocked"] or images["allowed"])
    http += _request_maps(policy)
    http += ["map $pullwarden_image_key $pullwarden_image_refused {", '    "" 0;', f"    odd {int(listed)};",
             *(f"    {r} 1;" for r in _patterns_regex(images["blocked"])),
             *(f"    {r} 0;" for r in _patterns_regex(images["allowed"])),
             f"    default {1 if images['allowed'] else 0};", "}"]
    http += ["map $pullwarden_image_key $pullwarden_image_unlimited {", "    default 0;",
             *(f"    {r} 1;" for r in _patterns_regex(images["unlimited"])), "}"]
    # an unlimited image lifts the limits unless the address is throttled; a ban stays a ban
    http += ['map "$pullwarden_image_unlimited:$pullwarden_throttled:$pullwarden_tier" $pullwarden_effective_tier {',
             "    default $pullwarden_tier;", '    "~^1:0:(?!banned$)" unlimited;', "}"]
    # the refusals are the rewrite module's, at the server level: they run before a location
    # is chosen, so no rewrite in a location (`rewrite … break` ends the rewrite directives that
    # follow it) can skip them; the limits apply to every location that sets none of its own
    location = ['if ($pullwarden_banned) { return 403 "banned by the mirror: $pullwarden_reason\\n"; }',
                'if ($pullwarden_user_banned) { return 403 "this user is banned by the mirror\\n"; }',
                'if ($pullwarden_image_refused) { return 403 "this image is not served by the mirror\\n"; }']
    rates = []
    for name, t in sorted(tiers.items()):
        zone = _zone(name)
        rpm, concurrent = t["requests_per_minute"], t["concurrent"]
        if rpm or concurrent:       # an unlimited tier has no key, so no zone counts it
            http.append(f"map $pullwarden_effective_tier $pw_key_{zone} {{ {name} $binary_remote_addr; default \"\"; }}")
        if rpm:
            # nodelay: a pull is a burst (token, manifests, config, every layer within seconds), served
            # at once up to `burst` above the rate, 429 beyond; without nodelay nginx would spread the
            # burst out at the rate and every ordinary pull would wait
            http.append(f"limit_req_zone $pw_key_{zone} zone=pw_{zone}:10m rate={rpm}r/m;")
            location.append(f"limit_req zone=pw_{zone} burst={t.get('burst') or 2 * rpm} nodelay;")
        if concurrent:
            http.append(f"limit_conn_zone $pw_key_{zone} zone=pwc_{zone}:10m;")
            location.append(f"limit_conn pwc_{zone} {concurrent};")
        if t["blob_bytes_per_second"]:
            rates.append(f"    {name} {t['blob_bytes_per_second']};")
    location += ["limit_req_status 429;", "limit_conn_status 429;"]
    if rates:
        # per response; nginx lets the first second's worth out at once, so manifests and
        # tokens (a few KiB) are never slowed: in effect it limits blob downloads
        http += ["map $pullwarden_effective_tier $pullwarden_rate {", "    default 0;", *rates, "}"]
        location.append("limit_rate $pullwarden_rate;")
    return {"nginx-pullwarden-http.conf": "\n".join(http) + "\n",
            "nginx-pullwarden-server.conf": "\n".join([SERVER_HEAD, EVALUATED, *location]) + "\n",
            "nginx-pullwarden-location.conf": "\n".join([LOCATION_HEAD, *location]) + "\n"}


SERVER_HEAD = ("# pullwarden: include as the first line of every server {} that serves /v2/, before any rewrite,\n"
               "# return or break of the server's own (those end the server's rewrite directives that follow)")
# Every regular expression nginx matches resets $1…$9 (ngx_http_regex_exec sets r->ncaptures on
# any match, with or without groups), and a map is evaluated when a variable is first read. Read
# here, before a location is chosen, every variable is cached for the request, and a location's
# own captures, taken after, stay its own.
EVALUATED = 'set $pullwarden_evaluated "$pullwarden_effective_tier:$pullwarden_image_refused:$pullwarden_user_banned";'
LOCATION_HEAD = ("# pullwarden: the server include's checks and limits, for a location with limit_req or limit_conn of\n"
                 "# its own (then the server's are not inherited). Alone, without the server include, it must come\n"
                 "# before any rewrite in the location, and the location's captures must be named: its maps'\n"
                 "# regular expressions reset $1...$9")


# ---- what no file can say -------------------------------------------------------------------

def unexpressed(policy: dict) -> list[str]:
    """What /v1/check enforces that a dialect's reader cannot: one line each, for the agent to
    print (and --dry-run to list)."""
    notes = []
    scopes: dict[str, int] = {}
    for e in policy["bans"].values():
        scopes[e["scope"]] = scopes.get(e["scope"], 0) + 1
    wide = [e["value"] for e in policy["bans"].values() if e["scope"] == "range"
            and (n := _network(e["value"])) is not None and n.num_addresses > RANGE_EXPAND_MAX]
    if wide:
        notes.append(f"CRProxy: {len(wide)} banned range(s) wider than {RANGE_EXPAND_MAX} addresses are not in "
                     f"block-ips.csv (it takes exact addresses), e.g. {wide[0]}: nginx's geo or a CrowdSec "
                     "bouncer enforces them")
    if scopes.get("asn"):
        nets = policy.get("asn_networks") or {}
        bare = sorted(e["value"] for e in policy["bans"].values() if e["scope"] == "asn" and not nets.get(e["value"]))
        if bare:
            notes.append(f"{len(bare)} AS-number ban(s) without networks (AS{bare[0]}"
                         f"{' and more' if len(bare) > 1 else ''}): serve has no asn_db, or it has no network for "
                         "them, so only /v1/check (by the AS number ingest found) and the CrowdSec stream "
                         "(scopes=as) enforce them")
        left = asnets.expandable(policy, RANGE_EXPAND_MAX)[1]
        if left:
            notes.append(f"CRProxy: {len(left)} banned AS number(s) not wholly in block-ips.csv (exact addresses: "
                         f"networks of at most {RANGE_EXPAND_MAX}, at most {asnets.AS_EXPAND_MAX:,} an AS): "
                         f"{'; '.join(left[:3])}: nginx's geo or a CrowdSec bouncer enforces them")
    if scopes.get("user"):
        notes.append(f"{scopes['user']} user ban(s): nginx refuses them by $remote_user (basic auth only; a "
                     "bearer token names no user nginx can read); CRProxy and the CrowdSec stream have no users")
    long_users = [u for u in _user_bans(policy) if not _fits(u)]
    if long_users:
        notes.append(f"nginx: {len(long_users)} banned user name(s) longer than an nginx parameter takes are not in "
                     "the include")
    tiers = policy["default_tiers"]
    if tiers.get("authenticated", tiers["anonymous"]) != tiers["anonymous"] and not _requests(policy)["upstream_checks_credentials"]:
        notes.append(f"nginx gives requests with credentials the anonymous default tier ({tiers['anonymous']}), "
                     f"not the authenticated one ({tiers['authenticated']}): it cannot check a password or a "
                     "token; set upstream_checks_credentials where the upstream refuses bad ones")
    users = sum(1 for e in policy["assignments"].values() if e["scope"] == "user")
    asns = sum(1 for e in policy["assignments"].values() if e["scope"] == "asn")
    if users or asns:
        notes.append(f"{users + asns} tier assignment(s) by user or AS number: only /v1/check applies them")
    if policy["assignments"]:
        notes.append("CRProxy: tier assignments are not expressed (it has one set of limits for everyone, "
                     "from crproxy-flags.txt; --privileged-ip-list would also lift the image allow list and "
                     "the block list for those addresses, so pullwarden does not use it)")
    if policy["images"]["blocked"]:
        notes.append(f"CRProxy: {len(policy['images']['blocked'])} blocked image pattern(s) are not expressed "
                     "(no reader for a blocked-image file): nginx's include refuses them")
    return notes
