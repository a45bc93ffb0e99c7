"""The nginx log_format compiler: named formats, pasted formats, and what it refuses."""
from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core.store import open_store
from ingest import formats, normalize
from tests.conftest import write

ISSUE_FORMAT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                '"$http_referer" "$http_user_agent" "$http_x_forwarded_for" $request_time')


def test_custom_format_from_the_issue(run, workdir):
    log = write(workdir / "a.log", [
        '198.51.100.7 - alice [20/Nov/2024:11:02:07 +0800] "GET /v2/docker.io/library/nginx/manifests/1.27 HTTP/1.1" '
        '200 1573 "-" "containerd/v1.7.22" "10.1.2.3, 10.0.0.1" 0.012',
    ])
    r = run(log_format=ISSUE_FORMAT)
    report = r.ingest(log)
    assert report.total("events") == 1
    (e,) = r.events()
    assert e["ts"] == datetime(2024, 11, 20, 3, 2, 7)
    assert e["remote_user"] == "alice"
    assert e["request_time"] == pytest.approx(0.012)
    assert e["forwarded_for"] == "10.1.2.3, 10.0.0.1"
    assert e["client_ip"] == "198.51.100.7"          # the peer is not a trusted proxy
    assert (e["registry"], e["repository"], e["kind"], e["reference"]) == ("docker.io", "library/nginx", "manifest", "1.27")


def test_every_listed_variable_is_understood(run, workdir):
    fmt = ('$remote_addr $remote_user $time_iso8601 $msec "$request_method" "$request_uri" $uri $args $status '
           '$body_bytes_sent $bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for" $request_time '
           '$host $upstream_cache_status "$sent_http_location" $connection')
    log = write(workdir / "a.log", [
        '2001:db8::7 bob 2024-11-20T11:02:07+08:00 1732071727.000 "GET" "/v2/nginx/blobs/sha256:ab?x=1" '
        '/v2/nginx/blobs/sha256:ab x=1 307 0 512 "-" "Helm/3.16.2" "-" 0.002 Docker.M.Example.io HIT '
        '"https://oss.example.com/blob?X-Amz-Signature=deadbeef&referer=2001:db8::7" 42',
    ])
    r = run(log_format=fmt)
    r.ingest(log)
    (e,) = r.events()
    assert e["ts"] == datetime(2024, 11, 20, 3, 2, 7)
    assert e["client_ip"] == "2001:db8::7" and e["remote_user"] == "bob"
    assert (e["method"], e["status"], e["bytes"]) == ("GET", 307, 0)
    assert (e["kind"], e["registry"], e["repository"], e["digest"]) == ("blob", "docker.io", "library/nginx", "sha256:ab")
    assert (e["host"], e["cache_status"]) == ("docker.m.example.io", "HIT")
    assert "deadbeef" not in e["location"] and "referer=2001:db8::7" in e["location"]
    assert e["user_agent"] == "Helm/3.16.2"


def test_msec_and_uri_args(run, workdir):
    log = write(workdir / "a.log", ['198.51.100.7 1732071727.250 GET /v2/library/alpine/manifests/3.20 ns=quay.io 200 10'])
    r = run(log_format="$remote_addr $msec $request_method $uri $args $status $bytes_sent")
    r.ingest(log)
    (e,) = r.events()
    assert e["ts"] == datetime(2024, 11, 20, 3, 2, 7, 250000)
    assert (e["registry"], e["repository"]) == ("quay.io", "library/alpine")  # ?ns= wins over the default


@pytest.mark.parametrize("fmt, message", [
    ('$remote_addr [$time_local] "$request $status', "odd number of quote"),
    ("$remote_addr$remote_user [$time_local] \"$request\" $status", "not separated"),
    ('$remote_addr [$time_local] $http_user_agent $status "$request"', "can contain spaces"),
    ('$remote_addr "$request" $status', "lacks $time_local"),
    ('$remote_addr [$time_local] $status', "lacks $request"),
    ('[$time_local] "$request" $status', "lacks $remote_addr"),
    ('$remote_addr [$time_local] "$request" $status $status', "appears twice"),
])
def test_bad_log_format_is_refused_with_the_reason(fmt, message):
    with pytest.raises(formats.FormatError, match=message.replace("$", r"\$")):
        formats.get_format(log_format=fmt)


