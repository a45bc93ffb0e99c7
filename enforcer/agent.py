"""`pullwarden agent`: the policy as files for proxies that read files (CRProxy, nginx).

Fetches GET /v1/policy once, then polls /v1/policy/changes for what changed since the version it
holds (the whole policy again after a 410), renders the files, writes only those that changed
(atomically: a temporary file renamed over the old one), then runs the reload command and,
when asked, PUTs the lists to CRProxy's /internal/api/* (which has no authentication: keep
that port private).
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from enforcer.render import render


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
