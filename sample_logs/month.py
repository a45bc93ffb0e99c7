"""A month of a small mirror that ends now: the demo's logs, so that a first run shows live
bans and throttles and the monthly views have a month to show.

One nginx `main` log per UTC day, like a rotated access log: `access.log-YYYYMMDD` for the days
that are over and `access.log` for today, up to now. Each day is drawn from the labelled
traffic generator (sample_logs/scenarios.py) with the same images and addresses every day and
a seed of its own, so a day's lines are the same on every run: running again later appends
today's new lines and rotates the files at midnight, and ingest reads only what is new.

From REDIRECT_DAYS days before the folder was first written the mirror runs with a blob cache in
object storage (CRProxy's redirect mode, sample_logs/scenarios.py ``generate_redirect``): its blob
GETs answer 307, the bytes are in the buckets' access logs under object-storage/ (an S3 bucket
and an OSS one, one log a day each), and a reseller hands its signed links to customers in other
networks. The day it started is kept in the folder (.redirect-since), so that a day is written in
one mode only, whenever it is written or appended to.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sample_logs.scenarios import ABUSIVE_KINDS, KINDS, REDIRECT_ABUSIVE, REDIRECT_KINDS, generate, generate_redirect

DAYS = 30
# A small mirror: about 300 addresses a day. The abusers at half the volume of the scenario
# tests' mirror, everyone else at a fifth (at a fifth, a CI storm re-pulls a blob 15 times a
# day: under every rule's threshold, and not much of a demo).
SCALE = {k: 0.5 if k in ABUSIVE_KINDS + REDIRECT_ABUSIVE else 0.2 for k in KINDS + REDIRECT_KINDS}
REDIRECT_DAYS = 2           # the redirect mode began this many days before the first run (each costs ~1 s of CPU)
SINCE = ".redirect-since"   # the day it began (YYYYMMDD; not read by ingest: not named like a log)
STORES = {"s3": "mirror-blobs-logs/{day:%Y-%m-%d-%H-%M-%S}-5C3E6F7A8B9C0D1E",     # as each store names its logs
          "oss": "MyLog-mirror-blobs{day:%Y-%m-%d-%H-%M-%S}-0001"}
OBJECTS = "object-storage"
SEED = 1
LIVE = "access.log"
COMPLETE = ".complete"      # the days written whole (not read by ingest: not named like a log)


@dataclass
class Written:
    files: int = 0          # files created or grown
    lines: int = 0          # lines added


def _day_name(day: datetime) -> str:
    return f"{LIVE}-{day:%Y%m%d}"


def _first_day(path: Path) -> str | None:
    """The UTC day (YYYYMMDD) a live file of ours starts on, from its name-giving first line."""
    with path.open("rb") as f:
        head = f.readline().decode(errors="replace")
    try:
        stamp = head.split("[", 1)[1].split("]", 1)[0]
        return datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").astimezone(timezone.utc).strftime("%Y%m%d")
    except (IndexError, ValueError):
        return None


def write_month(folder: str | Path, now: datetime, days: int = DAYS, scale: float | dict = SCALE,
                seed: int = SEED) -> Written:
    """Bring ``folder`` up to ``now`` (naive UTC): the last ``days`` whole days and today so far.
    Files that are already complete are left alone; a file is only ever appended to."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    live = folder / LIVE
    if live.exists() and live.stat().st_size:
        started = _first_day(live)
        if started and started != f"{today:%Y%m%d}":         # midnight passed: rotate, as logrotate would
            os.replace(live, folder / f"{LIVE}-{started}")
    since = _redirect_since(folder, today, live)
    out = Written()
    marks = folder / COMPLETE
    done = set(marks.read_text().split()) if marks.exists() else set()
    for k in range(days, -1, -1):
        day = today - timedelta(days=k)
        path = live if k == 0 else folder / _day_name(day)
        if k and path.name in done:
            continue
        if day >= since:
            r = generate_redirect(days=1, start=day.replace(tzinfo=timezone.utc), seed=seed, scale=scale,
                                  stores=tuple(STORES), variant=f":{day:%Y%m%d}",
                                  until=now.replace(tzinfo=timezone.utc) if k == 0 else None)
            texts = {path: _text(r.lines), **{folder / OBJECTS / store / name.format(day=day): _text(r.objects[store])
                                              for store, name in STORES.items()}}
        else:
            texts = {path: _day(day, now if k == 0 else None, seed, scale)}
        for where, text in texts.items():
            have = where.stat().st_size if where.exists() else 0
            if have >= len(text):
                continue
            where.parent.mkdir(parents=True, exist_ok=True)
            with where.open("ab") as f:            # the same day's lines again: only the tail is new
                f.write(text[have:])
            out.files += 1
            out.lines += text[have:].count(b"\n")
    for k in range(days, 0, -1):
        done.add(_day_name(today - timedelta(days=k)))
    marks.write_text("".join(f"{name}\n" for name in sorted(done)))
    return out


def _redirect_since(folder: Path, today: datetime, live: Path) -> datetime:
    """The first day in redirect mode: kept from the folder's first run. A folder written before
    there was a redirect mode switches at the next midnight, never in the middle of a file."""
    mark = folder / SINCE
    if mark.exists():
        return datetime.strptime(mark.read_text().strip(), "%Y%m%d")
    begun = today + timedelta(days=1) if live.exists() and live.stat().st_size else today - timedelta(days=REDIRECT_DAYS)
    mark.write_text(f"{begun:%Y%m%d}\n")
    return begun


def _text(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def _day(day: datetime, until: datetime | None, seed: int, scale) -> bytes:
    """One day of the proxy's log (a day that is not over: up to ``until``)."""
    lines, _ = generate(days=1, start=day.replace(tzinfo=timezone.utc), seed=seed, scale=scale,
                        variant=f":{day:%Y%m%d}", until=until.replace(tzinfo=timezone.utc) if until else None)
    return _text(lines)
