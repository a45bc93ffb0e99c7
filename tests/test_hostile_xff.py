"""X-Forwarded-For from a hostile client (issue 19 §3): the client writes the left end of that
header itself, so it must never choose who gets the blame. The client is the rightmost hop that
is not one of our proxies (nginx realip with `real_ip_recursive on`); a hop no client comes from
is never charged; a rule's decision on such an address, on this server or on a trusted proxy is
held with the reason, as a manual ban of it needs --force."""
from __future__ import annotations

import socket
from datetime import timedelta

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import utcnow
from core.store import open_store
from ingest.forwarded import Chain, hop_address, no_client
from rules.detect import detect
from rules.engine import load_rules
from tests.conftest import write
from tests.detect_helpers import T0, add_events, storm
from tests.detect_helpers import settings as detect_settings
from tests.nginx_helpers import needs_nginx, nginx

LINE = '{peer} - - [20/Nov/2024:10:00:{s:02d} +0000] "GET /v2/ HTTP/1.1" 401 {n} "-" "curl/8.5.0" "{xff}"'
LB, EDGE = "10.0.0.5", "10.0.0.7"            # our load balancers (trusted_proxies = 10.0.0.0/24)
VICTIM, SCANNER, ORDINARY = "198.51.100.200", "203.0.113.77", "203.0.113.10"


def charged(run, workdir, cases: list[tuple[str, str]], trusted=("10.0.0.0/24",)) -> list[str]:
    """Ingest one line per (peer, X-Forwarded-For as logged) and return each line's client."""
    path = write(workdir / "xff.log", [LINE.format(peer=peer, s=i % 60, n=i, xff=xff)
                                       for i, (peer, xff) in enumerate(cases)])
    r = run(trusted_proxies=list(trusted), format="main")
    r.ingest(path)
    return [ip for (ip,) in r.store.execute("select client_ip from events order by bytes")]


def test_the_client_is_the_rightmost_hop_that_is_not_ours(run, workdir):
    cases = [
        (LB, f"{VICTIM}, {SCANNER}"),                  # an appending LB: the client named a victim first
        (LB, f"{VICTIM}, {SCANNER}, {EDGE}"),          # through two of ours
        (LB, f"{SCANNER}, {EDGE}"),
        (LB, SCANNER),                                 # an overwriting LB
        (LB, f"{SCANNER}:51234"),                      # a hop with the port
        (LB, f"[2001:db8::5]:443, {EDGE}"),
        (LB, f"{VICTIM},{SCANNER}"),                   # no space after the comma
        (LB, f"{SCANNER}, "),                          # a trailing comma is no hop
        ("203.0.113.50", f"{VICTIM}"),                 # not from our proxy: the header is the client's
        (LB, f"{EDGE}"),                               # only ours: the farthest of them
    ]
    assert charged(run, workdir, cases) == [SCANNER, SCANNER, SCANNER, SCANNER, SCANNER, "2001:db8::5", SCANNER,
                                            SCANNER, "203.0.113.50", EDGE]


def test_a_hop_no_client_comes_from_is_never_charged(run, workdir):
    """Unspecified, loopback, link-local, multicast, broadcast and junk hops stop the walk: the
    proxy that reported them is charged (its decisions are held), never the hop, and never a
    hop to its left, which the same broken link passed on."""
    cases = [(LB, "0.0.0.0"), (LB, "::"), (LB, "127.0.0.2"), (LB, "::1"), (LB, "fe80::1"),
             (LB, "169.254.10.1"), (LB, "224.0.0.1"), (LB, "ff02::1"), (LB, "255.255.255.255"),
             (LB, "unknown"), (LB, "0.0.0.0, ::ffff:127.0.0.2"),
             (LB, f"{VICTIM}, 0.0.0.0"), (LB, f"{VICTIM}, 127.0.0.2, {EDGE}"), (LB, f"{VICTIM}, unknown, {EDGE}"),
             (LB, "unknown, 203.0.113.90")]        # the scanner is the hop the LB saw: it is charged
    got = charged(run, workdir, cases)
    assert got == [LB] * 11 + [LB, EDGE, EDGE, "203.0.113.90"]


