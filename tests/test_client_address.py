"""A client address is an address exactly as Python's ipaddress reads one, in the log's own
field and in a trusted proxy's X-Forwarded-For hop; anything else never becomes a client."""
from __future__ import annotations

import ipaddress
import random

from core.store import open_store
from ingest import normalize
from tests.conftest import write

LINE = '{peer} - - [20/Nov/2024:10:00:0{n} +0000] "GET /v2/ HTTP/1.1" 401 {n} "-" "curl/8.5.0" "{xff}"'


def is_address(text: str) -> bool:
    if "%" in text:                 # a zone names the proxy's interface
        return False
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def forms() -> list[str]:
    """Every group count from 0 to 9, with and without an IPv4 tail, with '::' at every place;
    then seeded random ones (hex groups of any width, tails, stray characters)."""
    out = []
    for n in range(10):
        for tail in (False, True):
            groups = [format(i + 1, "x") for i in range(n)] + (["1.2.3.4"] if tail else [])
            out.append(":".join(groups))
            out += [":".join(groups[:cut]) + "::" + ":".join(groups[cut:]) for cut in range(len(groups) + 1)]
    rng = random.Random(7)
    for _ in range(20_000):
        groups = [format(rng.getrandbits(rng.choice([4, 16, 20])), rng.choice(["x", "X", "05x"]))
                  for _ in range(rng.randint(0, 9))]
        if rng.random() < 0.4:
            groups.append(".".join(str(rng.choice([0, 7, 99, 255, 256, 999])) for _ in range(rng.choice([3, 4, 5]))))
        cut = rng.randint(-1, len(groups))
        text = ":".join(groups) if cut < 0 else ":".join(groups[:cut]) + "::" + ":".join(groups[cut:])
        if rng.random() < 0.1:
            text += rng.choice(["%eth0", " ", ",1.2.3.4", ":"])
        out.append(text)
    return out


def test_the_address_check_agrees_with_ipaddress():
    store = open_store(":memory:")
    normalize.install(store)
    try:
        sample = sorted(set(forms()))
        got = dict(store.execute("select x, pw_addr_problem(x) is null from unnest($l::varchar[]) t(x)",
                                 {"l": sample}))
    finally:
        store.close()
    wrong = [(text, is_address(text)) for text in sample if got[text] != is_address(text)]
    assert wrong == [], wrong[:10]
    assert sum(got.values()) > 300            # the sample holds valid forms, not only junk


def test_junk_in_a_trusted_hop_or_a_nine_group_address_never_becomes_a_client(run, workdir):
    path = write(workdir / "a.log", [
        LINE.format(peer="10.0.0.5", n=1, xff="fe80::1%eth0"),               # the proxy's link-local peer
        LINE.format(peer="10.0.0.5", n=2, xff="[fe80::1%25eth0]:443"),
        LINE.format(peer="10.0.0.5", n=3, xff="2001:db8::7, 10.0.0.5"),
        LINE.format(peer="1:2:3:4:5::6:7:1.2.3.4", n=4, xff="-"),             # nine groups
        LINE.format(peer="1::2:3:4:5:6:7", n=5, xff="-"),                    # valid, '::' for one group
    ])
    r = run(trusted_proxies=["10.0.0.0/8"], format="main")
    r.ingest(path)
    rows = r.store.execute("select bytes, client_ip, peer_ip from events order by bytes")
    # peer_ip is stored only when the peer is not the client (the proxy in front of line 3)
    assert rows == [(1, "10.0.0.5", None), (2, "10.0.0.5", None), (3, "2001:db8::7", "10.0.0.5"),
                    (5, "1::2:3:4:5:6:7", None)]
    assert [(n, reason) for n, reason, _ in r.rejects()] == [
        (4, "client address 1:2:3:4:5::6:7:1.2.3.4 is not an IP address")]