def test_unknown_format_name():
    with pytest.raises(formats.FormatError, match="unknown format 'apache'"):
        formats.get_format("apache")


# -- property: whatever nginx writes for a request, the parse gives the request back ----------

def nginx_escape(s: str) -> str:
    out = []
    for ch in s:
        b = ch.encode()
        if ch in '"\\' or any(x < 0x20 or x > 0x7e for x in b):
            out.append("".join(f"\\x{x:02X}" for x in b))
        else:
            out.append(ch)
    return "".join(out)


# "-" is how nginx writes a missing header: a user agent of that one character reads back as none
ua_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"),
                  min_size=1, max_size=60).filter(lambda ua: ua != "-")
repo = st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", fullmatch=True)
registry = st.sampled_from(["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "nvcr.io", "localhost:5000"])


@pytest.fixture(scope="module")
def mem_store():
    s = open_store(":memory:")
    normalize.install(s)
    yield s
    s.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ua=ua_text, reg=registry, name=repo, tag=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
       status=st.integers(100, 599), size=st.integers(0, 2**40), head=st.booleans(),
       v6=st.booleans(), octets=st.tuples(*[st.integers(0, 255)] * 4))
def test_main_format_round_trip(mem_store, ua, reg, name, tag, status, size, head, v6, octets):
    ip = "2001:db8::%x" % octets[0] if v6 else ".".join(map(str, octets))
    method = "HEAD" if head else "GET"
    line = (f'{ip} - - [20/Nov/2024:11:02:07 -0130] "{method} /v2/{reg}/{name}/manifests/{tag} HTTP/1.1" '
            f'{status} {size} "-" "{nginx_escape(ua)}" "-"')
    fmt = formats.get_format("main")
    rows = mem_store.execute(f"""
        with lines as (select 1 as line_no, $line as line), parsed as ({fmt.select_sql()})
        select client_ip, method, status, bytes, user_agent, registry, repository, kind, reference, ts
        from ({normalize.events_sql('parsed')})""",
        {"line": line, "file_id": 1, "xff_peer": [], "xff": [], "xff_client": [], "hosts": [], "host_registries": [],
         "default_registry": "docker.io"})
    assert len(rows) == 1, line
    client, m, s, b, got_ua, got_reg, got_repo, kind, ref, ts = rows[0]
    expected_repo = f"library/{name}" if reg == "docker.io" and "/" not in name else name
    assert (client, m, s, b) == (ip, method, status, size)
    # readable text comes back decoded; control characters stay in nginx's escaped form
    readable = all(ord(c) >= 0x20 or c == "\t" for c in ua)
    assert got_ua == (ua if readable else nginx_escape(ua))
    assert (got_reg, got_repo, kind, ref) == (reg, expected_repo, "manifest", tag)
    assert ts == datetime(2024, 11, 20, 12, 32, 7)


@pytest.mark.parametrize("size", [3_000_000, 9_000_000])
def test_overlong_line_is_rejected_with_its_length(run, workdir, size):
    ok = '198.51.100.7 - - [20/Nov/2024:11:02:0{n} +0800] "GET /v2/ HTTP/1.1" 401 87 "-" "curl/8.5.0" "-"'
    long_line = ok.format(n=2).replace("curl/8.5.0", "x" * size)
    log = write(workdir / "a.log", [ok.format(n=1), long_line, ok.format(n=3)])
    r = run(format="main")
    report = r.ingest(log)
    assert report.total("events") == 2
    ((line_no, reason, kept),) = r.rejects()
    assert line_no == 2
    assert reason == f"line of {len(long_line)} bytes is longer than the 2 MiB limit"
    assert kept.startswith("\x02overlong ") and "198.51.100.7" in kept
