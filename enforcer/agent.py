"""`pullwarden agent`: the policy as files for proxies that read files (CRProxy, nginx).

Fetches GET /v1/policy once, then polls /v1/policy/changes for what changed since the version it
holds (the whole policy again after a 410), renders the files, writes only those that changed
(atomically: a temporary file renamed over the old one), then runs the reload command and,
when asked, PUTs the lists to CRProxy's /internal/api/* (which has no authentication: keep
that port private).
"""
from __future__ import annotations

import gzip
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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


MANAGED = ("block-ips.csv", "allows.txt", "privileged-images.txt", "blocked-images.txt", "privileged-ips.txt",
           "nginx-pullwarden-http.conf", "nginx-pullwarden-location.conf")


def write_atomically(folder: Path, files: dict[str, str], managed=MANAGED) -> list[str]:
    """Write the files that changed, and remove managed files the policy no longer has (an
    emptied list must not stay in force); returns what changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = []
    for name in managed:
        if name not in files and (folder / name).exists():
            (folder / name).unlink()
            changed.append(f"{name} (removed)")
    for name, content in files.items():
        path = folder / name
        if path.exists() and path.read_text() == content:
            continue
        tmp = folder / f".{name}.tmp"
        tmp.write_text(content)
        os.replace(tmp, path)
        changed.append(name)
    return changed


def _push(crproxy: str, files: dict[str, str]) -> None:
    for endpoint, name in (("allows", "allows.txt"), ("privileged", "privileged-images.txt"),
                           ("block-ips", "block-ips.csv")):
        if name not in files:
            continue
        req = urllib.request.Request(f"{crproxy.rstrip('/')}/internal/api/{endpoint}", data=files[name].encode(),
                                     method="PUT", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10):
            pass


def _get(url: str, key: str) -> dict:
    req = urllib.request.Request(url, headers={"X-Api-Key": key, "Accept-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
            return json.loads(gzip.decompress(data) if resp.headers.get("Content-Encoding") == "gzip" else data)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise RuntimeError(f"{url}: the key was refused ({e.code})") from None
        raise


def apply(policy: dict, delta: dict) -> dict:
    """A delta from /v1/policy/changes applied to the policy of its `since` version."""
    for section in ("bans", "assignments"):
        entries = policy[section]
        for gone in delta["remove"][section]:
            entries.pop(gone["key"], None)
        for e in delta["upsert"][section]:
            entries[f"{e['scope']}:{e['value']}"] = e
    policy.update(delta["sections"])
    policy["version"] = delta["version"]
    return policy


def poll(api: str, key: str, held: dict | None) -> dict | None:
    """The policy now, or None when it did not change. Whole on the first poll, after that
    only the changes since the held version (a 100,000-ban policy is 15 MB; a change is a few
    hundred bytes); whole again when the server no longer knows that version (410)."""
    api = api.rstrip("/")
    if held is not None:
        try:
            delta = _get(f"{api}/v1/policy/changes?since={held['version']}", key)
        except urllib.error.HTTPError as e:
            if e.code != 410:
                raise
        else:
            return None if delta["version"] == held["version"] else apply(held, delta)
    return _get(f"{api}/v1/policy", key)


def run(api: str, key: str, out: str, reload_cmd: str | None, crproxy: str | None, interval: float,
        once: bool = False) -> None:
    held = None
    while True:
        try:
            policy = poll(api, key, held)
            if policy is not None:
                held = None             # until the files are written: a failure is retried whole
                files = render(policy)
                changed = write_atomically(Path(out), files)
                if changed:
                    print(f"agent: policy version {policy['version']}: wrote {', '.join(changed)}", file=sys.stderr)
                    if reload_cmd:
                        subprocess.run(reload_cmd, shell=True, check=False)
                    if crproxy:
                        _push(crproxy, files)
                held = policy
        except (urllib.error.URLError, OSError, ValueError) as e:
            if once:
                raise RuntimeError(f"{api}: {e}") from None
            print(f"agent: {e}; keeping the current files", file=sys.stderr)
        if once:
            return
        time.sleep(interval)
