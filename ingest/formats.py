"""Log formats compiled to SQL.

Every text format is an nginx ``log_format`` string. nginx escapes ``"`` inside variables
as ``\\x22``, so a quote in a line can only come from the format itself: splitting the line
on ``"`` gives the format's segments exactly, and inside a segment the words are split on
spaces. That uses only DuckDB's string functions, which keep the pace of its CSV reader
(a regular expression over whole lines runs at well under half the speed).

Each compiled format is a SELECT over ``lines(line_no, line)`` that yields the raw fields
of the ``FIELDS`` contract below plus ``dest`` ('event', 'proxy' or 'reject') and ``reason``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


class FormatError(Exception):
    """The format name or log_format string cannot be used; the message says why."""


MAX_LINE = 2 << 20            # longer lines are replaced by OVERLONG + their length + their start
OVERLONG = b"\x02overlong "
# a line of spaces only: trim() copies every line, most of a clean line's parse cost (0.6 of
# 1.8 CPU s a million lines); only a line that starts with a space can be all spaces
_EMPTY = "line is null or line = '' or (starts_with(line, ' ') and trim(line) = '')"
_OVERLONG_REASON = ("when starts_with(line, '\x02overlong ') then "
                    "'line of ' || split_part(line, ' ', 2) || ' bytes is longer than the 2 MiB limit'")

COMBINED = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"'
NAMED = {
    "combined": COMBINED,
    "main": COMBINED + ' "$http_x_forwarded_for"',
    # CRProxy's gorilla LoggingHandler writes Apache's common log format; its slog JSON
    # application log shares the stream.
    "clf": '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent',
    "nginx-json": None,
}

# Raw fields every format yields (VARCHAR unless typed here), before normalization.
FIELDS = ("peer", "remote_user", "ts", "method", "uri", "request", "status", "bytes", "request_time",
          "user_agent", "forwarded_for", "host", "cache_status", "location")

# nginx variable → how many space-separated words it spans when not quoted
# (None: it may contain spaces, so it must be quoted or come last in its segment).
VARIABLES = {
    "remote_addr": 1, "remote_user": 1, "time_local": 2, "time_iso8601": 1, "msec": 1,
    "request": 3, "request_method": 1, "request_uri": 1, "uri": 1, "args": 1, "status": 1,
    "body_bytes_sent": 1, "bytes_sent": 1, "http_referer": None, "http_user_agent": None,
    "http_x_forwarded_for": None, "request_time": 1, "host": 1, "upstream_cache_status": 1,
    "sent_http_location": 1,
}
_TOKEN = re.compile(r"\$(?:\{(\w+)\}|(\w+))")

# nginx-json: event field → JSON keys tried in order; `json_fields` replaces a field's list.
JSON_KEYS = {
    "time": ["time_iso8601", "time_local", "msec", "time", "@timestamp", "timestamp"],
    "remote_addr": ["remote_addr", "client_ip", "ip"],
    "remote_user": ["remote_user", "user"],
    "request": ["request"],
    "request_method": ["request_method", "method"],
    "request_uri": ["request_uri", "uri", "path"],
    "args": ["args", "query_string"],
    "status": ["status"],
    "bytes": ["body_bytes_sent", "bytes_sent", "bytes"],
    "request_time": ["request_time", "duration"],
    "user_agent": ["http_user_agent", "user_agent"],
    "forwarded_for": ["http_x_forwarded_for", "x_forwarded_for"],
    "host": ["host", "http_host"],
    "cache_status": ["upstream_cache_status", "cache_status"],
    "location": ["sent_http_location", "location"],
}


@dataclass
class Format:
    name: str
    template: str | None = None          # nginx log_format; None for JSON lines
    json_keys: dict[str, list[str]] = field(default_factory=dict)

    @property
    def proxy_json_lines(self) -> bool:
        return self.name == "clf"

    def select_sql(self) -> str:
        if self.template is None:
            return _json_sql(self.json_keys)
        return _template_sql(self.template, self.proxy_json_lines)


def get_format(name: str = "auto", log_format: str = "", json_fields: dict | None = None) -> Format:
    if log_format:
        fmt = Format("custom", log_format)
        fmt.select_sql()  # compile now: a bad string fails before anything is read
        return fmt
    if name not in NAMED:
        raise FormatError(f"unknown format {name!r}; known: auto, {', '.join(NAMED)}")
    keys = dict(JSON_KEYS)
    for k, v in (json_fields or {}).items():
        if k not in JSON_KEYS:
            raise FormatError(f"json_fields: unknown field {k!r}; known: {', '.join(JSON_KEYS)}")
        keys[k] = [v] if isinstance(v, str) else list(v)
    return Format(name, NAMED[name], keys)


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _tokenize(template: str) -> list[tuple[str, str]]:
    items, pos = [], 0
    for m in _TOKEN.finditer(template):
        if m.start() > pos:
            items.append(("lit", template[pos:m.start()]))
        items.append(("var", m.group(1) or m.group(2)))
        pos = m.end()
    if pos < len(template):
        items.append(("lit", template[pos:]))
    return items


def _segments(template: str) -> list[list[tuple[str, str]]]:
    """Split the format at its quote characters, keeping variables whole."""
    segs: list[list[tuple[str, str]]] = [[]]
    for kind, text in _tokenize(template):
        if kind == "var":
            segs[-1].append((kind, text))
            continue
        pieces = text.split('"')
        for i, piece in enumerate(pieces):
            if i:
                segs.append([])
            if piece:
                segs[-1].append(("lit", piece))
    if len(segs) % 2 == 0:
        raise FormatError(f"log format has an odd number of quote characters: {template!r}")
    return segs


def _words(seg: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    words: list[list[tuple[str, str]]] = [[]]
    for kind, text in seg:
        if kind == "var":
            words[-1].append((kind, text))
            continue
        for i, piece in enumerate(text.split(" ")):
            if i:
                words.append([])
            if piece:
                words[-1].append(("lit", piece))
    return words


def _segment_fields(i: int, seg, quoted: bool) -> tuple[dict[str, str], str | None]:
    """SQL expressions for the variables of segment i (1-based in DuckDB lists), and a
    word-count check (None when the segment needs none)."""
    p = f"p[{i}]"
    if len(seg) == 1 and seg[0][0] == "var":
        return {seg[0][1]: p}, None
    words = _words(seg)
    exprs: dict[str, str] = {}
    pos, rest = 1, False
    for n, word in enumerate(words):
        variables = [t for k, t in word if k == "var"]
        if len(variables) > 1:
            raise FormatError(f"${variables[0]} and ${variables[1]} are not separated by a space or a quote; "
                              "pullwarden needs one of them between two variables")
        if not variables:
            pos += 1
            continue
        var = variables[0]
        if var in exprs:
            raise FormatError(f"${var} appears twice in the log format")
        span = VARIABLES.get(var, 1)
        last = all(not any(k == "var" for k, _ in w) for w in words[n + 1:])
        if span is None or (var == "request" and quoted):
            if not last:
                raise FormatError(f"${var} can contain spaces: quote it or put it last in its segment")
            value, rest = f"array_to_string(w{i}[{pos}:], ' ')", True
        elif span == 1:
            value = f"w{i}[{pos}]"
        else:   # a fixed number of words, joined back ($time_local: two)
            value = " || ' ' || ".join(f"w{i}[{k}]" for k in range(pos, pos + span))
        prefix = "".join(t for k, t in word[:word.index(("var", var))])
        suffix = "".join(t for k, t in word[word.index(("var", var)) + 1:])
        if prefix:
            value = f"substr({value}, {len(prefix) + 1})"
        if suffix:
            value = f"left({value}, length({value}) - {len(suffix)})"
        exprs[var] = value
        pos += span or 1
    count = pos - 1
    check = f"len(w{i}) {'>=' if rest else '='} {count}"
    return exprs, check


# gorilla's LoggingHandler writes a quote or a backslash in the request as \" and \\; as nginx
# writes them (\x22, \x5C) the quotes that delimit fields stay the only quotes, and the
# unescaping the events get anyway decodes them
_GORILLA = r"""case when contains(line, '\') then replace(replace(line, '\\', '\x5C'), '\"', '\x22') else line end"""


def _template_sql(template: str, proxy_json_lines: bool) -> str:
    segs = _segments(template)
    exprs: dict[str, str] = {}
    checks: list[tuple[int, str]] = []
    split_words = []
    for i, seg in enumerate(segs, 1):
        if not seg:
            continue
        got, check = _segment_fields(i, seg, quoted=i % 2 == 0)
        for var in got:
            if var in exprs:
                raise FormatError(f"${var} appears twice in the log format")
        exprs.update(got)
        if check and got:
            checks.append((i, check))
            split_words.append(f"string_split(p[{i}], ' ') as w{i}")
    _require(exprs, template)

    def v(name: str) -> str:
        return f"nullif({exprs[name]}, '-')" if name in exprs else "null"

    if "time_local" in exprs:
        ts = f"try_strptime({exprs['time_local']}, '%d/%b/%Y:%H:%M:%S %z')::timestamp"
        ts_raw = exprs["time_local"]
    elif "time_iso8601" in exprs:
        ts = f"try_strptime({exprs['time_iso8601']}, '%Y-%m-%dT%H:%M:%S%z')::timestamp"
        ts_raw = exprs["time_iso8601"]
    else:
        ts = f"to_timestamp(try_cast({exprs['msec']} as double))::timestamp"
        ts_raw = exprs["msec"]
    if "request" in exprs:
        # split_part(request, ' ', n), with the request split once rather than once per part
        method, uri = ("case when rq is not null then coalesce(rq[1], '') end",
                       "case when rq is not null then coalesce(rq[2], '') end")
        request_raw = exprs["request"]
    elif "request_uri" in exprs:
        method, uri = v("request_method"), exprs["request_uri"]
        request_raw = uri
    else:
        method = v("request_method")
        uri = (f"{exprs['uri']} || coalesce('?' || nullif(nullif({exprs['args']}, '-'), ''), '')"
               if "args" in exprs else exprs["uri"])
        request_raw = uri
    bytes_ = exprs.get("body_bytes_sent") or exprs.get("bytes_sent")
    nseg = len(segs)
    reasons = [f"when len(p) <> {nseg} then 'expected ' || {nseg - 1} || ' quote characters, found ' || (len(p) - 1)"]
    for i, check in checks:
        reasons.append(f"when not ({check}) then 'segment {i} has ' || len(w{i}) || ' words, not as the format says'")
    reasons += [
        f"when coalesce({exprs['remote_addr']}, '') in ('', '-') then 'no client address'",
        f"when ts is null then 'bad time: ' || coalesce({ts_raw}, '')",
        f"when status is null then 'bad status: ' || coalesce({exprs['status']}, '')",
        f"when bytes is null and {bytes_ or 'null'} is not null then 'bad byte count: ' || {bytes_ or 'null'}",
    ]
    # CRProxy's application log on the same stream: slog JSON (v0.13), Go's log text (v0.12,
    # "[cr proxy] 2024/11/20 11:02:07 ...")
    proxy = ("when starts_with(line, '{') and json_valid(line) then 'proxy' "
             "when starts_with(line, '[cr proxy] ') then 'proxy'") if proxy_json_lines else ""
    if proxy_json_lines:
        reasons.insert(0, "when starts_with(line, '{') then 'neither a log line nor valid JSON'")
    return f"""
select line_no, line, reason,
    case {proxy} when reason is null then 'event' else 'reject' end as dest,
    peer, remote_user, ts, method, uri, request, status, bytes, request_time, user_agent, forwarded_for,
    host, cache_status, location
from (
    select *, case when {_EMPTY} then 'empty line' {_OVERLONG_REASON}
        {' '.join(reasons)} end as reason
    from (
        select line_no, line, p{''.join(f', w{i}' for i, _ in checks)},
            {exprs['remote_addr']} as peer,
            {v('remote_user')} as remote_user,
            {ts} as ts,
            {method} as method,
            {uri} as uri,
            try_cast({exprs['status']} as smallint) as status,
            try_cast({bytes_ or 'null'} as bigint) as bytes,
            try_cast({v('request_time')} as double) as request_time,
            {v('http_user_agent')} as user_agent,
            {v('http_x_forwarded_for')} as forwarded_for,
            {v('host')} as host,
            {v('upstream_cache_status')} as cache_status,
            {v('sent_http_location')} as location,
            {request_raw} as request
        from (
            select *{f", string_split({exprs['request']}, ' ') as rq" if "request" in exprs else ""} from (
            select *{''.join(', ' + w for w in split_words)}
            from (select line_no, line, string_split({_GORILLA if proxy_json_lines else 'line'}, '"') as p from lines)
        ))
    )
)"""


def _require(exprs: dict[str, str], template: str) -> None:
    missing = []
    if "remote_addr" not in exprs:
        missing.append("$remote_addr")
    if not {"time_local", "time_iso8601", "msec"} & exprs.keys():
        missing.append("$time_local, $time_iso8601 or $msec")
    if not {"request", "request_uri", "uri"} & exprs.keys():
        missing.append("$request, $request_uri or $uri")
    if "status" not in exprs:
        missing.append("$status")
    if missing:
        raise FormatError(f"log format lacks {'; '.join(missing)}: {template!r}")


def _json_path(key: str) -> str:
    return "$." + (key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else '"' + key.replace('"', '\\"') + '"')


def _json_sql(keys: dict[str, list[str]]) -> str:
    paths: list[str] = []
    slot: dict[str, list[int]] = {}
    for fld, names in keys.items():
        slot[fld] = []
        for name in names:
            paths.append(_json_path(name))
            slot[fld].append(len(paths))

    def get(fld: str) -> str:
        items = [f"nullif(nullif(j[{n}], ''), '-')" for n in slot[fld]]
        return items[0] if len(items) == 1 else f"coalesce({', '.join(items)})"

    time = get("time")
    uri = get("request_uri")
    return f"""
select line_no, line, reason, case when reason is null then 'event' else 'reject' end as dest,
    peer, remote_user, ts, method, uri, coalesce(request, method || ' ' || uri) as request, status, bytes,
    request_time, user_agent, forwarded_for, host, cache_status, location
from (
    select *, case when {_EMPTY} then 'empty line' {_OVERLONG_REASON}
        when j is null then 'not a JSON object'
        when peer is null then 'no client address'
        when ts is null then 'bad time: ' || coalesce({time}, '(none)')
        when status is null then 'bad status: ' || coalesce({get('status')}, '(none)')
        when uri is null then 'no request' end as reason
    from (
        select line_no, line, j,
            {get('remote_addr')} as peer,
            {get('remote_user')} as remote_user,
            coalesce(try_cast({time} as timestamptz)::timestamp,
                     try_strptime({time}, '%d/%b/%Y:%H:%M:%S %z')::timestamp,
                     to_timestamp(try_cast({time} as double))::timestamp) as ts,
            {get('request')} as request,
            coalesce({get('request_method')}, split_part({get('request')}, ' ', 1)) as method,
            coalesce({uri} || coalesce('?' || {get('args')}, ''), split_part({get('request')}, ' ', 2)) as uri,
            try_cast({get('status')} as smallint) as status,
            try_cast({get('bytes')} as bigint) as bytes,
            try_cast({get('request_time')} as double) as request_time,
            {get('user_agent')} as user_agent,
            {get('forwarded_for')} as forwarded_for,
            {get('host')} as host,
            {get('cache_status')} as cache_status,
            {get('location')} as location
        from (select line_no, line,
                case when json_valid(line) and starts_with(ltrim(line), '{{')
                     then json_extract_string(line, [{', '.join(_q(p) for p in paths)}]) end as j
              from lines)
    )
)"""


def sniff(store, sample: list[str], json_fields: dict | None = None) -> Format | None:
    """The named format that parses most of the sample lines as requests (None if none does)."""
    best, best_events = None, 0
    for name in ("nginx-json", "main", "combined", "clf"):
        fmt = get_format(name, json_fields=json_fields)
        events = store.value(f"""
            with lines as (select generate_subscripts($sample::varchar[], 1) as line_no,
                                  unnest($sample::varchar[]) as line),
                 parsed as ({fmt.select_sql()})
            select count(*) filter (where dest = 'event') from parsed""", {"sample": sample})
        if events > best_events:
            best, best_events = fmt, events
    return best
