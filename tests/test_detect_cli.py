"""The detection commands end to end on the committed samples."""
from __future__ import annotations

import json
import shutil

from tests.test_cli import SAMPLES, invoke


def setup_samples(workdir):
    shutil.copytree(SAMPLES, workdir / "samples")
    assert invoke("ingest", "samples").exit_code == 0


def test_detect_decisions_explain_backtest_allow(workdir, monkeypatch):
    setup_samples(workdir)
    monkeypatch.setenv("PULLWARDEN_NOW", "latest")      # a replay: every command below judges at one time
    res = invoke("detect", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["now"] == "2024-11-20T23:57:37" and out["held"] == []
    found = {(f["rule"], f["entity"]) for f in out["findings"]}
    assert ("ci-repull-storm", "203.0.113.50") in found           # the CI job of the samples
    assert ("tag-scanner", "198.18.0.66") in found                  # the scanner
    assert ("baseline-ip-volume", "192.0.2.80") in found            # the reseller, by the baseline
    enforced = {(d["rule"], d["value"]) for d in out["new"] if not d["simulated"]}
    assert enforced == {("ci-repull-storm", "203.0.113.50"), ("tag-scanner", "198.18.0.66"),
                        ("error-storm", "198.18.0.66")}
    none = {"total": 0, "enforced": 0, "held": 0, "simulated": 0, "held_by_rule": {}}
    # the baseline's volume rule also finds the CI job: with the object-storage samples' downloads it
    # asked for (joined by their signed URLs' referer) it went past 10 GiB a day
    assert ("baseline-ip-volume", "203.0.113.50") in found
    assert out["summary"] == {"findings": 8, "new": {**none, "total": 8, "enforced": 3, "simulated": 5},
                              "extended": none, "allowlisted": 0, "unbanned": 0}

    again = json.loads(invoke("detect", "--json").stdout)          # same data, same time: nothing new
    assert again["new"] == [] and again["extended"] == []

    active = json.loads(invoke("decisions", "list", "--active", "--json").stdout)
    assert {(d["scope"], d["value"], d["effect"], d["tier"], d["rule"]) for d in active} == {
        ("ip", "203.0.113.50", "throttle", "throttled", "ci-repull-storm"),
        ("ip", "198.18.0.66", "ban", None, "tag-scanner"), ("ip", "198.18.0.66", "ban", None, "error-storm")}
    assert all(d["reason"] and d["until"] for d in active)

    text = invoke("explain", "203.0.113.50").output
    assert "MATCH ci-repull-storm" in text and "docker.io/library/python" in text
    exp = json.loads(invoke("explain", "203.0.113.50", "--json").stdout)
    storm = next(v for v in exp["verdicts"] if v["rule"] == "ci-repull-storm")
    assert storm["match"] and storm["features"]["max_blob_downloads"] >= 20 and len(exp["hourly"]) == 24
    assert invoke("explain", "203.0.113.0/16").exit_code == 2
    # the whole story: the decision in force with its id, rule and until, and no allowlist entry
    [throttle] = [d for d in exp["in_force"] if not d["simulated"]]
    assert (throttle["effect"], throttle["rule"], throttle["held"]) == ("throttle", "ci-repull-storm", None)
    assert f"in force: #{throttle['id']} throttle:throttled ip 203.0.113.50 until" in text
    assert exp["allowlisted"] is None and "ALLOWLISTED" not in text
    scanner = invoke("explain", "198.18.0.66").output
    assert scanner.count("in force: #") == 2 and "[tag-scanner]" in scanner and "[error-storm]" in scanner
    manual = invoke("ban", "range", "198.18.0.0/24", "--reason", "by hand", "--duration", "1h")
    assert manual.exit_code == 0, manual.output
    assert "[manual] by hand" in invoke("explain", "198.18.0.66").output

    before = json.loads(invoke("decisions", "list", "--json").stdout)
    bt = json.loads(invoke("backtest", "--from", "2024-11-20T00:00", "--to", "2024-11-21T00:00", "--json").stdout)
    assert set(bt["packs"]) == {"default", "daocloud-baseline"}
    assert "192.0.2.80" in bt["packs"]["daocloud-baseline"]["banned"]
    assert bt["packs"]["daocloud-baseline"]["bytes_saved"] > 0
    assert json.loads(invoke("decisions", "list", "--json").stdout) == before   # backtest wrote none

    res = invoke("allow", "add", "ip", "203.0.113.50", "--reason", "our own CI")
    # the throttle, and the three simulated baseline bans (blob repeats, image repeats, volume)
    assert res.exit_code == 0 and "4 active decision(s) revoked" in res.output
    active = json.loads(invoke("decisions", "list", "--active", "--json").stdout)
    assert "203.0.113.50" not in {d["value"] for d in active}
    text = invoke("explain", "203.0.113.50").output
    assert "ALLOWLISTED: our own CI" in text and "no decision in force" in text
    assert json.loads(invoke("allow", "list", "--json").stdout)[0]["reason"] == "our own CI"
    assert invoke("allow", "remove", "ip", "203.0.113.50").exit_code == 0
    assert invoke("allow", "remove", "ip", "203.0.113.50").exit_code == 2
    assert invoke("allow", "add", "cidr", "not-a-range", "--reason", "x").exit_code == 2


def test_live_commands_judge_at_the_wall_clock(workdir):
    """Without a pinned `now`, old logs are old: nothing in the windows, and detect says why."""
    setup_samples(workdir)
    res = invoke("detect")
    assert res.exit_code == 0 and "findings 0" in res.stdout
    assert "to replay old logs use --now latest" in res.stderr
    replay = json.loads(invoke("detect", "--now", "latest", "--json").stdout)
    assert replay["now"] == "2024-11-20T23:57:37" and replay["new"]
    # a replay's decisions ended long ago on the wall clock, and are in force at the replay's time
    assert json.loads(invoke("decisions", "list", "--active", "--json").stdout) == []
    assert json.loads(invoke("decisions", "list", "--active", "--now", "latest", "--json").stdout)
    assert "not an ISO 8601 time" in invoke("decisions", "list", "--now", "yesterday").stderr


def test_a_bad_site_rule_stops_detect_with_file_and_line(workdir):
    setup_samples(workdir)
    (workdir / "site").mkdir()
    (workdir / "site" / "x.yml").write_text("name: x\ndescription: d\nentity: address\nwindow: 24h\n"
                                            "where: nosuch > 1\naction: ban\nduration: 1h\nreason: r\n")
    res = invoke("detect", "--rules", "site")
    assert res.exit_code == 2 and "site/x.yml:5: where:" in res.stderr and "nosuch" in res.stderr


def test_the_summary_counts_each_decision_once_as_enforced_held_or_simulated(workdir, monkeypatch):
    from tests.test_held import BROKEN          # that module imports this one
    setup_samples(workdir)
    monkeypatch.setenv("PULLWARDEN_NOW", "latest")
    res = invoke("detect")
    assert res.exit_code == 0 and "HELD" not in res.stdout
    assert res.stdout.endswith("findings 8  new decisions 8: 3 enforced, 5 simulated  extended 0\n")
    assert invoke("detect").stdout.endswith("findings 8  new decisions 0  extended 0\n")

    (workdir / "site").mkdir()
    (workdir / "site" / "broken.yml").write_text(BROKEN)
    out = json.loads(invoke("detect", "--rules", "site", "--json").stdout)
    none = {"total": 0, "enforced": 0, "held": 0, "simulated": 0, "held_by_rule": {}}
    assert out["summary"]["new"] == {"total": 45, "enforced": 0, "held": 45, "simulated": 0,
                                     "held_by_rule": {"broken-everyone": 45}}
    assert out["summary"]["extended"] == none
    assert [(h["rule"], len(h["ids"])) for h in out["held"]] == [("broken-everyone", 45)]
    assert sum(1 for d in out["new"] if d["held"]) == 45

    # an hour later the same findings extend what is there: the held ones stay held
    res = invoke("detect", "--rules", "site", "--now", "2024-11-21T01:00")
    assert res.stdout.endswith("new decisions 0  extended 51: 3 enforced, 44 held by the circuit breaker "
                               "(rule broken-everyone: 44), 4 simulated\n")

    # an admin's unban: the rule's finding makes no decision, and the summary says so
    active = json.loads(invoke("decisions", "list", "--active", "--json").stdout)
    scanner = next(d["id"] for d in active if d["rule"] == "tag-scanner")
    assert invoke("unban", str(scanner), "--reason", "our own scanner").exit_code == 0
    res = invoke("detect", "--rules", "site", "--now", "2024-11-21T01:30")
    assert "  unbanned, no decision: 198.18.0.66 (tag-scanner): unbanned by an admin at " in res.stdout
    out = json.loads(invoke("detect", "--rules", "site", "--now", "2024-11-21T01:30", "--json").stdout)
    assert out["summary"]["unbanned"] == 1 and [u["rule"] for u in out["unbanned"]] == ["tag-scanner"]
