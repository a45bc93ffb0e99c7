"""CrowdSec bouncers that were away for longer than the policy history kept (issue 20 §4): the
real readers, pycrowdsec and CrowdSec's Go custom bouncer (Debian's crowdsec-custom-bouncer),
against a real enforcer over HTTP. A bouncer that is not starting up keeps what it has, so
what ended while it was away must come in `deleted`, or it stays banned there.

The history is cut to 20 versions here (snapshot.HISTORY, 2,000 in production) so that a gap
of 100 versions is 5 times too long and the test takes seconds; bench/bench_stale_bouncers.py
runs the same with the production history and a gap of 10,000 versions against `pullwarden
serve`."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from datetime import timedelta

import httpx
import pytest

from enforcer import changes, snapshot
from tests.enforcer_helpers import Enforcer

GAP = 100
BOUNCER = shutil.which("crowdsec-custom-bouncer")


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "HISTORY", 20)
    e = Enforcer(tmp_path)
    yield e
    e.stop()


def _bans(api) -> dict[str, int]:
    """Three bans to revoke while the bouncer is away (an address, a range, an AS number), one
    that runs out meanwhile, one that stays."""
    ids = {"203.0.113.7": api.ban("203.0.113.7", hours=24), "198.51.100.0/24": api.ban("198.51.100.0/24", hours=24,
                                                                                       scope="range"),
           "64500": api.ban("64500", hours=24, scope="asn"), "203.0.113.10": api.ban("203.0.113.10", hours=1),
           "203.0.113.9": api.ban("203.0.113.9", hours=48)}
    api.services.publisher.publish()
    return ids


def _away(api, ids: dict[str, int]) -> set[str]:
    """While the bouncer is away: the three revoked, one expired, and GAP versions of other
    changes (new bans, half of them revoked again); what must be in force afterwards."""
    with api.services.lock:
        for value in ("203.0.113.7", "198.51.100.0/24", "64500"):
            changes.revoke(api.store, "test", ids[value], "false positive", api.clock())
    api.services.publisher.publish()
    kept = {"203.0.113.9"}
    for n in range(GAP):
        value = f"10.1.{n // 256}.{n % 256}"
        if n % 2 and n > 1:     # a later version revokes the one before
            with api.services.lock:
                api.store.execute("update decisions set revoked_at = ?, seq = nextval('decision_seq') "
                                  "where value = ?", [api.clock(), f"10.1.{(n - 1) // 256}.{(n - 1) % 256}"])
            kept.discard(f"10.1.{(n - 1) // 256}.{(n - 1) % 256}")
        api.ban(value, hours=24)
        kept.add(value)
        api.services.publisher.publish()
    api.clock.advance(hours=1, seconds=5)               # 203.0.113.10 runs out
    api.services.publisher.publish()
    assert api.services.publisher.current.version > GAP  # the gap is real
    return kept


def test_pycrowdsec_far_behind_gets_the_deletions(api):
    from pycrowdsec.client import StreamClient
    ids = _bans(api)
    client = StreamClient(api.keys["proxy"], lapi_url=api.url + "/", interval=1, scopes=("ip", "range", "as"))
    client.cycle("true")
    assert set(client.get_current_decisions()) == {"203.0.113.7/32", "198.51.100.0/24", "64500", "203.0.113.10/32",
                                                   "203.0.113.9/32"}
    kept = _away(api, ids)
    client.cycle("false")                       # back, GAP versions behind: no start-up
    held = {v.removesuffix("/32") for v in client.get_current_decisions()}
    assert held == kept                         # before the fix: also 203.0.113.7, the /24, AS64500, .10


def test_a_far_behind_poll_never_deletes_what_is_in_force(api):
    """A ban revoked and then made again while the bouncer was away is in `new`, not `deleted`."""
    ids = _bans(api)
    h = api.headers("proxy")
    httpx.get(api.url + "/v1/decisions/stream?startup=true", headers=h)
    _away(api, ids)
    api.ban("203.0.113.7", hours=3)             # banned again
    api.services.publisher.publish()
    body = httpx.get(api.url + "/v1/decisions/stream?scopes=ip,range,as", headers=h).json()
    new, gone = {d["value"] for d in body["new"]}, {d["value"] for d in body["deleted"]}
    assert "203.0.113.7" in new and "203.0.113.7" not in gone
    assert {"198.51.100.0/24", "64500", "203.0.113.10"} <= gone and not new & gone
    assert all(d["duration"].startswith("-") for d in body["deleted"])


def test_a_far_behind_poll_after_a_restart_of_serve(api, tmp_path):
    """The cursor and its time survive a restart (bouncer_cursors), so the deletions do too."""
    from enforcer.service import Services
    ids = _bans(api)
    h = api.headers("proxy")
    httpx.get(api.url + "/v1/decisions/stream?startup=true", headers=h)
    api.services.save_cursors()
    _away(api, ids)
    again = Services(api.store, api.cfg, clock=api.clock)     # what serve builds at a start
    assert again.cursor_at == api.services.cursor_at
    api.services.cursors.clear()
    api.services.cursor_at.clear()
    api.services.cursors.update(again.cursors)
    api.services.cursor_at.update(again.cursor_at)
    gone = {d["value"] for d in httpx.get(api.url + "/v1/decisions/stream", headers=h).json()["deleted"]}
    assert {"203.0.113.7", "198.51.100.0/24", "203.0.113.10"} <= gone


HOOK = """#!/bin/sh
echo "$1 $2" >> {log}
"""


@pytest.mark.skipif(BOUNCER is None, reason="needs crowdsec-custom-bouncer (Debian; .ci/run installs it)")
def test_go_custom_bouncer_far_behind_gets_del(api, tmp_path):
    """CrowdSec's Go custom bouncer calls its script with `add` and `del`. It polls with
    startup=true once and then with no startup parameter; stopped (SIGSTOP) while GAP versions
    pass, it must then be told `del` for what ended meanwhile."""
    ids = _bans(api)
    log = tmp_path / "hook.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK.format(log=log))
    hook.chmod(0o755)
    cfg = tmp_path / "bouncer.yaml"
    cfg.write_text(f"""bin_path: {hook}
