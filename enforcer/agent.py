"""`pullwarden agent`: the policy as files for proxies that read files (CRProxy, nginx).

Fetches GET /v1/policy once, then polls /v1/policy/changes for what changed since the version it
holds (the whole policy again after a 410), renders the files, writes only those whose bytes
changed (atomically: a temporary file renamed over the old one), runs the reload command until
it succeeds, and, when asked, PUTs each list to CRProxy's /internal/api/* until CRProxy takes it
(that API has no authentication: keep the port private).

It trusts nothing it is sent: an answer is read up to a size (unpacked, so a small gzip cannot
unpack to gigabytes), and checked whole (enforcer/policy_doc.py) before anything is written; an
answer that fails is a failed fetch — one line, the current files kept, tried again later.
"""
from __future__ import annotations

import difflib
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Callable

from enforcer import heap, policy_doc
from enforcer.policy_doc import MAX_POLICY_MB
from enforcer.render import Renderer, render

MANAGED = ("block-ips.csv", "allows.txt", "privileged-images.txt", "blocked-images.txt", "privileged-ips.txt",
           "crproxy-flags.txt", "nginx-pullwarden-http.conf", "nginx-pullwarden-location.conf",
           "nginx-pullwarden-server.conf")
# CRProxy's endpoint for each list file it reads with a --…-from-file flag
ENDPOINTS = (("allows", "allows.txt"), ("privileged", "privileged-images.txt"), ("block-ips", "block-ips.csv"))
CRPROXY_LISTS = {name for _, name in ENDPOINTS}
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
RELOAD_TIMEOUT = 120
FETCH_SECONDS = 300         # a whole answer, however slowly it trickles in
CHUNK = 1 << 16
# in --out while files are written that no reload has taken: a restarted agent, or the next
# --once from cron, reloads even though the files on disk are unchanged by then
RELOAD_PENDING = ".reload-pending"
WRITE_SLICE = 1 << 20


def say(message: str) -> None:
    print(f"agent: {message}", file=sys.stderr)


def _excerpt(text, limit: int = 200) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit] + "…"


def normalized(policy: dict) -> dict:
    """The policy in one order whatever order its entries came in: a delta appends what it
    adds while the whole policy is sorted by key, and the renderers keep the first of two bans
    on one address, so without this the same version could give two different files (and a
    reload for nothing)."""
    out = dict(policy)
    for section in ("bans", "assignments", "tiers"):
        out[section] = dict(sorted(policy[section].items()))
    out["images"] = {k: sorted(v) for k, v in sorted(policy["images"].items())}
    if "allowlist" in policy:
        out["allowlist"] = sorted(policy["allowlist"])
    return out


