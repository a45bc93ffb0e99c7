"""Raw fields → events: the client address, nginx escapes, scrubbing and the registry view.

Written as SQL over a format's SELECT so the whole chunk stays inside DuckDB; the few
helpers are temporary macros (inlined, so they cost nothing per call) plus one Python
function for the rare value with non-ASCII escapes.
"""
from __future__ import annotations

import re
import weakref

import duckdb

from core import imagepath, values

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")

MACROS = r"""
-- an IPv6 client in its one spelling (RFC 5952), IPv4-mapped ones as IPv4: the few that are
-- not written that way already (leading zeros, capitals, zero runs, the hex-mapped form) go
-- through Python's ipaddress
create or replace temp macro pw_unmap(ip) as
    case when contains(ip, ':') then
        case when regexp_matches(ip, '[A-F.]|(^|:)0[0-9a-f]|(^|:)0(:0)+(:|$)|^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}$')
             then pw_canonical_ip(ip) else ip end
    else ip end;

-- nginx writes " and \ as \x22 and \x5C and every other byte outside printable ASCII as \xHH;
-- the two printable ones are decoded in SQL, anything else by pw_unescape_bytes.
create or replace temp macro pw_unescape(s) as
    case when not contains(s, '\x') then s
         when not contains(replace(replace(s, '\x5C', ''), '\x22', ''), '\x')
              then replace(replace(s, '\x22', '"'), '\x5C', '\')
         else pw_unescape_bytes(s) end;

create or replace temp macro pw_scrub(s) as
    case when regexp_matches(s, '(?i)authorization|bearer|token=|signature=')
         then regexp_replace(s,
              '(?i)((?:authorization|access_token|token|x-amz-signature|signature)=)[^&\s]*|(bearer(?:%20|\+|\s)+)[A-Za-z0-9._~+/=-]+',
              '\1\2[scrubbed]', 'g')
         else s end;

-- why a line's client address is not one, or null: a log whose address field holds junk
-- (999.1.1.1, a list, a zone-scoped fe80::1%eth0) must not become a client that rules judge
create or replace temp macro pw_addr_problem(ip) as
    case when ip is null or ip = '' then 'no client address'
         when not (regexp_full_match(ip, '@IPV4@') or (contains(ip, ':') and regexp_full_match(ip, '@IPV6@')))
              then 'client address ' || left(ip, 60) || ' is not an IP address' end;

-- CRProxy's own names for a registry (its docker.io → registry-1.docker.io alias, in the signed
-- URLs and cache keys it writes), read back as the registry clients asked for
create or replace temp macro pw_registry(r) as
    case lower(r) when 'registry-1.docker.io' then 'docker.io' when 'index.docker.io' then 'docker.io'
                  else lower(r) end;

-- a registry host as a request names it, the way the enforcer reads it (core/imagepath.py):
-- any case, without the trailing dot of a fully qualified name (before a port)
create or replace temp macro pw_host(r) as
    case when ends_with(r, '.') or contains(r, '.:') then regexp_replace(lower(r), '\.(:[0-9]+)?$', '\1')
         else lower(r) end;
"""


def _address_patterns() -> tuple[str, str]:
    """IPv4 and IPv6 text forms exactly as Python's ipaddress reads them (RFC 3986's grammar,
    no leading zeros in IPv4, no zone): the common hand-written IPv6 pattern lets through
    forms with nine groups when they end in an IPv4 address."""
    octet = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    v4 = rf"{octet}(?:\.{octet}){{3}}"
    h16 = "[0-9A-Fa-f]{1,4}"
    ls32 = rf"(?:{h16}:{h16}|{v4})"

    def groups(n: int) -> str:                   # n "h16:" in a row
        return rf"(?:{h16}:){{{n}}}" if n else ""

    def before(n: int) -> str:                   # up to n+1 groups before "::"
        return rf"(?:(?:{h16}:){{0,{n}}}{h16})?" if n else f"(?:{h16})?"
    forms = [groups(6) + ls32, "::" + groups(5) + ls32]
    forms += [before(k) + "::" + groups(4 - k) + ls32 for k in range(5)]
    forms += [before(5) + "::" + h16, before(6) + "::"]
    return v4, "(?:" + "|".join(forms) + ")"


_V4, _V6 = _address_patterns()
MACROS = MACROS.replace("@IPV4@", _V4).replace("@IPV6@", _V6)

_HEX = re.compile(r"\\x([0-9A-Fa-f]{2})")


