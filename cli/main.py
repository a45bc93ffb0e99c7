"""pullwarden: traffic analytics and abuse control for a public container-registry mirror.

The entry point only assembles: the group and its shared helpers are in cli/app.py, each
command module adds its commands to it when imported here."""
from __future__ import annotations

from cli import admin, backup, dashboard, demo, detect, export, logs, report, serve  # noqa: F401  (register commands)
from cli.app import cli, fail

__all__ = ["cli", "main"]


def main() -> None:
    import duckdb
    try:
        cli(prog_name="pullwarden")
    except duckdb.Error as e:
        # the file went bad under a command that had opened it (a damaged page read late: an
        # IOException, or a plain Error saying "Corrupt database file ... checksum"): one line,
        # not a traceback. Any other DuckDB error is a bug and keeps its traceback.
        text = str(e)
        if not (isinstance(e, duckdb.IOException) or "corrupt database" in text.lower() or "checksum" in text):
            raise
        fail(f"the database: {text.removeprefix('IO Error: ')} (restore it from a backup, or move it away)")


if __name__ == "__main__":
    main()
