"""The parse's cheap readings equal the plain ones they replace (issue 22: ingest speed).

DuckDB's split_part is a macro over string_split, so each call splits the whole string again,
and trim() copies every line; the format SQL splits a request once and picks its words, and
trims only a line that starts with a space. Held here against split_part and trim themselves,
on lines that stress the edges: requests of no, one, two and many words, runs of spaces,
lines of spaces, a leading space, tabs."""
from __future__ import annotations

import itertools

import pytest

from core.store import open_store
from ingest import formats, normalize

REQUESTS = ["GET /v2/ HTTP/1.1", "GET /v2/", "GET", "", " ", "  GET /v2/ HTTP/1.1", "GET  /v2/x HTTP/1.1",
            "GET /v2/x HTTP/1.1 extra words", "\\x16\\x03\\x01\\x02\\x00", "GET\t/v2/ HTTP/1.1", "- -", "GET /a b c "]
PREFIXES = ['203.0.113.7 - - [20/Nov/2024:11:02:07 +0800] ', ' 203.0.113.7 - - [20/Nov/2024:11:02:07 +0800] ']
SUFFIXES = [' 200 5 "-" "curl/8" "-"', ' 200 5 "-" "curl/8"', '']
ODD = ["", " ", "   ", "\t", " \t ", " x", "x ", '"', ' "GET / HTTP/1.1"']


@pytest.fixture(scope="module")
def store():
    s = open_store(":memory:")
    normalize.install(s)
    yield s
    s.close()


@pytest.mark.parametrize("name", ["main", "combined", "clf"])
def test_request_words_and_empty_lines_read_as_split_part_and_trim_read_them(store, name):
    lines = [f'{p}"{r}"{s}' for p, r, s in itertools.product(PREFIXES, REQUESTS, SUFFIXES)] + ODD
    fmt = formats.get_format(name)
    rows = store.execute(f"""
        with lines as (select generate_subscripts($lines::varchar[], 1) as line_no, unnest($lines::varchar[]) as line),
             parsed as ({fmt.select_sql()})
        select line, method, uri, request, reason, dest,
               -- what the format SQL wrote before, spelled plainly
               split_part(request, ' ', 1), split_part(request, ' ', 2), line is null or trim(line) = ''
        from parsed order by line_no""", {"lines": lines})
    assert len(rows) == len(lines)
    for line, method, uri, request, reason, dest, plain_method, plain_uri, blank in rows:
        assert (method, uri) == (plain_method, plain_uri), line
        assert (reason == "empty line") == blank, line
