"""Golden files: the expected parse of every line of every committed sample log.

After a deliberate change to parsing, regenerate and review the diff:
    UPDATE_GOLDEN=1 python -m pytest tests/test_samples.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import EVENT_COLUMNS, EVENT_SELECT

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_logs"
GOLDEN = Path(__file__).parent / "golden"
FILES = {  # sample → the settings it needs (the custom format is not sniffed: it is pasted)
    "nginx-main/access.log": {},
    "nginx-combined/access.log.1": {},
    "nginx-combined/access.log.2.gz": {},
    "crproxy/crproxy.log": {},
    "nginx-json/access.json": {},
    "custom-format/access.txt": {"log_format": (SAMPLES / "custom-format" / "log_format.txt").read_text().strip()},
}


def snapshot(r) -> dict:
    def rows(sql):
        return [[v if isinstance(v, (int, float, str)) or v is None else str(v) for v in row]
                for row in r.store.execute(sql)]
    return {
        "columns": EVENT_COLUMNS,
        "events": rows(f"select {EVENT_SELECT} from events order by all"),
        "rejects": rows("select line_no, reason, line from rejects order by line_no"),
        "proxy_events": rows("select line_no, ts, level, msg, remote_addr from proxy_events order by line_no"),
        "user_agents": rows("select * from user_agents order by all"),
    }


def dump(snap: dict) -> str:
    """One row a line, so a change shows up as a readable diff."""
    parts = []
    for key, value in snap.items():
        rows = ",\n".join(json.dumps(v, ensure_ascii=False) for v in value)
        parts.append(f'"{key}": [\n{rows}\n]')
    return "{\n" + ",\n".join(parts) + "\n}\n"


@pytest.mark.parametrize("sample", list(FILES))
def test_sample_parses_as_recorded(sample, run):
    r = run(**FILES[sample])
    report = r.ingest(SAMPLES / sample)
    got = snapshot(r)
    golden = GOLDEN / (sample.replace("/", "__") + ".json")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(dump(got))
    want = json.loads(golden.read_text())
    assert got["rejects"] == want["rejects"]
    assert got["proxy_events"] == want["proxy_events"]
    assert got["user_agents"] == want["user_agents"]
    assert len(got["events"]) == len(want["events"])
    for g, w in zip(got["events"], want["events"]):
        assert g == w
    assert report.total("lines") == len(got["events"]) + len(got["rejects"]) + len(got["proxy_events"])
