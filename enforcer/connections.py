"""Serving HTTP to clients that may be slow on purpose.

uvicorn has no timeout on a request's head: its keep-alive timer runs only between requests
and every byte received cancels it, so a client that sends one header byte every few seconds
holds its connection for ever. With systemd's default LimitNOFILE (1024), 1,100 such
connections took every descriptor: the proxies' polls were reset and the budget job failed
with EMFILE. uvicorn's limit_concurrency does not help: it answers 503 to *complete* requests
once the connections are over the limit, so the slow ones would keep their places and the
polls would be the ones refused. So serve runs uvicorn with a protocol of its own that

- closes a connection whose request head is not complete HEAD_TIMEOUT seconds after it was
  opened (or after its last response), however it trickles in, or that sends more than
  HEAD_BYTES of head;
- keeps the open connections under a ceiling below the descriptor limit (and MAX_CONNECTIONS),
  so that the jobs (DuckDB's files, the logs being read, backups) always have descriptors and
  the connections' memory stays bounded: at the ceiling a
  new connection pushes out the one that has waited longest for its head, so a poll, whose
  head arrives in one packet, still gets in while a flood of slow clients churns;
- raises its own soft RLIMIT_NOFILE to the hard limit first (the shipped units set
  LimitNOFILE)."""
from __future__ import annotations

import logging
import resource
from collections import OrderedDict

HEAD_TIMEOUT = 10.0             # a poll's head arrives in one packet; nginx allows 60 s by default
HEAD_BYTES = 64 * 1024          # h11's limit is 16 KiB; httptools (llhttp) has none of its own
KEEP_ALIVE = 5                  # idle seconds between two requests on one connection (uvicorn's default)
FD_CAP = 1 << 20                # the soft limit never goes above this, even with an unlimited hard one
# A connection costs serve ~14 KB (RSS 113 -> 124 MB with 768 slow ones): 4,096 of them stay
# under 60 MB, and are far more than the proxies, bouncers and dashboards that poll it.
MAX_CONNECTIONS = 4096

log = logging.getLogger(__name__)


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_CAP if hard == resource.RLIM_INFINITY else min(hard, FD_CAP)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:      # a sandbox may refuse: keep what we have
            log.warning("could not raise the open-files limit from %s to %s: %s", soft, target, e)
    return soft


def connection_ceiling(fd_limit: int) -> int:
    """How many connections may be open at once: the descriptors left after the jobs' share
    (at least 256 of them, or half of a smaller limit; an eighth of a large one), and never
    more than MAX_CONNECTIONS."""
    reserve = max(min(256, fd_limit // 2), fd_limit // 8)
    return max(1, min(MAX_CONNECTIONS, fd_limit - reserve))


def guarded_protocol(ceiling: int, head_timeout: float = HEAD_TIMEOUT, head_bytes: int = HEAD_BYTES):
    """uvicorn's HTTP protocol (httptools when installed, else h11) with a deadline on each
    request's head and a ceiling on open connections (see the module's docstring)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    waiting: OrderedDict = OrderedDict()        # connections waiting for a head, the longest first

    class Guarded(AutoHTTPProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.head_timer = None
            if len(self.connections) > ceiling:
                # the one that has waited longest for its head; this one if none is waiting
                oldest = next(iter(waiting), self)
                oldest.head_done()
                oldest.transport.abort()
                if oldest is self:
                    return
            self.await_head()

        def await_head(self) -> None:
            self.head_seen = 0
            self.head_timer = self.loop.call_later(head_timeout, self.head_late)
            waiting[self] = None

        def head_done(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None
            waiting.pop(self, None)

        def head_late(self) -> None:
            self.head_timer = None
            waiting.pop(self, None)
            self.transport.abort()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.head_timer is None:
                return
            if self.cycle is not cycle:             # a request's head was complete
                self.head_done()
                return
            self.head_seen += len(data)
            if self.head_seen > head_bytes and not self.transport.is_closing():
                self.head_done()
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                     b"content-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # the next request's head is due now, unless a pipelined one is already in hand
            if not self.transport.is_closing() and self.cycle.response_complete and self.head_timer is None:
                self.await_head()

        def connection_lost(self, exc) -> None:
            self.head_done()
            super().connection_lost(exc)

    return Guarded


def config(app, host: str, port: int):
    """uvicorn's configuration for ``app`` with the limits above (raises the open-files limit)."""
    import uvicorn
    ceiling = connection_ceiling(raise_fd_limit())
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=guarded_protocol(ceiling),
                          timeout_keep_alive=KEEP_ALIVE)


def run(app, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, with the limits above."""
    import uvicorn
    try:
        uvicorn.Server(config(app, host, port)).run()
    except KeyboardInterrupt:
        pass
