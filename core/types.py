"""The one decision type, shared from rule to proxy (crowdsec's models.Decision, smaller)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

SCOPES = ("ip", "range", "asn", "user")
EFFECTS = ("ban", "throttle", "boost")
ORIGINS = ("rule", "manual", "import")


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
    id: int | None = None
    seq: int | None = None
    revoked_at: datetime | None = None

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in ("created_at", "until", "revoked_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d
