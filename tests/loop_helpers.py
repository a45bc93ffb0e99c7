"""The whole loop with real components, for tests/test_loop_real.py: a registry
(docker-registry, Debian's build of distribution 2.8), images written as OCI layouts and pushed
with skopeo, nginx as the mirror in front of it with the agent's include and the stock `main`
access log, `pullwarden serve` tailing that log, and `pullwarden agent` writing the include and
reloading nginx. Clients are curl behind a load balancer on loopback that names them in
X-Forwarded-For (nginx's realip takes it, as behind a real one), and skopeo. Every process listens on loopback only, runs in its own process group and
is stopped with that group when its block ends, whether the test passed or not."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST = "127.0.0.1"
BINARIES = ("docker-registry", "skopeo", "nginx", "curl")
needs_loop = pytest.mark.skipif(
    not all(shutil.which(b) for b in BINARIES),
    reason=f"needs {', '.join(b for b in BINARIES if not shutil.which(b))} (.ci/run installs docker-registry, "
           "skopeo, curl and nginx-light)")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# what a registry client sends for a manifest (containers/image's list, shortened)
ACCEPT = (f"{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")


class LoopError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pullwarden_cmd() -> list[str]:
    script = Path(sys.executable).parent / "pullwarden"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from cli.main import main; main()"]


def child_env() -> dict:
    """The environment without the caller's PULLWARDEN_* settings: the test's TOML is the config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@contextmanager
def process(name: str, cmd: list[str], log: Path, **kw):
    """A child in its own process group, stopped with its group at the end of the block (SIGTERM,
    SIGKILL after 10 s): nginx's workers and anything a child starts go with it."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)
    proc.name, proc.log = name, log
    try:
        yield proc
    finally:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group may outlive its leader for a moment (nginx workers finishing)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(what: str, check, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.1):
    """check()'s first true value; LoopError when `timeout` seconds pass or `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise LoopError(f"{what}: {proc.name} exited with {proc.returncode}; its log ends with:\n{tail(proc.log)}")
        if time.monotonic() > deadline:
            raise LoopError(f"{what}: not within {timeout:.0f} s" +
                            (f"; {proc.name}'s log ends with:\n{tail(proc.log)}" if proc is not None else ""))
        time.sleep(every)


def listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return True
    except OSError:
        return False


def run(cmd: list[str], timeout: float = 60, **kw) -> str:
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                       check=False, **kw)
    if r.returncode != 0:
        raise LoopError(f"{' '.join(cmd)} exited with {r.returncode}:\n{r.stderr[-3000:]}")
    return r.stdout


# ---- images ---------------------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    name: str                       # as the mirror's users spell it: docker.io/library/alpine
    tag: str
    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)     # digest -> bytes: config, then layers

    @property
    def digest(self) -> str:
        return _sha(self.manifest)

    @property
    def repository(self) -> str:    # in the registry behind the mirror
        return self.name.split("/", 1)[1]


