"""Parser cases: each folder under tests/cases holds input.log, optional settings.json and
expected.json. Run one with `pytest tests/test_parser_cases.py -k path-styles`."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "cases"


def _plain(value):
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


def _expect(expected_value):
    if isinstance(expected_value, str) and len(expected_value) >= 19 and expected_value[4] == "-" and expected_value[10] == " ":
        return datetime.fromisoformat(expected_value).isoformat(sep=" ")
    return expected_value


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_case(case, run):
    folder = CASES / case
    settings = json.loads((folder / "settings.json").read_text()) if (folder / "settings.json").exists() else {}
    expected = json.loads((folder / "expected.json").read_text())
    r = run(**settings)
    report = r.ingest(folder / "input.log")
    if "format" in expected:
        assert report.files[0].format == expected["format"]

    events = r.events(order="ts")
    assert len(events) == len(expected["events"]), events
    for got, want in zip(events, expected["events"]):
        for key, value in want.items():
            assert _plain(got[key]) == _expect(value), (key, got)

    rejects = r.rejects()
    assert [(n, reason) for n, reason, _ in rejects] == [tuple(x) for x in expected["rejects"]]
    for n, line in expected.get("reject_lines", {}).items():
        assert dict((k, v) for k, _, v in rejects)[int(n)] == line
    assert report.total("rejects") == len(expected["rejects"])

    if "proxy_events" in expected:
        cols = ["line_no", "ts", "level", "msg", "remote_addr"]
        rows = [dict(zip(cols, row)) for row in r.store.execute(f"select {', '.join(cols)} from proxy_events order by line_no")]
        assert len(rows) == len(expected["proxy_events"])
        for got, want in zip(rows, expected["proxy_events"]):
            for key, value in want.items():
                assert _plain(got[key]) == _expect(value), (key, got)

    everything = json.dumps([[str(v) for v in row] for row in r.store.execute("select * from events")])
    for secret in expected.get("absent", []):
        assert secret not in everything
    # every line is accounted for: an event, a proxy event or a reject
    lines = (folder / "input.log").read_bytes().count(b"\n")
    assert report.total("events") + report.total("proxy_events") + report.total("rejects") == lines
