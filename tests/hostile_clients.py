"""The hostile clients of issue 19 §6, shared by tests/test_hostile_http.py and
bench/soak_hostile.py: slow-header connections (slowloris) and keyless POSTs announcing a body
of 173 MB."""
from __future__ import annotations

import socket
import threading

BIG = 173 * 1024 * 1024         # the size of the POSTs in the issue


def head(path: str, length: int, *headers: str, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: pullwarden", "Content-Type: application/json",
             f"Content-Length: {length}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Slowloris(threading.Thread):
    """``n`` connections, each sending one more header byte every ``every`` seconds; a closed
    one is opened again, as an attacker would."""

    def __init__(self, where, n: int, every: float, stop: threading.Event):
        super().__init__(daemon=True)
        self.where, self.n, self.every, self.stop = where, n, every, stop
        self.socks: list[socket.socket | None] = [None] * n
        self.reopened = 0

    def open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(self.where, timeout=2)
            s.sendall(b"GET /v1/policy HTTP/1.1\r\nHost: pullwarden\r\n")
            return s
        except OSError:
            return None

    def run(self) -> None:
        while not self.stop.is_set():
            for i in range(self.n):
                s = self.socks[i]
                try:
                    if s is None:
                        raise OSError
                    s.send(b"X")                # never a complete header line
                except OSError:
                    if s is not None:
                        s.close()
                        self.reopened += 1
                    self.socks[i] = self.open()
                if self.stop.is_set():
                    break
            self.stop.wait(self.every)
        for s in self.socks:
            if s is not None:
                s.close()


class BigPosts(threading.Thread):
    """Keyless POSTs announcing 173 MB, sending as fast as the server takes it, again and again."""

    def __init__(self, where, stop: threading.Event):
        super().__init__(daemon=True)
        self.where, self.stop = where, stop
        self.sent = 0

    def run(self) -> None:
        chunk = b"[" + b"1," * 32767
        while not self.stop.is_set():
            try:
                with socket.create_connection(self.where, timeout=2) as s:
                    s.sendall(head("/v1/admin/images/allowed", BIG))
                    for _ in range(BIG // len(chunk)):
                        if self.stop.is_set():
                            break
                        s.sendall(chunk)
                        self.sent += len(chunk)
            except OSError:
                self.stop.wait(0.05)
