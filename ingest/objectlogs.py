"""Object-storage access logs: where a redirect-mode mirror's bytes really go.

A mirror that keeps blobs in object storage (CRProxy with ``--storage-driver``) answers a
blob GET with a 307 to a signed URL; the proxy's log shows the redirect's few bytes and the
store's access log shows the download. These formats read the store's logs into
``object_events`` (never ``events``: what counts once is decided by the join with the
proxy's 307s), through the same files/offset machinery as proxy logs.

- ``s3``: Amazon S3 server access logs, space-separated with quoted and bracketed fields
  (docs.aws.amazon.com/AmazonS3/latest/userguide/LogFormat.html). Huawei OBS documents the
  same layout for its bucket logs (support.huaweicloud.com/usermanual-obs/zh-cn_topic_0045829095.html).
- ``oss``: Aliyun OSS access logs stored in a bucket: Remote IP, -, -, [Time], "Request-URI",
  Status, SentBytes, RequestTime, "Referer", "User-Agent", "HostName", "Request ID",
  "LoggingFlag", "Requester Aliyun ID", "Operation", "Bucket", "Key", ObjectSize, …
  (help.aliyun.com, "OSS built-in log fields" beside the SLS field table).
- ``logpush``: Cloudflare Logpush ``http_requests`` as JSON lines (R2 behind a custom domain):
  ClientIP, EdgeStartTimestamp (RFC 3339, or Unix seconds/ms/ns), ClientRequestMethod,
  ClientRequestURI / ClientRequestPath, EdgeResponseStatus, EdgeResponseBytes,
  ClientRequestUserAgent, ClientRequestReferer, ClientRequestHost, RayID.

Every line's signatures and credentials (X-Amz-Signature, X-Amz-Credential, Signature=,
OSSAccessKeyId, Expires, x-oss-*, authorization=Bearer …) are scrubbed before anything is
stored, rejected lines included.
"""
from __future__ import annotations

from dataclasses import dataclass

from ingest.formats import _OVERLONG_REASON

NAMES = ("s3", "oss", "logpush")

MACROS = r"""
-- a signed URL's credentials: every value of these query keys, wherever they appear in a
-- line (request target, Referer header, a JSON string), then pullwarden's bearer scrubbing
create or replace temp macro pw_scrub_signed(s) as
    case when regexp_matches(s, '(?i)signature|credential|accesskeyid|expires|x-amz-|x-oss-|x-goog-|token|authorization|bearer')
         then pw_scrub(regexp_replace(s,
              '(?i)((?:x-amz-[a-z0-9-]+|x-oss-[a-z0-9-]+|x-goog-[a-z0-9-]+|ossaccesskeyid|awsaccesskeyid|signature|expires|security-token|authorization|access_token|token)=)[^&\s"\\]*',
              '\1[scrubbed]', 'g'))
         else s end;

-- a request target with every query value dropped: a signed URL's parameters differ by store
-- and version (X-Amz-*, OSSAccessKeyId, x-oss-*, Signature, Expires, authorization=Bearer …),
-- so none is kept rather than some listed; the caller puts back referer's. (Also 6x cheaper
-- per line than pw_scrub_signed's case-insensitive list.)
create or replace temp macro pw_scrub_query(u) as
    case when contains(u, '?')
         then split_part(u, '?', 1) || '?' || regexp_replace(substr(u, strpos(u, '?') + 1), '(^|&)([^=&]*)=[^&]*', '\1\2=[scrubbed]', 'g')
         else u end;

-- a field of a space-separated store log: "quoted" and [bracketed] fields without their
-- delimiters, '-' as null
create or replace temp macro pw_field(t) as
    nullif(case when starts_with(t, '"') or starts_with(t, '[') then substr(t, 2, length(t) - 2) else t end, '-');
"""

# "quoted", [bracketed] or a bare word: S3 and OSS quote some fields and not others, and
# Huawei's sample has two spaces between fields, so fields are matched, not split
_TOKENS = r"""regexp_extract_all(line, '"[^"]*"|\[[^\]]*\]|[^ ]+')"""

