"""The real nginx on loopback, with the include `pullwarden agent` generates."""
from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from enforcer.agent import render

needs_nginx = pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (.ci/run installs nginx-light)")


def published_files(api) -> dict[str, str]:
    """The agent's files for the policy the enforcer publishes now."""
    policy = api.services.publisher.publish()
    return render(json.loads(gzip.decompress(policy.body)), warn=lambda m: None)


@contextmanager
def nginx(folder: Path, files: dict[str, str], servers: str, port: int, events: str = "",
          log_level: str = "error"):
    """nginx with the generated include in its http block, serving `servers` (server blocks, which
    may `include {folder}/server.conf` or `{folder}/location.conf`), until the block ends; yields
    the error log's path."""
    (folder / "http.conf").write_text(files["nginx-pullwarden-http.conf"])
    (folder / "server.conf").write_text(files.get("nginx-pullwarden-server.conf", ""))
    (folder / "location.conf").write_text(files["nginx-pullwarden-location.conf"])
    conf = folder / "nginx.conf"
    conf.write_text(f"""
pid {folder}/nginx.pid;
error_log {folder}/error.log {log_level};
events {{ {events} }}
http {{
    access_log off;
    client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
    uwsgi_temp_path {folder}; scgi_temp_path {folder};
    include {folder}/http.conf;
    {servers}
}}
""")
    r = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(folder)], capture_output=True, text=True)
    assert r.returncode == 0 and "syntax is ok" in r.stderr, r.stderr
    server = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(folder), "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {(folder / 'error.log').read_text()}")
                time.sleep(0.05)
        yield folder / "error.log"
    finally:
        server.terminate()
        server.wait(timeout=10)
