"""Who a line charges when it came through our own load balancers: X-Forwarded-For read the
way nginx's realip reads it with `real_ip_recursive on`, from the right.

Every hop appends the address it saw, and the left end is whatever the client sent: behind an
appending load balancer a client that sends `X-Forwarded-For: <victim>` arrives as
`<victim>, <itself>`. So the walk starts at the direct peer, and while the address it stands on
is one of ours (`trusted_proxies`) it steps one hop to the left; the first address that is not
ours is the client. Only our own proxies wrote the hops it passes, so nothing the client wrote
is believed.

A hop that is not an address ("unknown", junk, a port alone, a zone-scoped fe80::1%eth0) or
that no client comes from (loopback, link-local, unspecified, multicast, broadcast) stops the
walk where it stands: the line charges the proxy that reported that hop (the direct peer when
it is the rightmost). nginx stops the same way at a hop it cannot parse; it would take
0.0.0.0 or 127.0.0.2 as the client, which we never do. Charging our proxy is deliberate: the
chain is broken there (a proxy of ours that writes such a hop is misconfigured, or a proxy we
do not trust talks to us from loopback), every decision on a trusted proxy is held with the
reason, and the operator sees which proxy to fix or to add to `trusted_proxies`.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

from core import values


def hop_address(hop: str | None) -> str | None:
    """The address in one X-Forwarded-For hop (`1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:443`,
    `::ffff:1.2.3.4`), canonical, or None when it is not one."""
    found = _hop(hop)
    return found[0] if found else None


def _hop(hop: str | None) -> tuple[str, bool] | None:
    """(the canonical address in a hop, whether no client comes from it), or None."""
    if not hop:
        return None
    text = hop.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return _address(text)


# A hop with its port is new on every connection; the address without it repeats: parsed once.
@lru_cache(maxsize=65536)
def _address(text: str) -> tuple[str, bool] | None:
    if "%" in text:         # a zone (fe80::1%eth0) names an interface of the proxy, not a client
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return str(addr), values.no_client(addr) is not None


class Chain:
    """The walk over one deployment's trusted proxies (CIDRs, as in `trusted_proxies`)."""

    def __init__(self, trusted: list[str]):
        self.nets = [ipaddress.ip_network(c, strict=False) for c in trusted]
        self._ours = lru_cache(maxsize=65536)(self._is_ours)

    def _is_ours(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.nets if net.version == addr.version)

    def trusts(self, ip: str | None) -> bool:
        """Whether ``ip`` (a canonical address) is one of our proxies."""
        if not ip or not self.nets:
            return False
        try:
            return self._ours(ip)
        except ValueError:
            return False

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The address a line charges: ``peer`` (canonical) unless it is one of ours, else the
        rightmost hop that is not ours, stopping at a hop that is not a client's address."""
        here = peer
        if not forwarded_for:
            return here
        # empty pieces ("a,,b", a trailing comma) are no hop, as nginx reads the list
        for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
            if not self.trusts(here):
                break
            found = _hop(hop)
            if found is None or (found[1] and not self.trusts(found[0])):
                break       # the chain is broken here: the proxy that reported this hop is charged
            here = found[0]
        return here


def no_client(ip: str) -> bool:
    """Whether no client comes from this canonical address."""
    found = _address(ip)
    return bool(found and found[1])