# Sniffing: a line of this format, strictly (a proxy log must never be taken for one).
_SNIFF = {
    "s3": rf"""len({_TOKENS}) >= 17 and regexp_matches(line, '^\S+ \S+ \[[0-9]{{2}}/\w{{3}}/[0-9]{{4}}:[0-9:]{{8}} [+-][0-9]{{4}}\] \S+ \S+ \S+ (REST|SOAP|WEBSITE|BATCH|S3)\.[A-Z_.]+ ')""",
    "oss": rf"""len({_TOKENS}) >= 17 and regexp_matches(line, '^\S+ - - \[[^\]]+\] "[A-Z]+ ')
             and pw_field(({_TOKENS})[13]) in ('true', 'false')""",
    # (json_extract_string fails on a line that is not JSON: DuckDB's `and` does not short-circuit)
    "logpush": """case when starts_with(line, '{') and json_valid(line)
                  then json_extract_string(line, '$.ClientIP') is not null
                       and json_extract_string(line, '$.EdgeStartTimestamp') is not null end""",
}


@dataclass
class ObjectFormat:
    """A format whose rows go to ``object_events``; same interface as formats.Format."""
    name: str
    template: None = None
    object_store: bool = True

    def select_sql(self) -> str:
        return _LOGPUSH if self.name == "logpush" else _text_sql(self.name)


def get(name: str) -> ObjectFormat:
    return ObjectFormat(name)


def install(store) -> None:
    store.execute(MACROS)


def sniff(store, sample: list[str]) -> ObjectFormat | None:
    """The object-storage format that more than half the sample lines are lines of, or None."""
    if not sample:
        return None
    counts = store.execute(f"""
        with lines as (select unnest($sample::varchar[]) as line)
        select {', '.join(f'count(*) filter (where coalesce({cond}, false))' for cond in _SNIFF.values())}
        from lines""", {"sample": sample})[0]
    best = max(range(len(NAMES)), key=lambda i: counts[i])
    return ObjectFormat(NAMES[best]) if counts[best] * 2 > len(sample) else None


# field positions (1-based) of each text format
_TEXT = {
    "s3": {"time": 3, "peer": 4, "request": 9, "status": 10, "bytes": 12, "object_size": 13, "referer": 16,
           "user_agent": 17, "host": 23, "request_id": 6, "operation": 7, "bucket": 2, "key": 8, "fields": 17,
           "requester": 5, "auth_type": 22},
    "oss": {"time": 4, "peer": 1, "request": 5, "status": 6, "bytes": 7, "object_size": 18, "referer": 9,
            "user_agent": 10, "host": 11, "request_id": 12, "operation": 15, "bucket": 16, "key": 17, "fields": 17,
            "requester": 14, "auth_type": None},
}


def _text_sql(name: str) -> str:
    p = _TEXT[name]

    def f(field: str) -> str:
        return f"pw_field(t[{p[field]}])"
    return f"""
select line_no, pw_scrub_signed(line) as line, reason, case when reason is null then 'event' else 'reject' end as dest,
    peer, ts, operation, method, uri, status, bytes, object_size, bucket, object_key, host, referer, user_agent, request_id,
    requester, auth_type
from (
    select *, case when line is null or trim(line) = '' then 'empty line' {_OVERLONG_REASON}
        when len(t) < {p['fields']} then 'expected at least {p['fields']} fields, found ' || len(t)
        when peer is null then 'no client address'
        when ts is null then 'bad time: ' || coalesce(t[{p['time']}], '')
        when status is null then 'bad status: ' || coalesce(t[{p['status']}], '')
        when bytes is null then 'bad byte count: ' || coalesce(t[{p['bytes']}], '') end as reason
    from (
        select line_no, line, t,
            {f('peer')} as peer,
            try_strptime({f('time')}, '%d/%b/%Y:%H:%M:%S %z')::timestamp as ts,
            {f('operation')} as operation,
            split_part({f('request')}, ' ', 1) as method,
            split_part({f('request')}, ' ', 2) as uri,
            try_cast({f('status')} as smallint) as status,
            -- S3 writes '-' for a body of no bytes
            try_cast(coalesce({f('bytes')}, '0') as bigint) as bytes,
            try_cast({f('object_size')} as bigint) as object_size,
            {f('bucket')} as bucket,
            url_decode({f('key')}) as object_key,
            {f('host')} as host,
            {f('referer')} as referer,
            {f('user_agent')} as user_agent,
            {f('request_id')} as request_id,
            -- who the store says made the request, and how it was signed: the mirror's own
            -- calls and reads with other credentials are told from a signed link's download by them
            {f('requester')} as requester,
            {f('auth_type') if p['auth_type'] else 'null::varchar'} as auth_type
        from (select line_no, line, {_TOKENS} as t from lines)
    )
)"""


