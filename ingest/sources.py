"""Finding log files and reading them exactly once.

A file is known by a fingerprint of its first bytes, not by its name: logrotate renames
``access.log`` to ``access.log.1`` (same fingerprint, reading resumes where it stopped)
and starts a new ``access.log`` (new fingerprint, read from the start); a truncated file
starts with other bytes and is new too. Only complete lines are consumed, so a line the
proxy is still writing is picked up on the next pass.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import os
import re
import stat
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

FP_LEN = 1024          # bytes of content that identify a file
TAIL_LEN = 4096        # bytes before the read offset that a file must repeat to be the rest of it
IDLE_SECONDS = 5.0     # a last line without newline counts as complete once the file is this idle


class SourceError(Exception):
    """A path that does not exist or cannot be read."""


def is_gzip(path: Path) -> bool:
    return path.suffix == ".gz"


# In a directory, the files that look like logs: access.log, access.log.1, access.log-20241120,
# access.log.2.gz, *.json, *.jsonl, and the names object stores give their log objects, which
# have no suffix: S3 and OBS [prefix]2024-11-20-10-00-00-5C3E6F7A8B9C0D1E, OSS
# [prefix]bucket2024-11-20-10-00-00-0001, Logpush 20241120T100000Z_20241120T110000Z_4f1c2a8e.
# Named files and globs are always taken.
_LOG_NAME = re.compile(r"\.log(?:[.-][\w.-]*)?$|\.gz$|\.jsonl?$|\.ndjson$"
                       r"|\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-[0-9A-Za-z]{4,}$"
                       r"|^\d{8}T\d{6}Z_\d{8}T\d{6}Z_[0-9a-f]+$")


def _regular(path: Path) -> bool:
    """A regular file (or a link to one): a FIFO, socket or device would block a read or never end."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def discover(patterns: list[str], skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """Files named by paths, directories (their log files, not hidden ones) or globs, in a
    stable order; a pattern that names nothing is an error before anything is read. What is
    there but cannot be read as a log (a FIFO, a socket, a device, no permission) goes to
    ``skipped`` as (path, why), and the others are read."""
    skipped = [] if skipped is None else skipped
    found: dict[str, Path] = {}
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if not Path(p).is_dir())
        elif Path(pattern).is_dir():
            # nor what is under a hidden folder: chunk copies in .pullwarden-tmp beside a database
            # kept in the log folder would be read as logs
            root = Path(pattern)
            matches = sorted(p for p in root.rglob("*")
                             if not p.is_dir() and _LOG_NAME.search(p.name)
                             and not any(part.startswith(".") for part in p.relative_to(root).parts))
        elif Path(pattern).exists() or Path(pattern).is_symlink():
            matches = [Path(pattern)]
        else:
            raise SourceError(f"{pattern}: no such file or directory")
        for path in matches:
            if any(Path(seen).resolve() == path.resolve() for seen, _ in skipped):   # named and in a named folder: once
                continue
            if not _regular(path):
                skipped.append((str(path), "not a regular file (a FIFO, socket, device or broken link): skipped"))
                continue
            if not os.access(path, os.R_OK):
                skipped.append((str(path), "permission denied: skipped"))
                continue
            found.setdefault(str(path.resolve()), path)
    return list(found.values())


def read_head(path: Path, size: int = FP_LEN) -> bytes:
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as f:
                return f.read(size)
        with open(path, "rb") as f:
            return f.read(size)
    except (OSError, EOFError, zlib.error) as e:
        raise SourceError(f"{path}: cannot read: {e}") from None


class Moved(SourceError):
    """The file at a path is no longer the one that was identified there (rotated in between):
    it is left for the next pass, which finds each file under its new name."""


def pin(path: Path) -> tuple[bytes, tuple]:
    """The first bytes and the (device, inode) of the file at ``path``, from one open file:
    read by path one after the other, a rotation in between (numbered rotation renames every
    file at once) gave one file's first bytes another file's identity, and its lines were read
    again as a new file's."""
    if is_gzip(path):
        st = _stat(path)
        return read_head(path), (st.st_dev, st.st_ino)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            return f.read(FP_LEN), (st.st_dev, st.st_ino)
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e}") from None


def _stat(path: Path):
    try:
        return path.stat()
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e}") from None


