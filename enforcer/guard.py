"""In front of the routes: who is calling, and how much they may send, decided from the
headers alone. FastAPI reads and parses a request's body before any dependency runs, so a key
checked in a dependency came too late: three concurrent 173 MB POSTs without a key took serve
from 158 MB to 1.39 GB RSS before each was answered 401. Here a request without a valid key
is answered before one byte of its body is read, and a keyed one that says (or turns out) to
be bigger than its route's cap gets 413."""
from __future__ import annotations

import asyncio
import json

from fastapi import HTTPException

PUBLIC = frozenset({"/healthz"})
CROWDSEC = frozenset({"/v1/decisions", "/v1/decisions/stream"})    # CrowdSec's own 403 for a bad key
BODY_LIMIT = 64 * 1024
# Routes that take lists: up to 5,000 image patterns of 300 characters, or 100,000 held
# decision ids (admin.py's models), with room for JSON's quoting.
BULK_LIMIT = 4 * 1024 * 1024
BULK = ("/v1/admin/images/", "/v1/admin/decisions/approve", "/v1/admin/decisions/drop")
# Bad keys are answered slowly (keys.Failures), and a request being slowed holds its
# connection: past this many at once the rest are answered at once, or a flood of bad keys
# would hold every connection serve may open. (Keys are 256 bits: the delay is a courtesy to
# the logs, not what makes guessing hopeless.)
MAX_SLOWED = 64


def presented(headers: dict[bytes, bytes]) -> str | None:
    """The key a request carries: X-Api-Key, or Authorization: Bearer."""
    key = headers.get(b"x-api-key", b"").decode("latin-1")
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key or None


def body_limit(path: str) -> int:
    return BULK_LIMIT if path.startswith(BULK) else BODY_LIMIT


class KeyGate:
    """Pure ASGI: authenticates from the headers and caps the body, then hands the request on
    with the caller in ``scope["state"]["principal"]`` (deps.require checks the role)."""

    def __init__(self, app):
        self.app = app
        self.slowed = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        path = scope["path"]
        # a body we do not read: close the connection after answering rather than let the
        # server drain it for the next request
        sending = (b"content-length" in headers and headers[b"content-length"] != b"0") \
            or b"transfer-encoding" in headers
        if path not in PUBLIC:
            services = scope["app"].state.services
            key = presented(headers)
            who = services.keys.check(key)
            if who is None:
                client = scope.get("client")
                delay = services.failures.record(client[0] if client else "?")
                if delay and self.slowed < MAX_SLOWED:
                    self.slowed += 1
                    try:
                        await asyncio.sleep(delay)
                    finally:
                        self.slowed -= 1
                return await _refuse(send, path, key, sending)
            scope.setdefault("state", {})["principal"] = who
        limit = body_limit(path)
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0                # the HTTP parser has refused a malformed length already
        if declared > limit:
            return await _answer(send, 413, {"detail": f"the body is over this route's {limit} bytes"}, sending)
        await self.app(scope, _capped(receive, limit), send)


def _capped(receive, limit: int):
    """``receive`` that counts the body as it streams (chunked bodies have no length)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # FastAPI lets an HTTPException out of its body reading: a 413, not a 400
                raise HTTPException(413, f"the body is over this route's {limit} bytes",
                                    headers={"connection": "close"})
        return message
    return wrapped


async def _refuse(send, path: str, key: str | None, close: bool) -> None:
    if path in CROWDSEC:
        return await _answer(send, 403, {"message": "access forbidden"}, close)
    if not key:
        return await _answer(send, 401, {"detail": "an API key is required (X-Api-Key or Authorization: Bearer)"},
                             close, [(b"www-authenticate", b"Bearer")])
    return await _answer(send, 403, {"detail": "invalid API key"}, close)


async def _answer(send, status: int, content: dict, close: bool, extra=()) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
