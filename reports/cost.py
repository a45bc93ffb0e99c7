"""Egress cost for the monthly report: a tiered price per TiB (setting price_per_tib).

Steps [upto_tib, price] are read like a cloud egress tariff: each TiB of the month is priced by
the step it falls in, the first step from 0 to its upto_tib, the next from there to its own;
an upto of 0 (or none) has no upper end, and TiB past the last step cost its price. In the
environment the steps are written upto:price, comma-separated (10:90,50:80,0:70).
"""
from __future__ import annotations

from reports.budget import TIB


def cost(total_bytes: int, steps: list, currency: str) -> dict | None:
    """Tiered price: each step [upto_tib, price] prices the TiB of the month from the step
    before up to upto_tib (0 or none: no upper end); TiB past the last step at its price."""
    parsed = []
    for s in steps or []:
        try:
            upto, price = s.split(":") if isinstance(s, str) else s
            upto, price = float(upto or 0), float(price)
        except (TypeError, ValueError):
            raise ValueError(f"price_per_tib: each step is [upto_tib, price] (upto_tib 0: no upper end), "
                             f"or upto:price in the environment; got {s!r}") from None
        parsed.append((upto if upto > 0 else float("inf"), price))
    if not parsed:
        return None
    tib = total_bytes / TIB
    lines, lower, amount = [], 0.0, 0.0
    for upto, price in parsed:
        part = max(0.0, min(tib, upto) - lower)
        if part > 0:
            lines.append({"from_tib": lower, "to_tib": None if upto == float("inf") else upto,
                          "tib": round(part, 6), "price_per_tib": price, "amount": round(part * price, 2)})
            amount += part * price
        lower = upto
        if tib <= upto:
            break
    if tib > lower:                                      # past the last step: its price
        part = tib - lower
        lines.append({"from_tib": lower, "to_tib": None, "tib": round(part, 6), "price_per_tib": parsed[-1][1],
                      "amount": round(part * parsed[-1][1], 2)})
        amount += part * parsed[-1][1]
    return {"currency": currency, "amount": round(amount, 2), "steps": lines}