def content_tail(path: Path, offset: int) -> bytes | None:
    """The TAIL_LEN bytes of content just before ``offset`` (fewer near the start), or None
    when the content ends before ``offset``. One small read for a plain file; a .gz is
    decompressed up to there."""
    start = max(0, offset - TAIL_LEN)
    try:
        with (gzip.open if is_gzip(path) else open)(path, "rb") as f:
            if is_gzip(path):
                if _skip(f, start) < start:
                    return None
            else:
                f.seek(start)
            tail = f.read(offset - start)
    except (OSError, EOFError, zlib.error) as e:
        raise SourceError(f"{path}: cannot read: {e}") from None
    return tail if len(tail) == offset - start else None


def _skip(f, n: int) -> int:
    """Read past n bytes of a stream that cannot seek (a .gz): how many there were."""
    done = 0
    while done < n:
        got = f.read(min(n - done, 1 << 24))
        if not got:
            break
        done += len(got)
    return done


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Chunk:
    data: bytes        # complete lines, each ending in \n, safe to hand to DuckDB
    end: int           # content offset just past the chunk
    lines: int
    size: int = 0      # bytes of data, kept when data is dropped
    in_place: tuple | None = None   # (size, mtime) when the chunk is the file itself, read in place
    tail: bytes = b""  # the TAIL_LEN bytes of content before end, as the file has them


def sanitize(data: bytes) -> bytes:
    """Make a chunk safe for DuckDB's reader without losing a byte: invalid UTF-8 and stray
    carriage returns are written the way nginx writes unprintable bytes (\\xHH)."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\\x0D")
    if b"\x01" in data:                 # the reader's column delimiter
        data = data.replace(b"\x01", b"\\x01")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("utf-8", "backslashreplace").encode("utf-8")
    return data


def read_chunks(path: Path, offset: int, chunk_bytes: int, now: float | None = None,
                expect: tuple | None = None) -> Iterator[Chunk]:
    """Yield complete lines from ``offset`` on. A trailing line without newline is taken only
    from a finished file: a .gz, or one that has not changed for IDLE_SECONDS. ``expect``: the
    (device, inode) the file was identified by; another file at the path raises Moved."""
    compressed = is_gzip(path)
    opener = gzip.open if compressed else open
    try:
        idle = compressed or (now or time.time()) - path.stat().st_mtime >= IDLE_SECONDS
        with opener(path, "rb") as f:
            st = os.fstat(f.fileno())
            if expect is not None and (st.st_dev, st.st_ino) != tuple(expect):
                raise Moved(f"{path}: rotated while it was read: left for the next pass")
            # from a little before the offset: each chunk carries the bytes that end it
            start = max(0, offset - TAIL_LEN)
            if compressed:
                if _skip(f, start) < start:
                    return
            else:
                f.seek(start)
            tail = f.read(offset - start)
            if len(tail) < offset - start:
                return
            pending = b""
            pos = offset
            while True:
                block = f.read(chunk_bytes)
                if not block:
                    if pending and idle:
                        tail = (tail + pending)[-TAIL_LEN:]
                        yield Chunk(sanitize(pending + b"\n"), pos + len(pending), 1, tail=tail)
                    return
                block = pending + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:            # one line longer than a chunk: keep reading
                    pending = block
                    continue
                data, pending = block[:cut], block[cut:]
                pos += cut
                tail = data[-TAIL_LEN:] if len(data) >= TAIL_LEN else (tail + data)[-TAIL_LEN:]
                yield Chunk(sanitize(data), pos, data.count(b"\n"), tail=tail)
    except (OSError, EOFError, zlib.error) as e:
        raise SourceError(f"{path}: cannot read: {e}") from None


def settled(path: Path, offset: int, now: float, limit: int) -> tuple | None:
    """(size, mtime) of a whole plain file that nobody writes to any more, which can be read
    in place rather than copied; None otherwise. The caller checks ``unchanged`` after
    reading (a writer may wake up) and ``scan`` for bytes that need sanitizing."""
    if is_gzip(path) or offset:
        return None
    st = path.stat()
    if now - st.st_mtime < IDLE_SECONDS or not 0 < st.st_size <= limit:
        return None
    return st.st_size, st.st_mtime


def scan(path: Path) -> int | None:
    """Number of lines of a file that can go to DuckDB as it is; None when it needs the
    sanitizing copy (carriage returns, \\x01, invalid UTF-8, no final newline)."""
    lines, last = 0, b""
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 26):
                if b"\r" in block or b"\x01" in block:
                    return None
                if not block.isascii():
                    try:
                        block.decode("utf-8")
                    except UnicodeDecodeError:   # (or a character cut at the block edge: then copy too)
                        return None
                lines += block.count(b"\n")
                last = block[-1:]
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e}") from None
    return lines if last == b"\n" else None


def unchanged(path: Path, stamp: tuple) -> bool:
    st = path.stat()
    return (st.st_size, st.st_mtime) == stamp
