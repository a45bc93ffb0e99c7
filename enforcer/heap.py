"""glibc's malloc, set for a process that runs for weeks (serve, the agent), from the code: an
operator cannot be asked to start it with MALLOC_ARENA_MAX. One that did keeps their setting.

What it is for, measured with 1 M bans (bench/bench_enforcer.py): glibc gives each thread that
allocates an arena of its own, up to 8 per core, and raises its threshold for serving a block
with mmap to the largest block freed so far (up to 32 MB). After an ingest run's 4 MiB reads
and a start-up stream's 128 KB pieces, every block up to that size came from the arenas of a
dozen threads and stayed there when freed: 200 MB free but resident in malloc's arenas, serve
at 410-460 MB. A fixed threshold (blocks of 1 MiB and more are mapped, and given back when
freed) and two arenas keep what malloc holds free small. The threshold is not lower: at 64 KiB
each 128 KB piece of a start-up stream was mapped and faulted in page by page (10% more CPU for
the stream, and polls slower beside it)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ARENAS = 2                      # M_ARENA_MAX: the jobs, the API's threads and DuckDB's share two
MMAP_THRESHOLD = 1 << 20        # M_MMAP_THRESHOLD: fixed, which also fixes the trim threshold (128 KiB)
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8        # glibc's malloc.h


def _libc():
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def settle() -> dict[str, int]:
    """Set the arenas and the mmap threshold, unless the environment already does; before the
    process starts its threads (an arena made before stays). Returns what was set."""
    if _LIBC is None:
        return {}
    done = {}
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "MALLOC_ARENA_MAX" not in os.environ and "arena_max" not in tunables:
        if _LIBC.mallopt(_M_ARENA_MAX, ARENAS):
            done["arena_max"] = ARENAS
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and "mmap_threshold" not in tunables:
        if _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
            done["mmap_threshold"] = MMAP_THRESHOLD
    return done


def trim() -> None:
    """Give the free pages of malloc's arenas back to the system (after a large build)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
