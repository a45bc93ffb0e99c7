"""The two Python helpers (an IPv6 client's one spelling, escapes that decode to UTF-8) are
registered only when a chunk needs them: registering one makes DuckDB import numpy, a tenth of a
second of every ingest's start-up. A chunk that needs them is loaded again, once, with them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ingest import normalize
from ingest.pipeline import Ingester
from tests.conftest import write

REPO = Path(__file__).resolve().parent.parent
LINE = '{peer} - - [20/Nov/2024:10:00:0{n} +0000] "{request}" 200 {n} "-" "{ua}" "-"'
PLAIN = LINE.format(peer="192.0.2.1", n=1, request="GET /v2/ HTTP/1.1", ua="containerd/v1.7.22")

# a clean log in a fresh interpreter, as `pullwarden ingest` runs it; prints whether numpy came in
CHILD = """
import sys
from core.settings import load
from core.store import open_store
from ingest.pipeline import Ingester
root = sys.argv[1]
cfg = load(None, {"db": root + "/db.duckdb"}, environ={})
store = open_store(cfg.db)
report = Ingester(store, cfg).run([root + "/clean.log"])
assert report.total("events") == 3, report.as_dict()
store.close()
print("numpy" in sys.modules)
"""


def test_a_clean_log_is_read_without_the_python_helpers(workdir):
    write(workdir / "clean.log", [PLAIN, LINE.format(peer="2001:db8::7", n=2, request="GET /v2/ HTTP/1.1",
                                                     ua="docker/27.3.1 UpstreamClient(Docker-Client/27.3.1 \\x5C(linux\\x5C))"),
                                  LINE.format(peer="198.51.100.9", n=3, request="HEAD /v2/library/nginx/manifests/1 HTTP/1.1",
                                              ua="a \\x22quoted\\x22 agent")])
    out = subprocess.run([sys.executable, "-c", CHILD, str(workdir)], capture_output=True, text=True, timeout=60,
                         cwd=workdir, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_chunk_that_needs_them_is_loaded_again_once_with_them(run, workdir):
    needy = [
        PLAIN,
        LINE.format(peer="2001:DB8::0007", n=2, request="GET /v2/ HTTP/1.1", ua="curl/8.5.0"),       # -> 2001:db8::7
        LINE.format(peer="192.0.2.3", n=3, request="GET /v2/ HTTP/1.1", ua="caf\\xC3\\xA9/1.0"),     # -> café/1.0
        LINE.format(peer="192.0.2.4", n=4, request="\\x16\\x03\\x01\\x00", ua="-"),                    # kept escaped
        '999.1.1.1 - - [20/Nov/2024:10:00:05 +0000] "GET /v2/ HTTP/1.1" 200 5 "-" "-" "-"',          # a reject
    ]
    r = run(format="main")
    first = write(workdir / "a.log", [PLAIN])
    report = r.ingest(first)
    assert report.total("events") == 1
    assert r.store.con not in normalize._python_ready          # the clean chunk did not need them
    report = r.ingest(write(workdir / "b.log", needy))
    assert (report.total("lines"), report.total("events"), report.total("rejects")) == (5, 4, 1)
    rows = r.store.execute("""select bytes, client_ip, user_agent, uri from events e join files f using (file_id)
                              where f.path like '%b.log' order by bytes""")
    assert rows == [(1, "192.0.2.1", "containerd/v1.7.22", "/v2/"), (2, "2001:db8::7", "curl/8.5.0", "/v2/"),
                    (3, "192.0.2.3", "café/1.0", "/v2/"), (4, "192.0.2.4", None, "\\x16\\x03\\x01\\x00")]
    assert [(n, reason) for n, reason, _ in r.rejects()] == [(5, "client address 999.1.1.1 is not an IP address")]
    assert r.store.value("select sum(lines) from files") == 6
    # a later Ingester on the same connection (serve makes one a pass) keeps calling them
    Ingester(r.store, r.cfg).run([str(write(workdir / "c.log", [needy[1]]))])
    assert r.store.value("select client_ip from events e join files f using (file_id) where f.path like '%c.log'") \
        == "2001:db8::7"
