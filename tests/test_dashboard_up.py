"""`pullwarden up` starts serve and the dashboard together, gives the dashboard an admin key
(the first start's, later one of its own), and the dashboard stops when serve stops."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx

from tests.enforcer_helpers import free_port


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _env_of(pid: int) -> dict:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(v.split("=", 1) for v in f.read().decode().split("\0") if "=" in v)


def _wait(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.time() < deadline, f"{url} did not answer"
        time.sleep(0.2)


def _up(workdir, port, board_port, stop=signal.SIGTERM):
    """Run up until both answer; what it printed, the dashboard's key, and whether its
    streamlit outlived it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "up", "--port", str(port),
                             "--dashboard-port", str(board_port)],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = []
        while not banner or not banner[-1].startswith("pullwarden serving on"):
            line = proc.stderr.readline()
            assert line, "up stopped before serving"
            banner.append(line)
        _wait(f"http://127.0.0.1:{port}/healthz")
        _wait(f"http://127.0.0.1:{board_port}/_stcore/health")
        [board] = [p for p in _children(proc.pid)
                   if "streamlit" in open(f"/proc/{p}/cmdline").read()]
        key = _env_of(board)["PULLWARDEN_API_KEY"]
        assert _env_of(board)["PULLWARDEN_API_URL"] == f"http://127.0.0.1:{port}"
        who = httpx.get(f"http://127.0.0.1:{port}/v1/whoami", headers={"X-Api-Key": key}).json()
    finally:
        proc.send_signal(stop)
        proc.communicate(timeout=60)
    time.sleep(0.5)
    alive = os.path.exists(f"/proc/{board}") and "streamlit" in open(f"/proc/{board}/cmdline").read()
    return "".join(banner), key, who, alive


def test_up_serves_the_dashboard_with_an_admin_key_and_stops_it(workdir):
    from tests.test_cli import SAMPLES
    shutil.copytree(SAMPLES, workdir / "sample_logs")          # a checkout: up serves the demo month
    port, board_port = free_port(), free_port()
    banner, key, who, alive = _up(workdir, port, board_port)
    assert f"dashboard: http://127.0.0.1:{board_port}" in banner
    assert f"admin key (shown once, keep it): {key}" in banner    # the first start's key
    assert who == {"name": "admin", "role": "admin"} or who["role"] == "admin"
    assert not alive, "the dashboard outlived serve (SIGTERM)"
    # again: the admin key is not at hand any more, so the dashboard gets one of its own
    banner, key2, who, alive = _up(workdir, port, board_port, stop=signal.SIGINT)
    assert "shown once" not in banner and key2 != key
    assert who["name"] == "dashboard" and who["role"] == "admin"
    assert not alive, "the dashboard outlived serve (SIGINT)"
    listed = subprocess.run([sys.executable, "-c", "from cli.main import main; main()", "keys", "list"], cwd=workdir,
                            capture_output=True, text=True).stdout
    assert "dashboard admin" in listed and key2 not in listed
