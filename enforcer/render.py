"""The published policy rendered into the files proxies read: CRProxy's lists and nginx's
includes. Pure functions of one policy document (GET /v1/policy): the agent writes what they
return; a test runs the result in the real readers."""
from __future__ import annotations

import ipaddress
import sys

RANGE_EXPAND_MAX = 256      # CRProxy's block list takes exact addresses: small ranges are expanded


def _network(value: str, warn=lambda m: None):
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        warn(f"agent: skipped {value!r}: not an address or range")
        return None


def _sorted(items) -> list[str]:
    return sorted(set(items), key=lambda s: s.encode())      # byte order, as CRProxy checks


def render(policy: dict, warn=lambda m: print(m, file=sys.stderr)) -> dict[str, str]:
    """File name → content."""
    blocked = {}
    for e in policy["bans"].values():
        reason = e["reason"].replace(",", ";").replace("\n", " ")
        if e["scope"] == "ip":
            if _network(e["value"], warn) is not None:
                blocked[e["value"]] = reason
        elif e["scope"] == "range":
            net = _network(e["value"], warn)
            if net is None:
                continue
            if net.num_addresses <= RANGE_EXPAND_MAX:
                for addr in net:
                    blocked.setdefault(str(addr), reason)
            else:
                warn(f"agent: range {e['value']} has {net.num_addresses} addresses: not expanded into "
                     "block-ips.csv (the nginx geo block covers it)")
    files = {"block-ips.csv": "".join(f"{ip},{blocked[ip]}\n" for ip in _sorted(blocked))}
    images = policy["images"]
    for name, lst in (("allows.txt", "allowed"), ("privileged-images.txt", "unlimited"), ("blocked-images.txt", "blocked")):
        if images[lst]:                     # CRProxy refuses an empty list: no file then
            files[name] = "".join(p + "\n" for p in _sorted(images[lst]))
    privileged = [e["value"] for e in policy["assignments"].values() if e["tier"] == "unlimited" and e["scope"] == "ip"]
    if privileged:
        files["privileged-ips.txt"] = "".join(ip + "\n" for ip in _sorted(privileged))
    files["nginx-pullwarden-http.conf"], files["nginx-pullwarden-location.conf"] = _nginx(policy)
    return files


def _nginx(policy: dict) -> tuple[str, str]:
    tiers = policy["tiers"]
    version = policy["version"]
    geo = [f"# pullwarden policy version {version}: include inside http {{}}", "geo $pullwarden_tier {",
           f"    default {policy['default_tiers']['anonymous']};"]
    banned = [n for n in (_network(e["value"]) for e in policy["bans"].values() if e["scope"] in ("ip", "range")) if n]
    for e in policy["assignments"].values():
        net = _network(e["value"]) if e["scope"] in ("ip", "range") else None
        # geo takes the longest prefix: a tier for an address inside a banned range must not
        # let that address out of the ban (a ban beats a tier, as /v1/check says)
        if net and not any(net.version == b.version and net.subnet_of(b) for b in banned):
            geo.append(f"    {net} {e['tier']};")
    for net in banned:
        geo.append(f"    {net} banned;")
    geo.append("}")
    http = geo + ["map $pullwarden_tier $pullwarden_banned { banned 1; default 0; }"]
    location = [f"# pullwarden policy version {version}: include in the location that proxies /v2/",
                "if ($pullwarden_banned) { return 403; }"]
    rates = []
    for name, t in sorted(tiers.items()):
        zone = name.replace("-", "_")
        rpm, concurrent = t["requests_per_minute"], t["concurrent"]
        if rpm or concurrent:       # an unlimited tier has no key, so no zone counts it
            http.append(f"map $pullwarden_tier $pw_key_{zone} {{ {name} $binary_remote_addr; default \"\"; }}")
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
        http += ["map $pullwarden_tier $pullwarden_rate {", "    default 0;", *rates, "}"]
        location.append("limit_rate $pullwarden_rate;")
    return "\n".join(http) + "\n", "\n".join(location) + "\n"
