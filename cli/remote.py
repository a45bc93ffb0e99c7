"""The command line as an API client, for when `pullwarden serve` holds the DuckDB file: the
server is the one door to the state while it runs. serve leaves its URL beside the database
(`<db>.serve.json`), so a command finds it by itself; the key comes from --key or
PULLWARDEN_API_KEY (an admin key for changes)."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from cli.app import actor, fail, run_now


def marker(db: str) -> Path:
    return Path(f"{db}.serve.json")


def announce(db: str, url: str) -> None:
    """Called by serve once it listens."""
    marker(db).write_text(json.dumps({"pid": os.getpid(), "url": url}))


def withdraw(db: str) -> None:
    try:
        if json.loads(marker(db).read_text()).get("pid") == os.getpid():
            marker(db).unlink()
    except (OSError, ValueError):
        pass


def server_url(cfg, given: str | None) -> str | None:
    """The server to talk to: --api / api_url, else the one serving this database."""
    if given or cfg.api_url:
        return (given or cfg.api_url).rstrip("/")
    try:
        info = json.loads(marker(cfg.db).read_text())
        os.kill(int(info["pid"]), 0)            # still running?
        return str(info["url"]).rstrip("/")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def at_server_clock(cfg) -> None:
    """A command about to ask the running server, which judges at the wall clock: a replay's
    pinned `now` cannot be honoured there, so it is refused rather than silently ignored."""
    if cfg.now:
        fail(f"{cfg.db} is held by a running server, which judges at the wall clock: a replay's `now` "
             "needs the server stopped")


def call(cfg, method: str, path: str, body: dict | None = None, api: str | None = None,
         key: str | None = None) -> dict | list:
    """One request to the running server; an error answer is one line and exit 2."""
    url = server_url(cfg, api)
    if url is None:
        fail(f"{cfg.db} is held by a running server, but its URL is unknown: give --api URL")
    key = key or cfg.api_key
    if not key:
        fail(f"{cfg.db} is held by the server at {url}: going through its API needs a key (an admin key "
             "for changes, a viewer key to read): --key KEY or PULLWARDEN_API_KEY")
    req = urllib.request.Request(url + path, method=method, headers={"X-Api-Key": key, "Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail")
        except ValueError:
            detail = None
        if isinstance(detail, list):           # FastAPI's validation errors
            detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
        fail(f"{url}{path}: {e.code} {detail or e.reason}")
    except (urllib.error.URLError, OSError) as e:
        fail(f"{url}: cannot reach the server ({getattr(e, 'reason', e)})")


def local_store(cfg):
    """The store, or None while a running server holds it (the command then goes through its
    API); a file that is not a database is one line and exit 2."""
    from core.store import StoreBusy, StoreError, open_store
    try:
        return open_store(cfg.db)
    except StoreBusy as e:
        if cfg.api_url or server_url(cfg, None):
            return None
        fail(str(e))            # held, but not by a serve we can reach: say who holds it
    except StoreError as e:
        fail(str(e))


def apply_change(cfg, fn, *args, remote: tuple | None = None, **kwargs):
    """``fn`` on the store, or, while serve holds it, ``remote`` = (method, path, body, answer →
    result) on its API: the same change, validated and audited there."""
    store = local_store(cfg)
    if store is None and remote is not None:
        method, path, body, result = remote
        return result(call(cfg, method, path, body))
    if store is None:
        from cli.app import open_or_fail
        store = open_or_fail(cfg.db)        # says who holds the file and exits (or opens it, let go since)
    try:
        return fn(store, actor(), *args, now=run_now(cfg, store, enforced=True), **kwargs)
    except (ValueError, LookupError) as e:
        fail(str(e))
    finally:
        store.close()
