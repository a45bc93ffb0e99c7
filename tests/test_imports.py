"""The house's import rules, read from the source (every import statement, at the top of a module
or inside a function: a late import hides a cycle, it does not remove it).

- No module imports itself back through others, in any package: `cli/` had been one circle of
  ten files (the click group in cli/main.py, every command module importing it back), and
  enforcer/jobs.py and enforcer/service.py imported each other.
- Dependencies point one way along the pipeline: nothing imports cli, enforcer or dashboard
  from the stages before them, and core imports no stage.
- The enforcer's only door into ingest is serve's tail-ingest job (enforcer/jobs.py); what the
  enforcer and ingest both need (the MaxMind reader) is in core.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["cli", "core", "ingest", "rules", "reports", "enforcer", "dashboard"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The project's modules that ``path`` imports: ``from a.b import c`` is a.b, or a.b.c
    when c is a module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # a package's __init__ only marks the folder: importing cli.app runs cli/__init__.py, but an
    # edge to it would put every package in a circle with its own modules
    return {name: imported(path, known) - {name.rpartition(".")[0]} for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_circle():
    # the old cli: main defines the group and imports the commands, which import main back
    assert cycles({"cli.main": {"cli.admin"}, "cli.admin": {"cli.main", "cli.remote"},
                   "cli.remote": {"cli.main"}}) == [["cli.admin", "cli.main", "cli.remote"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_reads_late_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from enforcer.jobs import lower_priority\n")
    assert imported(f, {"enforcer.jobs", "enforcer.service"}) == {"enforcer.jobs"}


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_cli_main_only_assembles():
    g = graph()
    assert not [m for m, deps in g.items() if "cli.main" in deps], "a module imports cli.main back"
    commands = {m for m in g if m.startswith("cli.") and m not in ("cli.main", "cli.app", "cli.remote")}
    assert commands <= g["cli.main"], f"not registered in cli/main.py: {sorted(commands - g['cli.main'])}"


def test_dependencies_point_along_the_pipeline():
    later = {"cli": [], "dashboard": ["cli"], "enforcer": ["cli", "dashboard"],
             "reports": ["cli", "dashboard", "enforcer"], "rules": ["cli", "dashboard", "enforcer"],
             "ingest": ["cli", "dashboard", "enforcer", "rules", "reports"],
             "core": ["cli", "dashboard", "enforcer", "rules", "reports", "ingest"]}
    wrong = [(m, d) for m, deps in graph().items() for d in deps
             if d.split(".")[0] in later[m.split(".")[0]]]
    assert wrong == []


def test_the_enforcer_reaches_ingest_only_through_serves_ingest_job():
    wrong = [(m, d) for m, deps in graph().items() if m.startswith("enforcer.") for d in deps
             if d.startswith("ingest") and m != "enforcer.jobs"]
    assert wrong == []
