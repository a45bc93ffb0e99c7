"""Read-only replicas: a writer `serve --publish-dir DIR` and a replica `serve --replica-of DIR`,
both real uvicorn processes. What the writer bans, the replica's /v1/check and CrowdSec stream
say within a few seconds; the replica has no DuckDB file and sends changes to the writer."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import httpx
from click.testing import CliRunner

from cli.main import cli
from tests.enforcer_helpers import serving

ENV = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}


def key(role: str, name: str) -> str:
    res = CliRunner().invoke(cli, ["keys", "create", "--role", role, "--name", name, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["key"]


def until(fn, seconds: float = 10.0):
    """Poll fn() every 50 ms until it returns something true; that value and how long it took."""
    start = time.monotonic()
    while True:
        got = fn()
        if got:
            return got, time.monotonic() - start
        assert time.monotonic() - start < seconds, "not within the time allowed"
        time.sleep(0.05)


def test_a_replica_follows_the_writer(workdir):
    admin, proxy, viewer = key("admin", "ops"), key("proxy", "edge-1"), key("viewer", "look")
    shared = workdir / "shared"
    elsewhere = workdir / "replica-home"            # no database there, and none is made
    elsewhere.mkdir()
    with serving(workdir, "--publish-dir", str(shared), clean_exit=True) as writer, \
            serving(elsewhere, "--replica-of", str(shared), clean_exit=True) as replica:
        P, A = {"X-Api-Key": proxy}, {"X-Api-Key": admin}
        health = httpx.get(replica + "/healthz").json()
        assert health["role"] == "replica" and health["writer"] == writer
        assert health["status"] == "ok"
        assert httpx.get(replica + "/v1/check", params={"ip": "203.0.113.7"}, headers=P).json()["allowed"] is True
        assert httpx.get(replica + "/v1/check", params={"ip": "203.0.113.7"}).status_code == 401
        start = httpx.get(replica + "/v1/decisions/stream", params={"startup": "true"}, headers=P).json()
        assert start == {"new": [], "deleted": []}
        v0 = httpx.get(replica + "/v1/policy", headers=P).json()["version"]

        # the writer bans: the replica answers with it within a few seconds
        r = httpx.post(writer + "/v1/admin/bans", headers=A,
                       json={"scope": "ip", "value": "203.0.113.7", "duration": "1h", "reason": "scraper"})
        assert r.status_code == 201, r.text
        verdict, took = until(lambda: (v := httpx.get(replica + "/v1/check", params={"ip": "203.0.113.7"},
                                                      headers=P).json())["allowed"] is False and v)
        assert took < 3.0, took
        print(f"ban on the writer -> replica /v1/check: {took:.2f} s")
        assert "scraper" in verdict["why"][0]
        stream = httpx.get(replica + "/v1/decisions/stream", headers=P).json()
        assert [(d["value"], d["type"], d["scope"]) for d in stream["new"]] == [("203.0.113.7", "ban", "Ip")]
        assert stream["deleted"] == []
        changes = httpx.get(replica + "/v1/policy/changes", params={"since": v0}, headers=P).json()
        assert [b["value"] for b in changes["upsert"]["bans"]] == ["203.0.113.7"]

        # an agent pointed at the replica writes the proxies' files from it
        out = workdir / "agent-out"
        agent = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "agent", "--api", replica,
                                "--key", proxy, "--out", str(out), "--once"], env=ENV, capture_output=True, text=True)
        assert agent.returncode == 0, agent.stderr
        assert "203.0.113.7" in (out / "block-ips.csv").read_text()
        assert "203.0.113.7" in (out / "nginx-pullwarden-http.conf").read_text()

        # the very bytes the writer serves, under the same ETags: a proxy may move between them
        for enc in ("gzip", "identity"):
            w = httpx.get(writer + "/v1/policy", headers={**P, "Accept-Encoding": enc})
            rp = httpx.get(replica + "/v1/policy", headers={**P, "Accept-Encoding": enc})
            assert w.headers["etag"] == rp.headers["etag"] and w.content == rp.content
        assert httpx.get(replica + "/v1/policy", headers={**P, "If-None-Match": w.headers["etag"]}).status_code == 304

        # changes and statistics go to the writer, which the answer names; the command line says so
        refused = httpx.post(replica + "/v1/admin/bans", headers=A,
                             json={"scope": "ip", "value": "198.51.100.1", "duration": "1h", "reason": "x"})
        assert refused.status_code == 409 and writer in refused.json()["detail"]
        assert httpx.get(replica + "/v1/stats/overview", headers={"X-Api-Key": viewer}).status_code == 409
        res = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "keys", "create", "--role",
                              "proxy", "--name", "edge-2", "--api", replica, "--key", admin], cwd=elsewhere,
                             capture_output=True, text=True, env=ENV)
        assert res.returncode == 2 and f"changes go to the writer at {writer}" in res.stderr, res.stderr

        # the ban lifted on the writer: deleted in the replica's stream
        ban_id = httpx.get(writer + "/v1/policy", headers=P).json()["bans"]["ip:203.0.113.7"]["id"]
        assert httpx.request("DELETE", f"{writer}/v1/admin/decisions/{ban_id}", headers=A,
                             json={"reason": "false alarm"}).status_code == 200
        gone, took = until(lambda: httpx.get(replica + "/v1/decisions/stream", headers=P).json()["deleted"])
        assert [d["value"] for d in gone] == ["203.0.113.7"] and gone[0]["duration"].startswith("-")
        assert httpx.get(replica + "/v1/check", params={"ip": "203.0.113.7"}, headers=P).json()["allowed"] is True

        # an AS-number ban: the replica has no asn_db, so it cannot apply it, and says so
        assert httpx.post(writer + "/v1/admin/bans", headers=A, json={"scope": "asn", "value": "64500",
                          "duration": "1h", "reason": "hoster"}).status_code == 201
        why, _ = until(lambda: [w for w in httpx.get(replica + "/v1/check", params={"ip": "192.0.2.9"},
                                                     headers=P).json()["why"] if "AS-number" in w])
        assert "no asn_db" in why[0]

        # a key revoked on the writer stops working on the replica
        assert httpx.request("DELETE", f"{writer}/v1/admin/keys/edge-1", headers=A,
                             json={"reason": "rotated"}).status_code == 200
        until(lambda: httpx.get(replica + "/v1/check", params={"ip": "192.0.2.1"}, headers=P).status_code == 403)

        # the shared folder: the manifest and a few whole policy files, no temporary ones left
        names = sorted(p.name for p in shared.iterdir())
        assert "current.json" in names and all(n == "current.json" or n.startswith("policy-") for n in names)
        manifest = json.loads((shared / "current.json").read_text())
        assert json.loads(gzip.decompress((shared / manifest["policy"]).read_bytes()))["version"] == manifest["version"]
        text = (shared / "current.json").read_text()
        assert admin not in text and proxy not in text and len(manifest["keys"]) == 2, "hashes only"
    assert not (elsewhere / "data").exists()


def test_a_replica_gives_deltas_only_over_versions_it_has_seen(tmp_path):
    """A replica that skipped a version (two publishes between two looks) answers a delta from a
    version it saw, and None (410, or the whole stream) from one it never held."""
    from datetime import datetime

    from enforcer.replica import ReplicaKeys, ReplicaPublisher
    from enforcer.snapshot import Entry, render

    def publish(number: int, bans: list[str]) -> None:
        content = {"allowlist": [], "assignments": {}, "default_tiers": {"anonymous": "anonymous"},
                   "images": {"allowed": [], "blocked": [], "unlimited": []}, "tiers": {},
                   "bans": {f"ip:{ip}": Entry(f"ip:{ip}", n, "2030-01-01T00:00:00", "r", "manual")
                            for n, ip in enumerate(bans, 1)}}
        body, _ = render({"version": number, "generated_at": "2026-12-01T00:00:00", "max_age": 30}, content)
        (tmp_path / f"policy-{number}.json.gz").write_bytes(body)
        (tmp_path / "current.json").write_text(json.dumps({"version": number, "policy": f"policy-{number}.json.gz",
                                                           "writer": "http://w", "keys": []}))

    rp = ReplicaPublisher(tmp_path, lambda: datetime(2026, 12, 1), 30, ReplicaKeys())
    publish(1, ["192.0.2.1"])
    assert rp.load() and not rp.load()              # the same version twice: installed once
    publish(2, ["192.0.2.1", "192.0.2.2"])
    rp.load()
    publish(3, ["192.0.2.2", "192.0.2.3"])          # never seen by this replica
    publish(4, ["192.0.2.3", "192.0.2.4"])
    rp.load()
    d = rp.changes(1)
    assert sorted(b["value"] for b in d["upsert"]["bans"]) == ["192.0.2.3", "192.0.2.4"]
    # 192.0.2.2 came and went after version 1: removed again is harmless, as the writer composes it
    assert sorted(b["value"] for b in d["remove"]["bans"]) == ["192.0.2.1", "192.0.2.2"]
    d = rp.changes(2)
    assert sorted(b["value"] for b in d["remove"]["bans"]) == ["192.0.2.1", "192.0.2.2"]
    assert rp.changes(3) is None and rp.changes(0) is None and rp.changes(4)["upsert"]["bans"] == []
    publish(2, [])                                   # a folder going back: refused, the current kept
    assert not rp.load() and "went back" in rp.error and rp.current.version == 4


def test_a_replica_matches_as_numbers_with_its_asn_db(tmp_path):
    """The writer matches AS-number decisions through ip_info; a replica through its asn_db, and
    without one it says what it could not apply."""
    import hashlib

    from fastapi.testclient import TestClient
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    from core.settings import load
    from enforcer.replica import ReplicaServices, create_replica_app
    from enforcer.snapshot import Entry, render

    w = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    w.insert_network(IPSet(["198.51.100.0/24"]), {"autonomous_system_number": 64500,
                                                  "autonomous_system_organization": "EXAMPLE-CLOUD"})
    w.to_db_file(str(tmp_path / "asn.mmdb"))
    folder = tmp_path / "policy"
    folder.mkdir()
    content = {"allowlist": [], "assignments": {}, "default_tiers": {"anonymous": "anonymous"},
               "images": {"allowed": [], "blocked": [], "unlimited": []}, "tiers": {"anonymous": {}},
               "bans": {"asn:64500": Entry("asn:64500", 7, "2030-01-01T00:00:00", "hoster", "manual")}}
    body, _ = render({"version": 3, "generated_at": "2026-12-01T00:00:00", "max_age": 30}, content)
    (folder / "policy-3.json.gz").write_bytes(body)
    key = "pw_test-proxy-key"
    (folder / "current.json").write_text(json.dumps({
        "version": 3, "policy": "policy-3.json.gz", "writer": "http://writer:8080",
        "keys": [{"key_hash": hashlib.sha256(key.encode()).hexdigest(), "id": 1, "name": "edge", "role": "proxy"}]}))

    def check(asn_db: str, ip: str) -> dict:
        services = ReplicaServices(load(None, {"asn_db": asn_db}, environ={}), folder)
        assert services.publisher.load()
        with TestClient(create_replica_app(services)) as client:
            return client.get("/v1/check", params={"ip": ip}, headers={"X-Api-Key": key}).json()

    banned = check(str(tmp_path / "asn.mmdb"), "198.51.100.9")
    assert banned["allowed"] is False and "asn 64500" in banned["why"][0]
    elsewhere = check(str(tmp_path / "asn.mmdb"), "192.0.2.1")
    assert elsewhere["allowed"] is True and not any("AS-number" in w for w in elsewhere["why"])
    blind = check("", "198.51.100.9")
    assert blind["allowed"] is True and "no asn_db" in blind["why"][-1]
