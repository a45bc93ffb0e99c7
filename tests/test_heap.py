"""serve and the agent set glibc's malloc from the code (enforcer/heap.py): blocks freed by
the threads that made them go back to the system instead of staying resident in their arenas.
The pattern is serve's, small: each thread reads an 8 MiB piece (glibc then serves every block up
to 8 MiB from its arena), then pieces of 2 MiB of which few stay."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

WORK = """
import sys, threading
from enforcer import heap
if sys.argv[1] == "settled":
    heap.settle()

def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024

def work(kept):
    big = b"x" * (8 << 20)
    del big
    blocks = [b"y" * (2 << 20) for _ in range(24)]
    kept += blocks[::12]        # a few stay, spread over what was allocated
    del blocks

before, kept = rss(), []
threads = [threading.Thread(target=work, args=(kept,)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(rss() - before)
"""


def grown(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", WORK, mode], capture_output=True, text=True, env=env, check=True,
                         timeout=60)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_blocks_leave_the_resident_set():
    settled, default = grown("settled"), grown("default")
    # 4 threads x 2 kept blocks of 2 MiB: 16 MB stay; by default glibc kept most of the 192 MB
    assert settled < 35, (settled, default)
    assert default > 3 * settled + 20, (settled, default)


def test_an_operators_setting_is_kept(monkeypatch):
    from enforcer import heap
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1048576")
    assert heap.settle() == {}


def test_the_agent_settles_malloc_before_its_first_poll(monkeypatch, tmp_path):
    from enforcer import agent, heap
    calls = []
    monkeypatch.setattr(heap, "settle", lambda: calls.append("settle") or {})
    monkeypatch.setattr(agent, "poll", lambda *a, **k: calls.append("poll") or (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        agent.run("http://127.0.0.1:9", "k", str(tmp_path), None, None, 1.0, once=True)
    assert calls == ["settle", "poll"]