def test_a_loopback_proxy_listed_as_ours_is_walked_past(run, workdir):
    """A TLS terminator on the same host is a trusted proxy once listed: its hop is not a
    special address then but ours."""
    assert charged(run, workdir, [("127.0.0.1", f"{VICTIM}, {SCANNER}, 127.0.0.1")],
                   trusted=("127.0.0.1",)) == [SCANNER]


# ---- whatever the client prepends, the address the trusted LB appended is charged ---------------

HOP = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["unknown", "0.0.0.0", "::", "127.0.0.1", "10.0.0.5", "10.0.0.7", "_hidden", "", " ",
                     "[2001:db8::1]:80", "1.2.3.4:5", "fe80::1%eth0", "999.1.1.1"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e, blacklist_characters='"\\'),
            max_size=20))
PREPENDED = st.lists(HOP, max_size=6).map(", ".join)
OURS = Chain(["10.0.0.0/24"])
# a client address a load balancer can see: not ours, not one no client comes from
CLIENT = st.ip_addresses().map(str).filter(lambda ip: not OURS.trusts(hop_address(ip))
                                           and not no_client(hop_address(ip)))


def appended(sent: str, client: str, via_edge: bool) -> str:
    """What an appending load balancer passes on ($proxy_add_x_forwarded_for), through our edge
    proxy first when ``via_edge``."""
    out = f"{sent}, {client}" if sent else client
    return f"{out}, {EDGE}" if via_edge else out


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(sent=PREPENDED, client=CLIENT, via_edge=st.booleans())
def test_whatever_the_client_prepends_the_appended_address_is_charged(sent, client, via_edge):
    assert OURS.client(LB, appended(sent, client, via_edge)) == hop_address(client)


