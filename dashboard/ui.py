"""What every page shares: the API client, cached reads, the key's role, units, and the one way
an admin acts (a form that asks for a reason, through /v1/admin/*, so it lands in the audit log)."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone

import streamlit as st

from core.when import human
from dashboard.client import ApiError, Client

GIB, TIB = 1 << 30, 1 << 40
UNITS = "GiB = 2^30 bytes, TiB = 2^40 bytes"
NO_TRAFFIC = ("No traffic yet: set `sources` to your access logs (pullwarden.toml or "
              "PULLWARDEN_SOURCES='/var/log/nginx/access.log*') and serve tail-ingests them; "
              "or try the demo month: `pullwarden demo`, then `pullwarden up`.")


def literal(value) -> str:
    """A value that came from a log (a user, a path, an image, a user agent, a reason...) as
    Markdown that shows exactly its text: attackers choose these strings, and a Markdown image in
    a user name would make every operator's browser fetch the attacker's URL. A code span, the one
    Markdown construct whose content is never parsed again (backslash escapes are not enough: GFM
    turns a bare http:// in escaped text into a link), fenced with more backticks than any run in
    the value. Line breaks become spaces: a blank line would end the span early."""
    text = " ".join(str(value).split()) or " "
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"       # CommonMark strips one space each side


def error(e: ApiError) -> None:
    """An API error with what to do: the message may echo a value from a log, so it is literal;
    the hint is ours (with its `commands`)."""
    st.error(f"{literal(e.message)}\n\n{e.hint}")


def client() -> Client:
    return Client.from_env()


# Pages reread the same figures on every click; 30 s keeps the API (and the proxies' polls it
# answers) out of the way of someone clicking through pages, and is still fresh enough.
@st.cache_data(ttl=30, show_spinner=False)
def _cached(url: str, key: str, path: str, params: tuple):
    return Client(url, key).get(path, **dict(params))


def get(path: str, quiet: bool = False, **params):
    """A GET through the cache; an error is shown with what to do, and the answer is None."""
    c = client()
    try:
        return _cached(c.url, c.key, path, tuple(sorted((k, v) for k, v in params.items() if v not in (None, ""))))
    except ApiError as e:
        if not quiet:
            error(e)
        return None


def role() -> str | None:
    """viewer or admin (None: the API cannot be reached or the key is not valid)."""
    c = client()
    try:
        return _cached(c.url, c.key, "/v1/whoami", ())["role"]
    except ApiError as e:
        if e.status != 404:
            error(e)
            return None
    try:                                    # a server without /v1/whoami: the audit log is admin-only
        _cached(c.url, c.key, "/v1/admin/audit", (("limit", 1),))
        return "admin"
    except ApiError:
        return "viewer"


def is_admin() -> bool:
    return role() == "admin"


def act(label: str, method: str, path: str, body: dict, form_key: str) -> None:
    """One admin change in a form: the reason is required and goes with the change to the audit log."""
    reason = st.text_input("Reason (for the audit log)", key=f"{form_key}-reason")
    if st.form_submit_button(label, key=f"{form_key}-submit"):
        if not reason.strip():
            st.error("A reason is required: it is written to the audit log with the change.")
            return
        try:
            answer = client().request(method, path, body={**body, "reason": reason.strip()})
        except ApiError as e:
            error(e)
            return
        st.cache_data.clear()
        # run the page again so that it shows the change; the message waits in the session
        st.session_state["flash"] = f"{label}: done (policy version {answer.get('policy_version')}), audited with your reason."
        st.rerun()


def flash() -> None:
    """The message of the action that made this run, once."""
    message = st.session_state.pop("flash", None)
    if message:
        st.success(message)


def viewer_note() -> None:
    st.caption("Read-only: this key is a viewer key. Actions need an admin key (`pullwarden keys create --role admin`).")


def tib(n) -> float:
    return round((n or 0) / TIB, 3)


def gib(n) -> float:
    return round((n or 0) / GIB, 2)


def size(n) -> str:
    n = n or 0
    return f"{n / TIB:,.3f} TiB" if n >= TIB else f"{n / GIB:,.2f} GiB"


def pct(share) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


def date_range(key: str, days: int = 7, latest: date | None = None) -> tuple[str, str]:
    """A date range picker; the API's range is [start, end) so the end date is included."""
    end = latest or date.today()
    picked = st.date_input("Dates", (end - timedelta(days=days - 1), end), key=key)
    if isinstance(picked, (tuple, list)) and len(picked) == 2:
        start, last = picked
    else:                                   # a half-picked range: one day
        start = last = picked[0] if isinstance(picked, (tuple, list)) else picked
    return start.isoformat(), (last + timedelta(days=1)).isoformat()


def latest_day() -> date | None:
    """The day of the newest event, so the default range shows data even for replayed logs."""
    o = get("/v1/stats/overview", quiet=True)
    if o and o.get("latest_event"):
        return datetime.fromisoformat(str(o["latest_event"])).date()
    return None


def tiers() -> dict[str, dict]:
    """Tier name -> its limits ({} when the server cannot say)."""
    t = (get("/v1/stats/tiers", quiet=True) or {}).get("tiers") or {}
    return {x["name"]: x for x in t} if isinstance(t, list) else dict(t)


# the columns of the API's answers that hold a time (naive UTC or ISO 8601)
TIME_FIELDS = ("ts", "now", "at", "created_at", "until", "revoked_at", "held_at", "frozen_at", "first_seen",
               "last_seen", "latest_event", "as_of", "generated_at", "added_at")


def timezone() -> str:
    """The operator's report_timezone, as the server's budget status gives it (UTC when it cannot say)."""
    b = get("/v1/stats/budget", quiet=True) or {}
    return b.get("timezone") or "UTC"


def when(t) -> str:
    """A time for people: to the second, in report_timezone, with the zone's name."""
    return human(t, timezone())


def local_times(rows: list[dict]) -> list[dict]:
    """``rows`` with every time column as ``when`` shows it (the API keeps ISO 8601 UTC)."""
    tz = timezone()
    return [{k: human(v, tz) if k in TIME_FIELDS and v is not None else v for k, v in r.items()} for r in rows]


def instant(t) -> datetime:
    """An API time (ISO 8601, with a space or a T) as a naive UTC datetime, to compare."""
    t = datetime.fromisoformat(str(t).replace("Z", "+00:00"))
    return t.replace(tzinfo=None) if t.tzinfo is None else t.astimezone(dt_timezone.utc).replace(tzinfo=None)