def unescape_bytes(s: str) -> str:
    """Decode nginx \\xHH escapes when the result is readable UTF-8 text; otherwise (a TLS
    handshake sent to a plain-HTTP port, say) keep the escaped form, which is lossless."""
    raw = _HEX.sub(lambda m: "\0" + m.group(1), s)
    out = bytearray()
    for i, part in enumerate(raw.split("\0")):
        if i:
            out.append(int(part[:2], 16))
            part = part[2:]
        out += part.encode("utf-8", "surrogateescape")
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        return s
    if any(ord(c) < 0x20 and c not in "\t" for c in text):
        return s
    return text


def canonical_ip(text: str) -> str:
    """The one spelling core.values gives an address; what is not one is left for the
    address check to reject."""
    try:
        return values.address(text)
    except ValueError:
        return text.lower()


# The two Python helpers serve few lines: an IPv6 client not written in its one spelling, an
# escape other than \x22 and \x5C. Registering a Python function makes DuckDB import numpy: 0.08-0.16 s
# of every ingest's start-up (a 1 M-line run takes 2-3 s), spent before a line is read. So until a
# line needs one, the macros call error(NEEDS_PYTHON) in its place: a statement that reaches it
# fails, and the caller registers the helpers (install(store, python=True)) and runs it again.
NEEDS_PYTHON = "pullwarden: this chunk needs the Python helpers"
_python_ready: weakref.WeakSet = weakref.WeakSet()      # connections that have them


def install(store, python: bool = True) -> None:
    """Create the macros on the store's connection; with ``python``, register the Python helpers
    too (once per connection), else only if they already are (see NEEDS_PYTHON)."""
    if python and store.con not in _python_ready:
        for name, fn in (("pw_unescape_bytes", unescape_bytes), ("pw_canonical_ip", canonical_ip)):
            try:
                store.con.create_function(name, fn, ["VARCHAR"], "VARCHAR", null_handling="default",
                                          side_effects=False)
            except duckdb.NotImplementedException:  # registered before on this connection
                pass
        _python_ready.add(store.con)
    if store.con in _python_ready:
        store.execute(MACROS)
    else:
        # (the functions return null for null, which reaches them: no escapes to test in it)
        ask = "(case when {0} is not null then error('" + NEEDS_PYTHON + "') end)"
        store.execute(MACROS.replace("pw_canonical_ip(ip)", ask.format("ip"))
                      .replace("pw_unescape_bytes(s)", ask.format("s")))


def needs_python(e: BaseException) -> bool:
    """Whether DuckDB's error ``e`` is a statement asking for the Python helpers."""
    return isinstance(e, duckdb.InvalidInputException) and NEEDS_PYTHON in str(e)


def checked(select: str) -> str:
    """A format's SELECT with the lines whose client address is not an address turned into
    rejects, with the reason."""
    # the check is computed once, in a column of its own: written twice (for dest and for the
    # reason), a statement that reads both (a chunk's second pass, for its rejects) ran its regular
    # expressions twice a line (callgrind, parsing 100,000 lines: 1.63 G instructions, 1.41 G once)
    return f"""
select * exclude (problem) replace (case when problem is not null then 'reject' else dest end as dest,
                                    coalesce(problem, reason) as reason)
from (select *, case when dest = 'event' then pw_addr_problem(peer) end as problem from ({select}))"""