@settings(max_examples=8, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(lines=st.lists(st.tuples(PREPENDED, st.sampled_from([SCANNER, ORDINARY, "2001:db8::77"]), st.booleans()),
                      min_size=1, max_size=40))
def test_the_same_holds_through_ingest(tmp_path_factory, lines):
    """The walk is joined back to every row in SQL: the same property over stored events."""
    from tests.conftest import Run
    root = tmp_path_factory.mktemp("xff")
    r = Run(root, trusted_proxies=["10.0.0.0/24"], format="main")
    try:
        path = write(root / "a.log", [LINE.format(peer=LB, s=i % 60, n=i, xff=appended(sent, client, edge))
                                      for i, (sent, client, edge) in enumerate(lines)])
        r.ingest(path)
        got = [ip for (ip,) in r.store.execute("select client_ip from events order by bytes")]
    finally:
        r.close()
    assert got == [client for _, client, _ in lines]


# ---- real load balancers: nginx appending, nginx overwriting ------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_nginx
def test_appending_and_overwriting_load_balancers_in_front_of_nginx(run, workdir):
    """nginx as the load balancer (one appends, as `$proxy_add_x_forwarded_for` does; one
    overwrites with `$remote_addr`) in front of nginx as the mirror, which logs `main`. The test
    cannot send from 203.0.113.77 on loopback, so the load balancers take the client's address
    from a header only the test sends (realip from X-Test-Source), the way they would see it on
    the wire. A scanner sends `X-Forwarded-For: <victim>` with its 50 tags lists; the shipped
    tag-scanner rule bans the scanner, never the victim, through either balancer."""
    lb_add, lb_set, mirror = free_port(), free_port(), free_port()
    log = workdir / "nginx" / "mirror.log"
    log.parent.mkdir()
    balancer = """server {{
        listen 127.0.0.1:{port};
        set_real_ip_from 127.0.0.1; real_ip_header X-Test-Source;
        location / {{ proxy_set_header X-Forwarded-For {xff}; proxy_set_header X-Test-Source "";
                     proxy_pass http://127.0.0.1:{mirror}; }}
    }}"""
    servers = f"""
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for"';
    server {{ listen 127.0.0.1:{mirror}; access_log {log} main; location / {{ return 404; }} }}
    {balancer.format(port=lb_add, xff="$proxy_add_x_forwarded_for", mirror=mirror)}
    {balancer.format(port=lb_set, xff="$remote_addr", mirror=mirror)}"""
    files = {"nginx-pullwarden-http.conf": "", "nginx-pullwarden-location.conf": ""}
    with nginx(workdir / "nginx", files, servers, mirror), httpx.Client(timeout=10) as http:
        for port in (lb_add, lb_set):
            for n in range(50):
                r = http.get(f"http://127.0.0.1:{port}/v2/docker.io/scan/repo{n}/tags/list",
                             headers={"X-Test-Source": SCANNER, "X-Forwarded-For": VICTIM})
                assert r.status_code == 404
            http.get(f"http://127.0.0.1:{port}/v2/", headers={"X-Test-Source": ORDINARY})
    logged = log.read_text().splitlines()
    assert len(logged) == 102
    assert logged[0].startswith("127.0.0.1 ") and logged[0].endswith(f'"{VICTIM}, {SCANNER}"')    # appended
    assert logged[51].startswith("127.0.0.1 ") and logged[51].endswith(f'"{SCANNER}"')           # overwritten

    r = run(trusted_proxies=["127.0.0.1"], format="main")
    r.ingest(log)
    by_client = dict(r.store.execute("select client_ip, count(*) from events group by all"))
    assert by_client == {SCANNER: 100, ORDINARY: 2}
    result = detect(r.store, r.cfg, load_rules(r.store, ["default"]), utcnow() + timedelta(minutes=1))
    bans = {(d.value, d.rule, d.held) for d in result.new if d.effect == "ban"}
    assert bans == {(SCANNER, "tag-scanner", None)}


# ---- rules hold what a manual ban needs --force for ---------------------------------------------

def test_a_rule_holds_its_decisions_on_addresses_no_client_comes_from(tmp_path):
    """A log whose client field says 0.0.0.0, ::, 127.0.0.2 or a multicast address (a broken
    proxy chain): the storm rule's decisions there are held with the reason, the real client's
    beside them is in force."""
    store = open_store(str(tmp_path / "db.duckdb"))
    cfg = detect_settings(db=str(tmp_path / "db.duckdb"))
    odd = ["0.0.0.0", "::", "127.0.0.2", "224.0.0.1", "fe80::1", "169.254.3.3"]
    add_events(store, [e for ip in odd + ["203.0.113.9"] for e in storm(ip, hours=24)])
    result = detect(store, cfg, load_rules(store, ["default"]), T0 + timedelta(hours=24))
    made = {d.value: d.held for d in result.new if d.rule == "ci-repull-storm"}
    assert made == {
        "0.0.0.0": "0.0.0.0/32 is unspecified: no client comes from there",
        "::": "::/128 is unspecified: no client comes from there",
        "127.0.0.2": "127.0.0.2/32 is loopback: no client comes from there",
        "224.0.0.1": "224.0.0.1/32 is multicast: no client comes from there",
        "fe80::1": "fe80::1/128 is link-local: no client comes from there",
        "169.254.3.3": "169.254.3.3/32 is link-local: no client comes from there",
        "203.0.113.9": None}
    assert store.execute("select value from decisions where held is null and revoked_at is null") == \
        [("203.0.113.9",)]
    held = store.execute("select target, reason from audit where action = 'hold' order by target, reason")
    assert len(held) == len(odd) and {t for t, _ in held} == {"rule ci-repull-storm"}
    store.close()
