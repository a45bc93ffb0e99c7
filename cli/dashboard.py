"""`pullwarden dashboard`: the Streamlit dashboard (dashboard/app.py) on loopback, talking to a
running server's API with a key. `pullwarden up` starts it beside serve with start()/stop()."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from cli.app import cli, fail, with_settings

HOST = "127.0.0.1"      # the dashboard acts with an admin key: never on an outside address by itself


def app_path() -> Path:
    import dashboard
    return Path(dashboard.__file__).parent / "app.py"


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent dies, even by SIGKILL, so no dashboard outlives its
    serve (Linux prctl PR_SET_PDEATHSIG; elsewhere the parent's own stop() is all there is)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start(api_url: str, key: str, port: int, quiet: bool = False) -> subprocess.Popen:
    """`streamlit run dashboard/app.py` headless on loopback; the URL and key go by environment,
    never on the command line (where `ps` shows them)."""
    env = {**os.environ, "PULLWARDEN_API_URL": api_url, "PULLWARDEN_API_KEY": key}
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path()),
           "--server.headless=true", "--browser.gatherUsageStats=false", f"--server.address={HOST}",
           f"--server.port={port}", "--server.fileWatcherType=none", "--client.toolbarMode=viewer"]
    # quiet: streamlit's banner (its URLs) goes; its errors, on stderr, stay
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None, preexec_fn=_die_with_parent)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _interrupt(*_) -> None:
    # stop() must not run inside the handler: the handler interrupts proc.wait(), which holds
    # the Popen's wait lock, and waiting again there would never return
    raise KeyboardInterrupt


def url(port: int) -> str:
    return f"http://{HOST}:{port}"


@cli.command("dashboard")
@click.option("--api", "api_url", default=None, help="The API's URL (setting api_url; default: the server serving this --db, "
              "else http://host:port).")
@click.option("--key", "api_key", default=None, help="A viewer key (sees) or an admin key (also acts); setting api_key, "
              "better PULLWARDEN_API_KEY.")
@click.option("--port", "dashboard_port", type=int, default=None, help="Port for the dashboard on 127.0.0.1 (setting dashboard_port, "
              "default 8501).")
@with_settings
def dashboard_command(cfg):
    """The operator's dashboard in the browser: traffic, top talkers, entities, review, decisions
    and audit, rules, images, budget and reports. It reads and acts only through the API of a
    running `pullwarden serve`; a viewer key sees, an admin key also acts (with a reason, audited)."""
    from cli.remote import server_url
    api_url = (server_url(cfg, None) or f"http://{cfg.host}:{cfg.port}").rstrip("/")     # --api is api_url
    key = cfg.api_key
    if not key:
        fail("the dashboard needs a key for the API: --key KEY or PULLWARDEN_API_KEY "
             "(pullwarden keys create --role viewer --name dashboard; an admin key also lets it act)")
    port = cfg.dashboard_port
    proc = start(api_url, key, port, quiet=True)
    click.echo(f"dashboard on {url(port)} (API {api_url}; Ctrl-C stops it)", err=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        stop(proc)
    if code not in (0, -signal.SIGTERM):
        fail(f"streamlit exited with status {code} (is port {port} taken? --port P)")