def plan(folder: Path, files: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(the files whose bytes differ from those on disk, the managed files on disk that the
    policy no longer renders: those are left as they are, with the reason)."""
    changed = {}
    for name, content in files.items():
        path = folder / name
        try:
            size = None if path.is_symlink() or not path.is_file() else path.stat().st_size
        except OSError:
            size = None
        # a link is replaced by the file, never read or written through; a file of another size
        # differs without reading it (block-ips.csv is 33-50 MB at 100,000 bans)
        length = len(content) if content.isascii() else len(content.encode())
        if size != length or path.read_bytes() != content.encode():
            changed[name] = content
    left = []
    for name in MANAGED:
        if name not in files and (folder / name).exists():
            why = ("CRProxy cannot take an empty list: it refuses one (\"no hosts found\") and exits at a restart "
                   "when the file is missing" if name in CRPROXY_LISTS else
                   "nothing renders it any more; remove it by hand once nothing reads it")
            left.append(f"{name} left as it was: {why}")
    return changed, left


def write_atomically(folder: Path, files: dict[str, str], warn=say) -> list[str]:
    """Write the files whose bytes changed; never remove one (a list file a running CRProxy
    points at must stay); returns what was written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    changed, left = plan(folder, files)
    for note in left:
        warn(note)
    for name, content in changed.items():
        put_file(folder, name, content)
    return list(changed)


def put_file(folder: Path, name: str, content: bytes | str) -> None:
    """``content`` as folder/name, whole or not at all: written to a new file of a random name,
    created exclusively and never through a link (mkstemp: O_CREAT | O_EXCL | O_NOFOLLOW), then
    renamed over the name — which replaces a link there rather than following it. Whoever can
    plant a link in the folder cannot make the agent write anywhere else."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)            # nginx and CRProxy may run as other users
            if isinstance(content, bytes):
                f.write(content)
            else:       # a slice at a time: no second, encoded copy of a 50 MB block list in memory
                for start in range(0, len(content), WRITE_SLICE):
                    f.write(content[start:start + WRITE_SLICE].encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def diff(folder: Path, changed: dict[str, str]) -> str:
    """The files plan() found changed, as a unified diff against those on disk."""
    out = []
    for name, content in changed.items():
        path = folder / name
        old = path.read_bytes().decode("utf-8", "replace") if path.is_file() else ""
        out += difflib.unified_diff(old.splitlines(keepends=True), content.splitlines(keepends=True),
                                    str(path) if path.is_file() else "/dev/null", str(path))
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in out)


def _put(url: str, body: str) -> str | None:
    """None when CRProxy took it, else what went wrong (CRProxy answers 400 with the parse error)."""
    req = urllib.request.Request(url, data=body.encode(), method="PUT", headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=10):
            return None
    except urllib.error.HTTPError as e:
        try:
            answer = _excerpt(e.read(4096))
        except OSError:
            answer = ""
        return f"PUT {url}: {e.code} {answer or e.reason}"
    except (urllib.error.URLError, OSError) as e:
        return f"PUT {url}: {getattr(e, 'reason', e)}"


class Pusher:
    """Each list PUT to CRProxy on its own: one that fails does not hold up the others and is
    retried with backoff until it lands, whether or not the policy changes meanwhile. Nothing
    has landed at the start, so the first push sends every list: the files on disk may well be
    newer than what CRProxy holds."""

    def __init__(self, crproxy: str, clock):
        self.base, self.clock = crproxy.rstrip("/"), clock
        self.landed: dict[str, str] = {}
        self.retry: dict[str, tuple[float, float, str]] = {}       # endpoint -> (when, next delay, content)

    def push(self, files: dict[str, str]) -> list[tuple[str, float]]:
        """Push what is due; returns each failure with the seconds until its next try."""
        now, took, failed = self.clock(), [], []
        for endpoint, name in ENDPOINTS:
            content = files.get(name)
            if content is None or self.landed.get(endpoint) == content:
                self.retry.pop(endpoint, None)
                continue
            when, delay, tried = self.retry.get(endpoint, (now, BACKOFF_FIRST, None))
            if now < when and content == tried:        # new content goes at once
                continue
            error = _put(f"{self.base}/internal/api/{endpoint}", content)
            if error is None:
                self.landed[endpoint] = content
                self.retry.pop(endpoint, None)
                took.append(endpoint)
            else:
                self.retry[endpoint] = (now + delay, min(2 * delay, BACKOFF_MAX), content)
                failed.append((error, delay))
        if took:
            say(f"CRProxy took {', '.join(took)}")
        return failed

    def due(self) -> float | None:
        return min((when for when, _, _ in self.retry.values()), default=None)


def reload(cmd: str) -> str | None:
    """None when the command succeeded, else the command, its exit status and its stderr."""
    try:
        r = subprocess.run(cmd, shell=True, stderr=subprocess.PIPE, check=False, timeout=RELOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"reload {cmd!r} did not finish in {RELOAD_TIMEOUT} s"
    if r.returncode == 0:
        return None
    return f"reload {cmd!r} failed with exit status {r.returncode}: {_excerpt(r.stderr) or '(nothing on stderr)'}"


def _sharing() -> Callable[[dict], dict]:
    """A json object_hook that holds each repeated string of one document once (an import
    gives 100,000 bans one reason, one expiry, one rule): 26 MB less for a 100,000-ban policy."""
    seen: dict[str, str] = {}

    def share(entry: dict) -> dict:
        for name in ("scope", "until", "reason", "rule", "effect", "tier"):
            value = entry.get(name)
            if value.__class__ is str:
                entry[name] = seen.setdefault(value, value)
        return entry
    return share


class _Unfollowed(urllib.request.HTTPRedirectHandler):
    """The API never redirects; urllib would follow one to any host, the key in its headers."""

    def redirect_request(self, *args, **kwargs):
        return None                     # urllib raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_Unfollowed)


def _body(resp, url: str, limit: int) -> bytes:
    """The answer's bytes, unpacked, refused beyond ``limit`` bytes (a gzip bomb stops there, not
    at what it unpacks to) or FETCH_SECONDS."""
    coding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
    if coding not in ("identity", "gzip", "x-gzip"):
        raise RuntimeError(f"GET {url}: the answer is in {coding!r}, which the agent did not ask for")
    too_big = RuntimeError(f"GET {url}: the answer unpacks to more than {limit >> 20} MB "
                           "(pullwarden agent --max-policy-mb)")
    deadline, out = time.monotonic() + FETCH_SECONDS, bytearray()
    unzip, inside = (zlib.decompressobj(wbits=31) if coding != "identity" else None), False
    while chunk := resp.read(CHUNK):
        if time.monotonic() > deadline:
            raise RuntimeError(f"GET {url}: the answer took longer than {FETCH_SECONDS} s")
        if unzip is None:
            out += chunk
        while unzip is not None and chunk:
            inside = True
            try:
                out += unzip.decompress(chunk, max(1, limit + 1 - len(out)))
            except zlib.error as e:
                raise RuntimeError(f"GET {url}: the answer is not gzip: {e}") from None
            if len(out) > limit:
                raise too_big
            if unzip.eof:       # gzip members may follow one another
                chunk, unzip, inside = unzip.unused_data, zlib.decompressobj(wbits=31), False
            else:
                chunk = unzip.unconsumed_tail
        if len(out) > limit:
            raise too_big
    if inside:
        raise RuntimeError(f"GET {url}: the answer ends inside its gzip stream")
    return bytes(out)


def _get(url: str, key: str, limit: int) -> object:
    """The JSON answer to GET ``url``, as it came (policy_doc checks it); a failure is a
    RuntimeError of one line, a 410 the HTTPError."""
    req = urllib.request.Request(url, headers={"X-Api-Key": key, "Accept-Encoding": "gzip"})
    try:
        with _OPENER.open(req, timeout=30) as resp:
            data = _body(resp, url, limit)
    except urllib.error.HTTPError as e:
        if e.code == 410:
            raise
        if e.code in (401, 403):
            raise RuntimeError(f"{url}: the key was refused ({e.code})") from None
        raise RuntimeError(f"GET {url}: {e.code} {_excerpt(e.read(4096)) or e.reason}") from None
    except urllib.error.URLError as e:
        raise RuntimeError(f"GET {url}: {e.reason}") from None
    except (OSError, ValueError) as e:
        raise RuntimeError(f"GET {url}: {e}") from None
    try:
        return json.loads(data, object_hook=_sharing())
    except (ValueError, RecursionError) as e:
        raise RuntimeError(f"GET {url}: the answer is not JSON: {_excerpt(str(e))}") from None


def _checked(check, doc, url: str, *args) -> dict:
    try:
        return check(doc, *args)
    except policy_doc.Malformed as e:
        raise RuntimeError(f"GET {url}: not a policy the agent can render: {_excerpt(str(e), 300)}") from None


def apply(policy: dict, delta: dict) -> dict:
    """A delta from /v1/policy/changes applied to the policy of its `since` version: a new
    policy (the sections copied, the entries shared), the held one left as it was."""
    policy = dict(policy)
    for section in ("bans", "assignments"):
        entries = policy[section] = dict(policy[section])
        for gone in delta["remove"][section]:
            entries.pop(gone["key"], None)
        for e in delta["upsert"][section]:
            entries[f"{e['scope']}:{e['value']}"] = e
    # only the small sections it knows, which policy_doc.delta checked: never bans by that way
    policy.update({k: v for k, v in delta["sections"].items() if k in policy_doc.SECTIONS})
    policy["version"] = delta["version"]
    return policy


def poll(api: str, key: str, held: dict | None, max_mb: float = MAX_POLICY_MB) -> dict | None:
    """The policy now, or None when it did not change. Whole on the first poll, after that
    only the changes since the held version (a 100,000-ban policy is 15 MB; a change is a few
    hundred bytes); whole again when the server no longer knows that version (410). Either is
    checked whole before it is used."""
    api, limit = api.rstrip("/"), int(max_mb * (1 << 20))
    if held is not None:
        url = f"{api}/v1/policy/changes?since={held['version']}"
        try:
            delta = _checked(policy_doc.delta, _get(url, key, limit), url, held["version"])
        except urllib.error.HTTPError:      # 410: _get raises the others as sentences
            pass
        else:
            return None if delta["version"] == held["version"] else apply(held, delta)
    url = f"{api}/v1/policy"
    return _checked(policy_doc.policy, _get(url, key, limit), url)


def channel(api: str) -> str | None:
    """What is wrong with the way to the API, as a warning (None: TLS, or loopback); a URL that
    is not HTTP at all is refused."""
    url = urllib.parse.urlsplit(api)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise RuntimeError(f"--api {api}: an http:// or https:// URL was expected")
    if url.scheme == "https":
        return None
    try:
        local = ipaddress.ip_address(url.hostname).is_loopback
    except ValueError:
        local = url.hostname == "localhost"
    return None if local else (f"{api} is plain HTTP to another host: the key and the policy can be read and "
                               "changed on the way; use https (docs/deployment.md, the agent's channel) or loopback")


def preview(api: str, key: str, out: str, reload_cmd: str | None, crproxy: str | None,
            max_mb: float = MAX_POLICY_MB) -> int:
    """Print what one poll would change in `out` as a unified diff, and change nothing."""
    if warning := channel(api):
        say(warning)
    policy = normalized(poll(api, key, None, max_mb))
    files = render(policy)
    changed, left = plan(Path(out), files)
    for note in left:
        say(f"would leave {note}")
    sys.stdout.write(diff(Path(out), changed))
    what = [f"would write {', '.join(changed)}" if changed else f"nothing to write in {out}"]
    if reload_cmd and (changed or (Path(out) / RELOAD_PENDING).exists()):
        what.append(f"would run {reload_cmd!r}")
    if crproxy:         # at its start the agent pushes every list, changed or not
        what.append(f"would PUT {', '.join(e for e, name in ENDPOINTS if name in files)} to {crproxy}")
    say(f"--dry-run: policy version {policy['version']}: {'; '.join(what)}")
    return 0


def backoff(interval: float, failed: int) -> float:
    """The pause after ``failed`` failed polls in a row: the interval, doubling, up to a minute
    (or the interval, when that is longer)."""
    return min(max(interval, BACKOFF_FIRST) * 2 ** min(failed - 1, 20), max(interval, BACKOFF_MAX))


def run(api: str, key: str, out: str, reload_cmd: str | None, crproxy: str | None, interval: float,
        once: bool = False, sleep=time.sleep, clock=time.monotonic, max_mb: float = MAX_POLICY_MB) -> int:
    """Poll, write, reload and push until interrupted; with `once`, one round and its exit
    status: 0, or 1 when the files were written but a reload or a push failed. A policy that
    cannot be fetched, checked or written raises RuntimeError (with `once`) or is tried again
    after a pause that doubles with each failure in a row (up to a minute, or the interval)."""
    # each change's render frees a block list of 33 MB at 100,000 bans and its pieces: without
    # this, glibc kept them in its heap and the running agent crept from 176 to 231 MB in three
    # changes (in-process, 100,000 bans); settled it stays at 152 MB (enforcer/heap.py)
    heap.settle()
    if warning := channel(api):
        say(warning)
    pending = Path(out) / RELOAD_PENDING
    held, files, reload_due = None, None, pending.exists()
    renderer = Renderer()       # renders again only the files whose sections changed
    pusher = Pusher(crproxy, clock) if crproxy else None
    next_poll, failed = clock(), 0
    while True:
        failures = []
        if clock() >= next_poll:
            next_poll = clock() + interval
            try:
                policy = poll(api, key, held, max_mb)
                if policy is not None:
                    held = None             # until the files are written: a failure is retried whole
                    started = time.monotonic()
                    fresh = renderer(normalized(policy))
                    rendered = time.monotonic()
                    written = write_atomically(Path(out), fresh)
                    if written:
                        say(f"policy version {policy['version']}: wrote {', '.join(written)} (rendered "
                            f"{len(renderer.rendered)} file(s) in {rendered - started:.2f} s, written in "
                            f"{time.monotonic() - rendered:.2f} s)")
                        reload_due = True
                        if reload_cmd:
                            put_file(Path(out), RELOAD_PENDING, b"")
                    files, held = fresh, policy
                failed = 0
            except Exception as e:         # noqa: BLE001 — a service under Restart=always must not crash-loop
                if once:
                    if isinstance(e, (RuntimeError, OSError)):
                        raise RuntimeError(str(e)) from None
                    raise
                failed += 1
                next_poll = clock() + (pause := backoff(interval, failed))
                what = str(e) if isinstance(e, (RuntimeError, OSError)) else f"{type(e).__name__}: {_excerpt(str(e))}"
                say(f"{what}; keeping the current files, trying again in {pause:g} s")
            # the files on disk stay newer than what the proxy runs until a reload succeeds
            if reload_due and reload_cmd:
                error = reload(reload_cmd)
                if error:
                    failures.append(error + ("" if once else "; retrying at the next poll"))
                else:
                    reload_due = False
                    pending.unlink(missing_ok=True)
        if pusher and files is not None:
            failures += [e if once else f"{e}; retrying in {delay:g} s" for e, delay in pusher.push(files)]
        for failure in failures:
            say(failure)
        if once:
            return 1 if failures else 0
        due = pusher.due() if pusher else None
        sleep(max(0.0, min(next_poll, next_poll if due is None else due) - clock()))