def oci_image(folder: Path, name: str, tag: str, seed: int, layers: int = 3, size: int = 96 << 10) -> Image:
    """An OCI image layout in `folder` (oci-layout, index.json, blobs/sha256/…): a config and
    `layers` gzip layers of one file of `size` seeded random bytes each, no network."""
    rng = random.Random(seed)
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> dict:
        digest = _sha(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    descs, diff_ids, content = [], [], {}
    for n in range(layers):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            data = rng.randbytes(size)
            info = tarfile.TarInfo(f"layer{n}/data.bin")
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
        diff_ids.append(_sha(raw.getvalue()))
        layer = gzip.compress(raw.getvalue(), mtime=0)
        descs.append({"mediaType": OCI_LAYER, **put(layer)})
        content[descs[-1]["digest"]] = layer
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
    config_desc = {"mediaType": OCI_CONFIG, **put(config)}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc,
                           "layers": descs}, sort_keys=True).encode()
    manifest_desc = {"mediaType": OCI_MANIFEST, **put(manifest),
                     "annotations": {"org.opencontainers.image.ref.name": tag}}
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (folder / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    return Image(name, tag, manifest, {config_desc["digest"]: config, **content})


# ---- the registry behind the mirror ---------------------------------------------------------

@contextmanager
def registry(folder: Path, port: int):
    """distribution's registry, filesystem storage in `folder`, on loopback."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "config.yml"
    conf.write_text(f"""version: 0.1
log:
  level: warn
  accesslog: {{disabled: true}}
storage:
  filesystem: {{rootdirectory: {folder / 'storage'}}}
http:
  addr: {HOST}:{port}
  secret: pullwarden-loop-test
""")
    with process("docker-registry", ["docker-registry", "serve", str(conf)], folder / "registry.log") as proc:
        wait_until("the registry listening", lambda: listening(port), 15, proc)
        yield proc


def push(layout: Path, image: Image, registry_port: int, workdir: Path) -> None:
    """skopeo copy from the OCI layout into the registry (plain HTTP on loopback)."""
    run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", f"oci:{layout}:{image.tag}",
         f"docker://{HOST}:{registry_port}/{image.repository}:{image.tag}"],
        env={**os.environ, "HOME": str(workdir), "TMPDIR": str(workdir)})


def skopeo_pull(image: Image, mirror_port: int, dest: Path, workdir: Path) -> bool:
    """`skopeo copy` of the image through the mirror into a dir: layout, checked against what was
    pushed (skopeo verifies every blob's digest as it copies)."""
    run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--preserve-digests",
         f"docker://{HOST}:{mirror_port}/{image.name}:{image.tag}", f"dir:{dest}"],
        env={**os.environ, "HOME": str(workdir), "TMPDIR": str(workdir)})
    return (dest / "manifest.json").read_bytes() == image.manifest


# ---- the mirror: nginx with the agent's include ------------------------------------------------

MAIN_LOG_FORMAT = ("'$remote_addr - $remote_user [$time_local] \"$request\" '\n"
                   "                    '$status $body_bytes_sent \"$http_referer\" '\n"
                   "                    '\"$http_user_agent\" \"$http_x_forwarded_for\"'")


def mirror_conf(folder: Path, include: Path, port: int, registry_port: int) -> Path:
    """nginx as the mirror: the README's deployment (the agent's two includes), the stock `main`
    log format, and CRProxy's prefix paths. CRProxy takes `/v2/<registry>/<name>/…` to
    `/v2/<name>/…` on that registry; here one registry stands in for docker.io, so nginx strips
    `docker.io/` the same way, and a path without a registry (a docker daemon's
    registry-mirrors) goes on unchanged, docker.io being the default. The tier nginx applied is
    shown in a header (a 403 for a ban says `banned`)."""
    temp = folder / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(f"""
pid {folder}/nginx.pid;
error_log {folder}/error.log notice;      # notice: the reloads, "reconfiguring"
worker_processes 1;
events {{ worker_connections 512; }}
http {{
    log_format main {MAIN_LOG_FORMAT};
    access_log {folder}/access.log main;
    client_body_temp_path {temp}; proxy_temp_path {temp}; fastcgi_temp_path {temp};
    uwsgi_temp_path {temp}; scgi_temp_path {temp};
    include {include}/nginx-pullwarden-http.conf;
    # run as root, nginx's workers are `nobody` and cannot write under pytest's private tmp
    # dir: a blob slowed by a tier's limit_rate is passed on as it comes instead of spooled
    proxy_max_temp_file_size 0;
    server {{
        include {include}/nginx-pullwarden-server.conf;
        listen {HOST}:{port};
        # the clients come through a load balancer on loopback that appends the address it saw
        # (the README's deployment behind one): nginx takes the rightmost untrusted hop
        set_real_ip_from 127.0.0.0/8;
        real_ip_header X-Forwarded-For;
        real_ip_recursive on;
        # in the server: the include's 403s are answered there, before any location
        add_header X-Pullwarden-Tier $pullwarden_effective_tier always;
        location /v2/ {{
            rewrite ^/v2/docker\\.io/(.+)$ /v2/$1 break;
            proxy_pass http://{HOST}:{registry_port};
        }}
    }}
}}
""")
    return conf


