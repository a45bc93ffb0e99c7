"""The one decision type, shared from rule to proxy (crowdsec's models.Decision, smaller)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SCOPES = ("ip", "range", "asn", "user")
EFFECTS = ("ban", "throttle", "boost")
ORIGINS = ("rule", "manual", "import")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """A decision's length as rules and operators write it: 30m, 24h, 7d."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"bad duration {text!r}: use a number and s, m, h or d (30m, 24h, 7d)")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


@dataclass
class Decision:
    scope: str                 # ip | range | asn | user
    value: str                 # 203.0.113.7, 203.0.113.0/24, 16509, alice
    effect: str                # ban | throttle | boost
    reason: str                # one human line with the numbers
    created_at: datetime
    until: datetime
    rule: str | None = None
    tier: str | None = None    # for throttle and boost
    origin: str = "rule"
    evidence: dict = field(default_factory=dict)
    simulated: bool = False
    held: str | None = None    # why the circuit breaker keeps it out of force; None: applied
    id: int | None = None
    seq: int | None = None
    revoked_at: datetime | None = None

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("created_at", "until", "revoked_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d
