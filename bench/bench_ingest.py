"""Ingest benchmark: pullwarden against GoAccess on the same synthetic mirror log.

    python bench/bench_ingest.py                   # 1,000,000 lines, 3 runs of each tool
    python bench/bench_ingest.py --lines 200000 --repeat 1
    python bench/bench_ingest.py --json > result.json

What it does, in order:

  1. Writes a seeded nginx `main`-format log with bench/genlogs.py into the work dir
     (default /tmp/pullwarden-bench), or reuses the one there if it has the right number
     of lines. The same --lines always gives the same file.
  2. Builds two small MaxMind-format databases (an ASN one and a country one, about 8,800
     IPv4 networks plus a few IPv6 /32s covering the generator's 2001:db8: addresses), so
     enrichment does real lookups. Needs `mmdb-writer` and `netaddr`
     (pip install -e '.[test]').
  3. Runs the real CLI as an operator would, into a FRESH DuckDB file each time:
         pullwarden ingest LOG --db DB --asn-db ASN --country-db COUNTRY --json
     and measures the wall time around the process, its CPU seconds and peak RSS. It also
     reports pullwarden's own `seconds` and `lines_per_second` from that JSON (which leave
     out interpreter start-up, opening the database and the final checkpoint) and the
     size of the resulting database.
  4. Runs GoAccess on the same file the way an operator would:
         goaccess LOG --log-format=COMBINED -o goaccess.html --no-progress
     (Debian: apt-get install -y goaccess), wall time, CPU seconds and peak RSS.
  5. Repeats both --repeat times, alternating the tools, and prints best and median, the
     ratio of pullwarden's lines/s to GoAccess's, and the targets from the issue:
         pullwarden >= 590,000 lines/s       (median wall-clock run; issue 22: 85% of DuckDB's own insert)
         pullwarden >= 6.5x GoAccess lines/s (median against median, wall clock)
         pullwarden peak RSS <= 600 MB       (largest of all runs; 1 MB = 10^6 bytes)
     each with PASS or MISS. The verdicts use wall-clock time, i.e. what an operator waits.

Peak RSS is the child's own ru_maxrss as GNU time (/usr/bin/time, Debian package `time`)
reports it. resource.getrusage(RUSAGE_CHILDREN) would not do: its maximum carries over from
earlier children, and a child started by Python inherits Python's high-water RSS at exec.
Both tools read the log from the page cache: the file is read once before the first run.
The code measured is the code beside this script (its parent directory goes first on
PYTHONPATH), with built-in settings only: the child runs in the work dir with an empty
--config file and without PULLWARDEN_* variables, so no local pullwarden.toml or
environment changes what is measured.

Object-storage logs (issue 13): with --object-formats it also writes --lines lines of each
of s3, oss and logpush (sample_logs/object-storage/generate.py, seeded, every line a blob
download with a signed URL) and ingests each --repeat times the same way, into object_events;
their lines/s are printed under the proxy format's.

This is a benchmark run by hand, not a test, and it never fails on a MISS. With the
defaults it takes under a minute on two cores, most of it GoAccess. Run it on an
otherwise idle machine: for each run it shows the CPU seconds that other processes used
meanwhile, and warns when that was enough to make the figures noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GENLOGS = HERE / "genlogs.py"

TARGET_LINES_PER_SECOND = 590_000      # issue 22
TARGET_RATIO = 6.5
TARGET_PEAK_BYTES = 600_000_000        # 600 MB
MB = 1_000_000


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- inputs -----------------------------------------------------------------------------------

def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
    return n


def ensure_log(workdir: Path, lines: int) -> Path:
    """The generated log for this many lines; generated once, reused while its line count fits."""
    path = workdir / f"mirror-main-{lines}.log"
    if path.is_file():
        have = count_lines(path)
        if have == lines:
            say(f"reusing {path} ({lines:,} lines)")
            return path
        say(f"{path} has {have:,} lines, not {lines:,}: generating it again")
    say(f"generating {path} ({lines:,} lines) with bench/genlogs.py ...")
    tmp = path.with_suffix(".log.partial")
    started = time.perf_counter()
    with open(tmp, "wb") as out:
        subprocess.run([sys.executable, str(GENLOGS), "--lines", str(lines), "--format", "main"],
                       stdout=out, check=True)
    tmp.replace(path)          # an interrupted generation is never mistaken for a finished one
    say(f"  done in {time.perf_counter() - started:.1f} s")
    return path


ASNS_ORGS = ["CHINANET-BACKBONE", "CHINA169-BACKBONE", "ALIBABA-CN-NET", "TENCENT-NET-AP", "AMAZON-02",
             "GOOGLE-CLOUD-PLATFORM", "MICROSOFT-CORP-MSN-AS-BLOCK", "HETZNER-AS", "OVH", "DIGITALOCEAN-ASN",
             "CMNET-GD", "CNCGROUP-BJ", "COMCAST-7922", "DTAG", "ORANGE-FR", "UNIVERSITY-NET"]
COUNTRIES = ["CN", "CN", "CN", "CN", "US", "US", "DE", "JP", "SG", "HK", "KR", "FR", "GB", "NL", "RU", "BR", "IN"]


def build_geo_dbs(workdir: Path) -> tuple[Path, Path, int]:
    """An ASN and a country database in MaxMind format over the same seeded networks.

    IPv4: every /12 from 1.0.0.0 to 223.255.0.0; of those, about 80% are one network, 10%
    are split into sixteen /16s, and 10% are left out so some lookups find nothing, as with
    a real database. IPv6: 2001:db8::/32 (where genlogs puts its IPv6 clients) split into
    sixteen /36s, plus a few other /32s. Returns the two paths and the network count."""
    try:
        from mmdb_writer import MMDBWriter
        from netaddr import IPSet
    except ImportError:
        sys.exit("bench_ingest: needs mmdb-writer and netaddr: pip install -e '.[test]' "
                 "(or pip install mmdb-writer netaddr)")
    rng = random.Random(20241120)
    networks: list[str] = []
    for a in range(1, 224):
        for b in range(0, 256, 16):
            roll = rng.random()
            if roll < 0.10:
                continue
            if roll < 0.20:
                networks += [f"{a}.{c}.0.0/16" for c in range(b, b + 16)]
            else:
                networks.append(f"{a}.{b}.0.0/12")
    networks += [f"2001:db8:{h:x}000::/36" for h in range(16)]
    networks += ["2400:cb00::/32", "2a01:4f8::/32", "2604:a880::/32", "240e:e0::/32"]

    asn = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    country = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for net in networks:
        number = rng.randrange(1000, 140000)
        org = f"{rng.choice(ASNS_ORGS)} AS{number}"
        asn.insert_network(IPSet([net]), {"autonomous_system_number": number,
                                          "autonomous_system_organization": org})
        country.insert_network(IPSet([net]), {"country": {"iso_code": rng.choice(COUNTRIES)}})
    asn_path, country_path = workdir / "bench-asn.mmdb", workdir / "bench-country.mmdb"
    asn.to_db_file(str(asn_path))
    country.to_db_file(str(country_path))
    return asn_path, country_path, len(networks)


# -- running one child --------------------------------------------------------------------------

GNU_TIME = "/usr/bin/time"


def run_measured(cmd: list[str], cwd: Path, env: dict, out_path: Path, err_path: Path) -> dict:
    """Run cmd to completion: wall seconds around the process, its peak RSS in bytes, exit code.

    Peak RSS comes from GNU time (%M, the kernel's ru_maxrss of the command). Python's own
    rusage figures would not do: the child is started with vfork, and Linux carries the
    parent's high-water RSS into the child's ru_maxrss at exec, so a small program like
    GoAccess would be charged with this benchmark's memory. Without GNU time that figure is
    still used, flagged as an upper bound."""
    rss_file = out_path.with_suffix(".maxrss")
    rss_file.unlink(missing_ok=True)
    use_time = os.access(GNU_TIME, os.X_OK)
    full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if use_time else cmd
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy_before = busy_cpu_seconds()
        started = time.perf_counter()
        proc = subprocess.Popen(full, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        busy_after = busy_cpu_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)   # reaped above; keep Popen from waiting again
    kib, exact = usage.ru_maxrss, False
    if use_time:
        try:   # after "Command exited with non-zero status N", if any, the last line is %M
            kib, exact = int(rss_file.read_text().split()[-1]), True
        except (OSError, ValueError, IndexError):
            pass
    cpu = usage.ru_utime + usage.ru_stime          # the command's, GNU time's few ms included
    other = None
    if busy_before is not None and busy_after is not None:
        other = max(0.0, busy_after - busy_before - cpu)
    return {"seconds": wall, "cpu_seconds": cpu, "other_cpu_seconds": other, "peak_rss_bytes": kib * 1024,
            "peak_rss_exact": exact, "exit_code": proc.returncode}


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat. The part
    of a run's share that the measured command did not use shows other work competing."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
    busy = sum(fields[:8]) - idle                                  # guest time is already in user
    return busy / os.sysconf("SC_CLK_TCK")


def fail_child(name: str, res: dict, err_path: Path) -> None:
    tail = err_path.read_text(errors="replace")[-3000:]
    sys.exit(f"bench_ingest: {name} exited with {res['exit_code']}; its stderr ends with:\n{tail}")


def pullwarden_cmd() -> list[str]:
    """The installed console script of this interpreter (not a pyenv shim, which would add a
    shell to the measurement), or the same entry point through -c."""
    script = Path(sys.executable).parent / "pullwarden"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "from cli.main import main; main()"]


def child_env(workdir: Path) -> dict:
    """The child's environment: no PULLWARDEN_*, this checkout first on PYTHONPATH, and its
    modules' bytecode cached in the work dir as pip's compiled install has it (compile_code):
    with PYTHONDONTWRITEBYTECODE set (some sandboxes set it) every run compiled them again,
    0.09 s of its start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLWARDEN_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")     # not in the checkout
    return env


def compile_code(workdir: Path) -> None:
    """Compile this checkout's modules once, before the timed runs (pip does it at install)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-x", r"[/\\](tests|bench|sample_logs)[/\\]",
                    str(REPO)], env=child_env(workdir), check=True, stdout=subprocess.DEVNULL)


def run_pullwarden(log: Path, workdir: Path, asn_db: Path, country_db: Path, lines: int) -> dict:
    db = workdir / "bench.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    config = workdir / "bench-empty.toml"
    config.write_text("# empty on purpose: built-in defaults only\n")
    cmd = pullwarden_cmd() + ["ingest", str(log), "--config", str(config), "--db", str(db),
                              "--asn-db", str(asn_db), "--country-db", str(country_db), "--json"]
    out, err = workdir / "pullwarden.out", workdir / "pullwarden.err"
    res = run_measured(cmd, workdir, child_env(workdir), out, err)
    if res["exit_code"] != 0:
        fail_child("pullwarden ingest", res, err)
    try:
        report = json.loads(out.read_text().strip().splitlines()[-1])
    except (ValueError, IndexError):
        sys.exit(f"bench_ingest: pullwarden printed no JSON report; see {out} and {err}")
    size = sum(p.stat().st_size for p in (db, db.with_name(db.name + ".wal")) if p.exists())
    res.update(lines_per_second=lines / res["seconds"], json_seconds=report["seconds"],
               json_lines_per_second=report["lines_per_second"], db_bytes=size,
               lines=report["lines"], events=report["events"], rejected=report["rejected"],
               notices=report["notices"])
    return res


def run_goaccess(goaccess: str, log: Path, workdir: Path, lines: int) -> dict:
    html = workdir / "goaccess.html"
    html.unlink(missing_ok=True)
    cmd = [goaccess, str(log), "--log-format=COMBINED", "-o", str(html), "--no-progress"]
    out, err = workdir / "goaccess.out", workdir / "goaccess.err"
    res = run_measured(cmd, workdir, dict(os.environ), out, err)
    if res["exit_code"] != 0:
        fail_child("goaccess", res, err)
    res["lines_per_second"] = lines / res["seconds"]
    # the report embeds its totals; they show whether GoAccess really parsed every line
    m = re.search(r'"total_requests":\s*(\d+),\s*"valid_requests":\s*(\d+),\s*"failed_requests":\s*(\d+)',
                  html.read_text(errors="replace"))
    if m:
        res.update(total_requests=int(m[1]), valid_requests=int(m[2]), failed_requests=int(m[3]))
    return res


def ensure_object_log(workdir: Path, fmt: str, lines: int) -> Path:
    """--lines lines of an object-storage format, written once per size (seeded)."""
    import importlib.util
    path = workdir / f"object-{fmt}-{lines}.log"
    if path.exists():
        return path
    spec = importlib.util.spec_from_file_location("object_samples", REPO / "sample_logs" / "object-storage" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    say(f"writing {lines:,} lines of {fmt} ...")
    rng = random.Random(13)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(gen.WRITERS[fmt](rng, gen.downloads(rng, lines), damaged=False)) + "\n")
    tmp.rename(path)
    return path


def enrichment_summary(db: Path) -> dict:
    """What the last ingest stored, read afterwards (not timed)."""
    import duckdb
    con = duckdb.connect(str(db), read_only=True)
    try:
        events, ips = con.execute("select count(*), count(distinct client_ip) from events").fetchone()
        rows, with_asn, with_country = con.execute(
            "select count(*), count(asn), count(country) from ip_info").fetchone()
        uas = con.execute("select count(*) from user_agents").fetchone()[0]
    finally:
        con.close()
    return {"events": events, "distinct_client_ips": ips, "ip_info_rows": rows,
            "ip_info_with_asn": with_asn, "ip_info_with_country": with_country, "user_agents": uas}


# -- reporting ------------------------------------------------------------------------------

def summarize(runs: list[dict]) -> dict:
    secs = [r["seconds"] for r in runs]
    rss = [r["peak_rss_bytes"] for r in runs]
    out = {"runs": len(runs), "seconds_best": min(secs), "seconds_median": statistics.median(secs),
           "lines_per_second_best": max(r["lines_per_second"] for r in runs),
           "lines_per_second_median": statistics.median(r["lines_per_second"] for r in runs),
           "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in runs),
           "peak_rss_bytes_median": statistics.median(rss), "peak_rss_bytes_max": max(rss)}
    if "json_seconds" in runs[0]:
        out.update(json_seconds_best=min(r["json_seconds"] for r in runs),
                   json_seconds_median=statistics.median(r["json_seconds"] for r in runs),
                   json_lines_per_second_best=max(r["json_lines_per_second"] for r in runs),
                   json_lines_per_second_median=statistics.median(r["json_lines_per_second"] for r in runs),
                   db_bytes=runs[-1]["db_bytes"])
    return out


def tool_version(cmd: list[str]) -> str:
    try:
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return text.strip().splitlines()[0] if text.strip() else "?"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":!bench"],   # product code that differs from the commit
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (rev + ("+dirty" if dirty else "")) if rev else "?"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def print_table(result: dict) -> None:
    ctx, pw, ga = result["context"], result["pullwarden"], result["goaccess"]
    lines = ctx["lines"]
    print(f"pullwarden ingest benchmark: {lines:,} lines of nginx main format "
          f"({ctx['log_bytes'] / MB:,.0f} MB), {ctx['repeat']} run{'s' if ctx['repeat'] > 1 else ''} of each tool")
    print(f"  pullwarden {ctx['pullwarden_revision']}, duckdb {ctx['duckdb']}, {ctx['goaccess']}, "
          f"python {ctx['python']}, {ctx['cpus']} CPUs, load before {ctx['load_before']} after {ctx['load_after']}")
    print(f"  geo databases: {ctx['geo_networks']:,} networks each (ASN, country)")
    print()
    w = (23, 15, 21, 9, 15)
    print(f"{'tool':<{w[0]}}{'seconds':>{w[1]}}{'lines/s':>{w[2]}}{'CPU s':>{w[3]}}{'peak RSS MB':>{w[4]}}")
    print(f"{'':<{w[0]}}{'best / median':>{w[1]}}{'best / median':>{w[2]}}{'median':>{w[3]}}{'median / max':>{w[4]}}")

    def row(name, sb, sm, lb, lm, cpu=None, rm=None, rx=None):
        rss = f"{rm / MB:,.0f} / {rx / MB:,.0f}" if rm is not None else "-"
        cpu = f"{cpu:.2f}" if cpu is not None else "-"
        print(f"{name:<{w[0]}}{f'{sb:.2f} / {sm:.2f}':>{w[1]}}{f'{lb:,.0f} / {lm:,.0f}':>{w[2]}}"
              f"{cpu:>{w[3]}}{rss:>{w[4]}}")

    row("pullwarden (wall)", pw["seconds_best"], pw["seconds_median"], pw["lines_per_second_best"],
        pw["lines_per_second_median"], pw["cpu_seconds_median"], pw["peak_rss_bytes_median"], pw["peak_rss_bytes_max"])
    row("pullwarden (own JSON)", pw["json_seconds_best"], pw["json_seconds_median"],
        pw["json_lines_per_second_best"], pw["json_lines_per_second_median"])
    row("goaccess (wall)", ga["seconds_best"], ga["seconds_median"], ga["lines_per_second_best"],
        ga["lines_per_second_median"], ga["cpu_seconds_median"], ga["peak_rss_bytes_median"], ga["peak_rss_bytes_max"])
    print()
    for name, d in (("pullwarden", pw), ("goaccess", ga)):
        runs = ", ".join(f"{r['seconds']:.2f}" + (f" (+{r['other_cpu_seconds']:.1f})"
                                                   if r["other_cpu_seconds"] is not None else "")
                         for r in d["per_run"])
        print(f"{name} runs, wall s (+ CPU s used meanwhile by other processes): {runs}")
    r = result["ratio"]
    print()
    print(f"ratio pullwarden lines/s / goaccess lines/s (wall): best {r['best']:.2f}x, median {r['median']:.2f}x")
    print(f"pullwarden database after ingest: {pw['db_bytes'] / MB:,.1f} MB")
    for fmt, d in result.get("object_formats", {}).items():
        row(f"pullwarden {fmt} (wall)", d["seconds_best"], d["seconds_median"], d["lines_per_second_best"],
            d["lines_per_second_median"], d["cpu_seconds_median"], d["peak_rss_bytes_median"], d["peak_rss_bytes_max"])
    e = result.get("enrichment")
    if e:
        print(f"stored: {e['events']:,} events, {e['distinct_client_ips']:,} client addresses, ip_info "
              f"{e['ip_info_rows']:,} rows ({e['ip_info_with_asn']:,} with ASN, "
              f"{e['ip_info_with_country']:,} with country), {e['user_agents']:,} user agents")
    print()
    print("targets (issue)")
    for t in result["targets"]:
        print(f"  {t['target']:<44}{t['measured']:>24}   {'PASS' if t['pass'] else 'MISS'}")
    for warning in result["warnings"]:
        print(f"warning: {warning}")


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="bench_ingest.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000,
                    help="size of the generated log in lines (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each tool; best and median are reported (default 3)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pullwarden-bench",
                    help="where the log, the geo databases, the DuckDB file and goaccess.html go "
                         "(default /tmp/pullwarden-bench); the log is reused from here")
    ap.add_argument("--object-formats", action="store_true",
                    help="also ingest --lines lines of each object-storage format (s3, oss, logpush)")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object with every run instead of the table")
    args = ap.parse_args()
    if args.lines < 1 or args.repeat < 1:
        ap.error("--lines and --repeat must be at least 1")
    goaccess = shutil.which("goaccess")
    if not goaccess:
        sys.exit("bench_ingest: goaccess not found; on Debian: apt-get install -y goaccess")

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    log = ensure_log(workdir, args.lines)
    say("building the ASN and country databases ...")
    asn_db, country_db, networks = build_geo_dbs(workdir)
    count_lines(log)           # warm the page cache so neither tool pays for the first read
    compile_code(workdir)

    pw_runs, ga_runs = [], []
    for i in range(1, args.repeat + 1):
        res = run_pullwarden(log, workdir, asn_db, country_db, args.lines)
        say(f"run {i}/{args.repeat} pullwarden: {res['seconds']:.2f} s wall ({res['json_seconds']:.2f} s own), "
            f"{res['cpu_seconds']:.2f} s CPU, {res['peak_rss_bytes'] / MB:,.0f} MB peak")
        pw_runs.append(res)
        res = run_goaccess(goaccess, log, workdir, args.lines)
        say(f"run {i}/{args.repeat} goaccess:   {res['seconds']:.2f} s wall, {res['cpu_seconds']:.2f} s CPU, "
            f"{res['peak_rss_bytes'] / MB:,.0f} MB peak")
        ga_runs.append(res)

    object_formats, object_warnings = {}, []
    for fmt in ("s3", "oss", "logpush") if args.object_formats else ():
        olog = ensure_object_log(workdir, fmt, args.lines)
        count_lines(olog)
        runs = []
        for i in range(1, args.repeat + 1):
            res = run_pullwarden(olog, workdir, asn_db, country_db, args.lines)
            say(f"run {i}/{args.repeat} pullwarden {fmt}: {res['seconds']:.2f} s wall, {res['cpu_seconds']:.2f} s CPU")
            runs.append(res)
            if res["lines"] != args.lines or res["events"] != args.lines or res["rejected"]:
                object_warnings.append(f"{fmt}: read {res['lines']:,} lines, stored {res['events']:,}, rejected "
                                       f"{res['rejected']:,} of {args.lines:,}")
        object_formats[fmt] = {**summarize(runs), "per_run": runs}

    import duckdb
    pw, ga = summarize(pw_runs), summarize(ga_runs)
    ratio = {"best": pw["lines_per_second_best"] / ga["lines_per_second_best"],
             "median": pw["lines_per_second_median"] / ga["lines_per_second_median"]}
    targets = [
        {"target": f"pullwarden >= {TARGET_LINES_PER_SECOND:,} lines/s (median, wall)",
         "measured": f"{pw['lines_per_second_median']:,.0f} lines/s", "value": pw["lines_per_second_median"],
         "threshold": TARGET_LINES_PER_SECOND, "pass": pw["lines_per_second_median"] >= TARGET_LINES_PER_SECOND},
        {"target": f"pullwarden >= {TARGET_RATIO:g}x GoAccess lines/s (median)",
         "measured": f"{ratio['median']:.2f}x", "value": ratio["median"],
         "threshold": TARGET_RATIO, "pass": ratio["median"] >= TARGET_RATIO},
        {"target": f"pullwarden peak RSS <= {TARGET_PEAK_BYTES // MB} MB (max of runs)",
         "measured": f"{pw['peak_rss_bytes_max'] / MB:,.0f} MB", "value": pw["peak_rss_bytes_max"],
         "threshold": TARGET_PEAK_BYTES, "pass": pw["peak_rss_bytes_max"] <= TARGET_PEAK_BYTES},
    ]
    warnings = []
    for r in pw_runs:
        if r["lines"] != args.lines or r["events"] != args.lines or r["rejected"]:
            warnings.append(f"pullwarden read {r['lines']:,} lines, stored {r['events']:,} events and rejected "
                            f"{r['rejected']:,} of {args.lines:,}: its figures are not comparable")
            break
    for r in ga_runs:
        if "valid_requests" not in r:
            warnings.append("could not read GoAccess's request totals from its HTML report")
            break
        if r["valid_requests"] != args.lines:
            warnings.append(f"GoAccess counted {r['valid_requests']:,} valid and {r['failed_requests']:,} failed "
                            f"requests of {args.lines:,} lines: its figures are not comparable")
            break
    noisy = [r for r in pw_runs + ga_runs if (r["other_cpu_seconds"] or 0) > 0.25 * r["seconds"]]
    if noisy:
        warnings.append(f"{len(noisy)} of {len(pw_runs) + len(ga_runs)} runs shared the CPUs with other work "
                        "(over a quarter of a core on average): run again on an idle machine, or use more --repeat")
    if not all(r["peak_rss_exact"] for r in pw_runs + ga_runs):
        warnings.append(f"{GNU_TIME} not found (apt-get install -y time): peak RSS figures are upper bounds "
                        "that may include this benchmark's own memory")
    warnings += object_warnings
    if object_formats:          # the last run was an object log's: ingest the proxy log again for the summary
        run_pullwarden(log, workdir, asn_db, country_db, args.lines)
    enrichment = enrichment_summary(workdir / "bench.duckdb")
    if not enrichment["ip_info_with_asn"]:
        warnings.append("no address got an ASN: enrichment did no real lookups")
    load_after = loadavg()
    result = {
        "context": {"lines": args.lines, "repeat": args.repeat, "log": str(log), "log_bytes": log.stat().st_size,
                    "workdir": str(workdir), "geo_networks": networks, "pullwarden_cmd": pullwarden_cmd(),
                    "pullwarden_revision": git_revision(), "duckdb": duckdb.__version__,
                    "goaccess": tool_version([goaccess, "--version"]), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after},
        "pullwarden": {**pw, "per_run": pw_runs},
        "goaccess": {**ga, "per_run": ga_runs},
        "ratio": ratio,
        "object_formats": object_formats,
        "enrichment": enrichment,
        "targets": targets,
        "warnings": warnings,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