_LOGPUSH_KEYS = ("ClientIP", "EdgeStartTimestamp", "ClientRequestMethod", "ClientRequestURI", "ClientRequestPath",
                 "EdgeResponseStatus", "EdgeResponseBytes", "ClientRequestHost", "ClientRequestReferer",
                 "ClientRequestUserAgent", "RayID")


def _j(key: str) -> str:
    """A Logpush field from the line's one parse (json_extract_string of all the paths at once)."""
    return f"nullif(j[{_LOGPUSH_KEYS.index(key) + 1}], '')"


# Logpush's EdgeStartTimestamp is RFC 3339 or a Unix number (s, ms or ns: the job's
# timestamp_format); EdgeResponseBytes counts what the edge sent the client.
_LOGPUSH = f"""
select line_no, pw_scrub_signed(line) as line, reason, case when reason is null then 'event' else 'reject' end as dest,
    peer, ts, operation, method, uri, status, bytes, object_size, bucket, object_key, host, referer, user_agent, request_id,
    null::varchar as requester, null::varchar as auth_type
from (
    select *, case when line is null or trim(line) = '' then 'empty line' {_OVERLONG_REASON}
        when j is null then 'not a JSON object'
        when peer is null then 'no client address'
        when ts is null then 'bad time: ' || coalesce(t_raw, '(none)')
        when status is null then 'bad status: ' || coalesce({_j('EdgeResponseStatus')}, '(none)')
        when bytes is null then 'bad byte count: ' || coalesce({_j('EdgeResponseBytes')}, '(none)')
        when uri is null then 'no request' end as reason
    from (
        select *,
            coalesce(try_cast(t_raw as timestamptz)::timestamp,
                     case when try_cast(t_raw as double) > 1e17 then to_timestamp(try_cast(t_raw as double) / 1e9)
                          when try_cast(t_raw as double) > 1e11 then to_timestamp(try_cast(t_raw as double) / 1e3)
                          else to_timestamp(try_cast(t_raw as double)) end::timestamp) as ts
        from (
            select line_no, line, j,
                {_j('ClientIP')} as peer,
                {_j('EdgeStartTimestamp')} as t_raw,
                null::varchar as operation,
                {_j('ClientRequestMethod')} as method,
                coalesce({_j('ClientRequestURI')}, {_j('ClientRequestPath')}) as uri,
                try_cast({_j('EdgeResponseStatus')} as smallint) as status,
                try_cast(coalesce({_j('EdgeResponseBytes')}, '0') as bigint) as bytes,
                null::bigint as object_size,
                null::varchar as bucket,
                url_decode(ltrim(split_part(coalesce({_j('ClientRequestPath')}, {_j('ClientRequestURI')}), '?', 1), '/'))
                    as object_key,
                {_j('ClientRequestHost')} as host,
                {_j('ClientRequestReferer')} as referer,
                {_j('ClientRequestUserAgent')} as user_agent,
                {_j('RayID')} as request_id
            from (select line_no, line,
                    case when starts_with(ltrim(line), '{{') and json_valid(line)
                         then json_extract_string(line, [{', '.join(repr('$.' + k) for k in _LOGPUSH_KEYS)}]) end as j
                  from lines)
        )
    )
)"""


