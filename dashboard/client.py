"""The dashboard's one door to the state: pullwarden's HTTP API (the server owns the DuckDB file
while it runs). `pullwarden dashboard` passes the URL and key in the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass

import httpx

URL_ENV, KEY_ENV = "PULLWARDEN_API_URL", "PULLWARDEN_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    """What went wrong, and what the operator can do about it."""

    def __init__(self, status: int | None, message: str, hint: str):
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}"


def _hint(status: int, path: str) -> str:
    if status == 401:
        return f"give the dashboard a key: `pullwarden dashboard --key KEY` or {KEY_ENV}"
    if status == 403:
        return ("this key may not do that: actions need an admin key "
                "(`pullwarden keys create --role admin --name dashboard`)" if "/admin/" in path else
                "the key is unknown or revoked: create one with `pullwarden keys create --role viewer --name me`")
    if status == 404:
        return "the server does not know this (an older pullwarden serve? restart it after upgrading)"
    if status == 409 or status == 422:
        return "change the input and try again"
    return "see the server's log (pullwarden serve's stderr)"


@dataclass(frozen=True)
class Client:
    url: str
    key: str
    timeout: float = 60.0

    @classmethod
    def from_env(cls, environ=os.environ) -> "Client":
        return cls(environ.get(URL_ENV, "").rstrip("/") or DEFAULT_URL, environ.get(KEY_ENV, ""))

    def request(self, method: str, path: str, params: dict | None = None, body: dict | None = None):
        params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            r = httpx.request(method, self.url + path, params=params, json=body, timeout=self.timeout,
                              headers={"X-Api-Key": self.key})
        except httpx.TransportError as e:
            raise ApiError(None, f"cannot reach pullwarden at {self.url} ({type(e).__name__})",
                           "start it with `pullwarden serve` (or `pullwarden up`), or point the dashboard at it "
                           f"with --api URL / {URL_ENV}") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = None
            if isinstance(detail, list):       # FastAPI's validation errors
                detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                                   for d in detail)
            raise ApiError(r.status_code, f"{method} {path}: {r.status_code} {detail or r.reason_phrase}",
                           _hint(r.status_code, path))
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.content

    def get(self, path: str, **params):
        return self.request("GET", path, params)

    def post(self, path: str, body: dict):
        return self.request("POST", path, body=body)

    def delete(self, path: str, body: dict):
        return self.request("DELETE", path, body=body)