def events_sql(parsed: str) -> str:
    """SELECT of event rows (the events table's columns, in order) over a format's SELECT.

    peer_ip is null when the peer is the client (store.py, migration 16).

    Parameters: $file_id; $xff_peer, $xff and $xff_client: for a line from one of our own
    proxies (peer and raw X-Forwarded-For), the address it charges when that is not the peer
    (ingest/forwarded.py walks the header); $hosts and $host_registries (host → registry),
    $default_registry.

    A registry route's image is read by core/imagepath.py's grammar, as /v1/check and nginx
    read it: the route from the end of the path (a greedy name), the registry from the name's
    first segment, else a host-like `?ns=`, else the Host's, else default_registry.
    """
    methods = ", ".join(f"'{m}'" for m in METHODS)
    return f"""
select ts, client_ip, nullif(peer_ip, client_ip) as peer_ip, forwarded_for, pw_unescape(remote_user) as remote_user, method, status, bytes,
    request_time, pw_unescape(user_agent) as user_agent, host, cache_status, registry,
    case when registry = '{imagepath.DOCKER_HUB}' and not contains(repo, '/') then 'library/' || repo else repo end
        as repository,
    kind,
    case when kind in ('manifest', 'referrers') then last end as reference,
    case kind when 'blob' then last end as digest,
    case when kind not in ('manifest', 'blob', 'tags', 'referrers')
         then pw_scrub(case when method is null then pw_unescape(request) else target end) end as uri,
    pw_scrub(location) as location,
    $file_id::integer as file_id
from (
    select *,
        case when name is null or name = '' then null
             when has_registry then pw_host(first)
             when ns is not null and regexp_full_match(ns, '(?:{imagepath.NS_HOST})') then pw_host(ns)
             else pw_host(coalesce(($host_registries::varchar[])[list_position($hosts::varchar[],
                                                                               lower(split_part(host, ':', 1)))],
                                   $default_registry)) end as registry,
        case when has_registry then substr(name, length(first) + 2) else name end as repo
    from (
        select *,
            -- a host-like first segment names the registry only when a name follows it
            contains(name, '/') and length(name) > length(first) + 1
                and (contains(first, '.') or contains(first, ':') or first = 'localhost') as has_registry
        from (
        select *, split_part(name, '/', 1) as first from (
            select *,
                case when kind = 'token' then regexp_extract(url_decode(query), 'scope=repository:([^:&]+)', 1)
                     when kind in ('manifest', 'blob', 'upload', 'tags', 'referrers') then substr(path, 5, name_len)
                end as name,
                case when contains(query, 'ns=') then regexp_extract(query, '(?:^|&)ns=([^&]*)', 1) end as ns
            from (
                select *,
                    case when method is null then 'other'
                         when path = '/v2/' or path = '/v2' then 'ping'
                         when path = '/v2/_catalog' then 'catalog'
                         when not starts_with(path, '/v2/') then
                              case when ends_with(path, '/token') or ends_with(path, '/auth')
                                        or contains(query, 'scope=repository') then 'token' else 'other' end
                         when route is not null and name_len >= 1 then route
                         when ends_with(path, '/token') then 'token'
                         else 'other' end as kind
                from (
                    -- imagepath.ROUTE read from the path's end, segment by segment: the name is what
                    -- lies between /v2/ and the route, however many route words it holds. (The
                    -- same with a regular expression's captures cost 2.5 µs a line, most of ingest's
                    -- CPU; tests/test_request_image.py holds the two readings equal.)
                    select *,
                        case when not starts_with(path, '/v2/') then null
                             when uploading then 'upload'
                             when last = '' then null
                             when seg = 'manifests' then 'manifest'
                             -- /blobs/uploads without the slash: the blob route to a registry (no such
                             -- digest), an upload all the same
                             when seg = 'blobs' then case when last = 'uploads' then 'upload' else 'blob' end
                             when seg = 'referrers' then 'referrers'
                             when seg = 'tags' and last = 'list' then 'tags' end as route,
                        length(path) - 4 - length(last) - length(seg) - case when uploading then 8 else 2 end as name_len
                    from (
                        select *, seg = 'uploads' and third = 'blobs' as uploading
                    from (
                        -- split_part is a macro over string_split: each call splits the whole path
                        -- (0.1 CPU s a million lines); the path is split once and its last three
                        -- segments picked, as split_part would
                        select *, case when path is not null then coalesce(parts[-1], '') end as last,
                            case when path is not null then coalesce(parts[-2], '') end as seg,
                            case when path is not null then coalesce(parts[-3], '') end as third
                        from (select *, string_split(path, '/') as parts
                from (
                    -- the target as the client sent it (nginx's \\xHH decoded), as the proxy reads it
                    select *, case when contains(target, '?') then split_part(target, '?', 1) else target end as path,
                        case when contains(target, '?') then substr(target, strpos(target, '?') + 1) else '' end as query
                    from (select *, pw_unescape(uri) as target from (
                        select ts, status, bytes, request_time, forwarded_for, cache_status, location,
                            remote_user, user_agent, uri, request, peer_ip,
                            -- the peer, or for our own proxies the hop walked to in Python
                            coalesce(xff_client, peer_ip) as client_ip,
                            lower(host) as host,
                            case when method in ({methods}) then method end as method
                        from (select *, pw_unmap(peer) as peer_ip from parsed where dest = 'event') p
                        left join (select unnest($xff_peer::varchar[]) as xff_peer, unnest($xff::varchar[]) as xff_raw,
                                          unnest($xff_client::varchar[]) as xff_client) walked
                               on walked.xff_peer = p.peer_ip and walked.xff_raw = p.forwarded_for
                    ))
                )))
            )
        ))
    )
  )
 )
)"""