@contextmanager
def mirror(folder: Path, include: Path, port: int, registry_port: int):
    """nginx in the foreground (daemon off) with its own prefix; yields (process, conf)."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = mirror_conf(folder, include, port, registry_port)
    base = ["nginx", "-c", str(conf), "-p", str(folder)]
    r = subprocess.run(base + ["-t"], capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        raise LoopError(f"nginx -t: {r.stderr}")
    with process("nginx", base + ["-g", "daemon off;"], folder / "nginx.out") as proc:
        wait_until("nginx listening", lambda: listening(port), 15, proc)
        yield proc, conf


# ---- clients --------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: float             # wall time just before the request left
    done: float             # wall time once the whole response was in

    @property
    def tier(self) -> str:
        return self.headers.get("x-pullwarden-tier", "")


class Client:
    """curl as one client behind a load balancer: it connects from loopback and the header the
    balancer would append names ``address``, which nginx (realip) then sees as the client. A
    loopback address of its own would do for nginx, but no rule acts on loopback (no client
    comes from there): the clients have addresses of the benchmarking range, 198.18.0.0/15."""

    def __init__(self, address: str, port: int, workdir: Path):
        self.address, self.base = address, f"http://{HOST}:{port}"
        self.dir = workdir / f"client-{address}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log: list[Response] = []

    def request(self, path: str, method: str = "GET", accept: str | None = None) -> Response:
        body, head = self.dir / "body", self.dir / "headers"
        cmd = ["curl", "-s", "-S", "-H", f"X-Forwarded-For: {self.address}", "--max-time", "15", "-o", str(body),
               "-D", str(head), "-w", "%{http_code}"]
        cmd += ["--head"] if method == "HEAD" else []
        cmd += ["-H", f"Accept: {accept}"] if accept else []
        sent = time.time()
        r = subprocess.run(cmd + [self.base + path], capture_output=True, text=True, timeout=30, check=False)
        done = time.time()
        if r.returncode != 0:
            raise LoopError(f"curl from {self.address} {method} {path}: exit {r.returncode} {r.stderr.strip()}")
        headers = {}
        for line in head.read_text(errors="replace").splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        resp = Response(int(r.stdout.strip()), headers, body.read_bytes() if body.exists() else b"", sent, done)
        body.unlink(missing_ok=True)
        self.log.append(resp)
        return resp

    def pull(self, image: Image, ping: bool = True) -> list[Response]:
        """What a registry client does for an image it does not have: the ping, the manifest by
        tag, then the config and every layer named in it; every digest is checked."""
        out = [self.request("/v2/")] if ping else []
        m = self.request(f"/v2/{image.name}/manifests/{image.tag}", accept=ACCEPT)
        out.append(m)
        if m.status != 200:
            return out
        if _sha(m.body) != image.digest:
            raise LoopError(f"{self.address}: the manifest of {image.name}:{image.tag} differs from the one pushed")
        manifest = json.loads(m.body)
        for desc in [manifest["config"], *manifest["layers"]]:
            b = self.request(f"/v2/{image.name}/blobs/{desc['digest']}")
            out.append(b)
            if b.status == 200 and _sha(b.body) != desc["digest"]:
                raise LoopError(f"{self.address}: blob {desc['digest']} arrived with another digest")
        return out


# ---- pullwarden ---------------------------------------------------------------------------

def serve_config(folder: Path, db: Path, log: Path, port: int, rules: Path) -> Path:
    """The settings serve runs with: its file, its log and its address; the intervals and the
    tiers are the defaults. The site rules folder replaces the CI storm rule (see its file)."""
    cfg = folder / "pullwarden.toml"
    cfg.write_text(f"db = {json.dumps(str(db))}\nsources = [{json.dumps(str(log))}]\n"
                   f"host = \"{HOST}\"\nport = {port}\nrules_dir = {json.dumps(str(rules))}\n")
    return cfg


def create_key(cfg: Path, role: str, name: str, cwd: Path) -> str:
    out = run(pullwarden_cmd() + ["keys", "create", "--role", role, "--name", name, "--config", str(cfg), "--json"],
              env=child_env(), cwd=cwd)
    return json.loads(out.strip().splitlines()[-1])["key"]