def rows_sql(parsed: str) -> str:
    """SELECT of object_events rows (the table's columns, in order) over a format's SELECT.
    Parameters: $file_id, $source (the format's name).

    Registry, repository and digest come from the object key (CRProxy keeps distribution's
    layout: docker/registry/v2/blobs/sha256/xx/<digest>/data, and
    docker/registry/v2/repositories/<host>/<name>/_manifests|_layers/…), and the requesting
    client and image from the signed URL's referer=<client-ip>:<host>/<image> when present."""
    return f"""
select ts, client_ip, $source::varchar as source, bucket, operation, method, status, bytes, object_size, object_key,
    coalesce(ref_registry, key_registry) as registry,
    coalesce(ref_repository, key_repository) as repository,
    digest,
    case when pw_addr_problem(ref_ip) is null then pw_unmap(ref_ip) end as requester_ip,
    ref_image as requester_image,
    pw_unescape(user_agent) as user_agent, lower(host) as host,
    case when ref_raw is null then pw_scrub_query(uri)
         else replace(replace(pw_scrub_query(uri), '?referer=[scrubbed]', '?referer=' || ref_raw),
                      '&referer=[scrubbed]', '&referer=' || ref_raw) end as uri,
    pw_scrub_signed(referer) as referer, request_id, requester, auth_type,
    $file_id::integer as file_id
from (
    select *,
        case when ref_image is not null then pw_registry(split_part(ref_image, '/', 1)) end as ref_registry,
        case when ref_image is not null then
            case when pw_registry(split_part(ref_image, '/', 1)) = 'docker.io' and not contains(substr(ref_image, strpos(ref_image, '/') + 1), '/')
                 then 'library/' || substr(ref_image, strpos(ref_image, '/') + 1)
                 else substr(ref_image, strpos(ref_image, '/') + 1) end end as ref_repository,
        case when key_name <> '' and regexp_matches(split_part(key_name, '/', 1), '[.:]|^localhost$')
             then pw_registry(split_part(key_name, '/', 1)) end as key_registry,
        case when key_name = '' then null
             when regexp_matches(split_part(key_name, '/', 1), '[.:]|^localhost$') then substr(key_name, strpos(key_name, '/') + 1)
             else key_name end as key_repository,
        'sha256:' || nullif(coalesce(
            nullif(regexp_extract(object_key, 'docker/registry/v2/blobs/sha256/[0-9a-f]{{2}}/([0-9a-f]{{64}})/data$', 1), ''),
            regexp_extract(object_key, '/_(?:manifests/revisions|layers)/sha256/([0-9a-f]{{64}})/link$', 1)), '') as digest
    from (
        select *,
            -- CRProxy's referer is r.RemoteAddr: Go's host:port ([v6]:port) unless --behind gave the bare address
            nullif(trim(regexp_replace(regexp_replace(ref_ip_raw, '^(\\[[^\\]]*\\]|[0-9.]+):[0-9]+$', '\\1'),
                                       '^\\[|\\]$', '', 'g')), '') as ref_ip,
            nullif(regexp_extract(ref, '^(\\[[0-9A-Fa-f:.]+\\](?::[0-9]{{1,5}})?|[0-9]{{1,3}}(?:\\.[0-9]{{1,3}}){{3}}(?::[0-9]{{1,5}})?|[0-9A-Fa-f:.]+?):([A-Za-z0-9.-]+(?::[0-9]+)?/[^?#]+)$', 2), '') as ref_image,
            regexp_extract(object_key, 'docker/registry/v2/repositories/(.+?)/_(?:manifests|layers|uploads)/', 1) as key_name
        from (
            select *,
                regexp_extract(ref, '^(\\[[0-9A-Fa-f:.]+\\](?::[0-9]{{1,5}})?|[0-9]{{1,3}}(?:\\.[0-9]{{1,3}}){{3}}(?::[0-9]{{1,5}})?|[0-9A-Fa-f:.]+?):([A-Za-z0-9.-]+(?::[0-9]+)?/[^?#]+)$', 1) as ref_ip_raw
            from (
                -- named columns, not *: the scrubbed whole line is only for rejects, and
                -- scrubbing every line here cost a third of the pass
                select ts, peer, operation, method, uri, status, bytes, object_size, bucket, object_key, host,
                    referer, user_agent, request_id, requester, auth_type, pw_unmap(peer) as client_ip, ref_raw,
                    nullif(url_decode(ref_raw), '') as ref
                from (
                    select *, case when contains(uri, 'referer=')
                                   then nullif(regexp_extract(uri, '[?&]referer=([^&]*)', 1), '') end as ref_raw
                    from {parsed} where dest = 'event'
                )
            )
        )
    )
)"""