feed_via_stdin: false
total_retries: 0
scenarios_containing: []
scenarios_not_containing: []
origins: []
piddir: {tmp_path}
update_frequency: 1s
cache_retention_duration: 1s
daemonize: false
log_mode: stdout
log_level: info
api_url: {api.url}/
api_key: {api.keys['proxy']}
prometheus:
  enabled: false
  listen_addr: 127.0.0.1
  listen_port: 60602
""")

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    def wait(want: set[str], timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while not want <= set(lines()):
            assert time.monotonic() < deadline, f"hook lines {lines()}, wanted {sorted(want - set(lines()))}"
            assert proc.poll() is None, (tmp_path / "bouncer.out").read_text()[-2000:]
            time.sleep(0.1)
        return lines()

    with open(tmp_path / "bouncer.out", "wb") as out:
        proc = subprocess.Popen([BOUNCER, "-c", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # its default scopes are ip and range: the AS-number ban is not its to enforce
        wait({"add 203.0.113.7", "add 198.51.100.0/24", "add 203.0.113.10", "add 203.0.113.9"})
        os.killpg(proc.pid, signal.SIGSTOP)     # away: no polls while the versions pass
        kept = _away(api, ids)
        os.killpg(proc.pid, signal.SIGCONT)
        wait({"del 203.0.113.7", "del 198.51.100.0/24", "del 203.0.113.10"} | {f"add {v}" for v in kept})
        time.sleep(1.5)                         # a poll more: nothing in force is deleted
        held: set[str] = set()
        for line in lines():
            action, value = line.split(" ", 1)
            (held.add if action == "add" else held.discard)(value)
        assert held == kept
    finally:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_cursor_time_is_that_of_the_version_delivered(api):
    """A delta poll stores when the delivered version was made, never later: what ended after it
    is what a later far-behind poll deletes."""
    api.ban("203.0.113.7")
    v = api.services.publisher.publish()
    h = api.headers("proxy")
    httpx.get(api.url + "/v1/decisions/stream?startup=true", headers=h)
    key = next(iter(api.services.cursors))
    assert api.services.cursor_at[key] == v.generated_at
    api.clock.advance(minutes=5)
    httpx.get(api.url + "/v1/decisions/stream", headers=h)
    assert api.services.cursor_at[key] == v.generated_at <= api.clock() - timedelta(minutes=5)
