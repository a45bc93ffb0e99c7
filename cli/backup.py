"""`pullwarden backup DEST` and `pullwarden restore BACKUP`: the whole database as one DuckDB
file (core/backup.py), taken while serve runs (through its API) or from the file itself."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click

from cli.app import cli, fail, with_settings


def _say(done: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(done))
        return
    rows = ", ".join(f"{n:,} {t}" for t, n in done["rows"].items())
    click.echo(f"backup {done['path']}: {done['bytes'] / 2**20:.1f} MiB, schema version {done['schema_version']}, "
               f"{rows} ({done['seconds']:.1f} s), verified: every table read back whole")


@cli.command()
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (path, bytes, seconds, schema_version, rows).")
@with_settings
def backup(cfg, dest, as_json):
    """Copy the whole database into DEST, a new DuckDB file (never overwritten), as of one moment:
    events, roll-ups, decisions, keys, the audit log, frozen reports. While serve holds the file it
    keeps running and the server writes DEST (an admin key; DEST is a path on the server's machine);
    ingest and detection go on meanwhile and are simply not in the copy. Restore it with
    `pullwarden restore DEST`."""
    import duckdb

    from cli.remote import call, local_store
    from core.backup import BackupError, backup as copy_database
    target = Path(dest).absolute()
    store = local_store(cfg)
    if store is None:                   # serve holds the file: it writes the copy
        done = call(cfg, "POST", "/v1/admin/backup", {"dest": str(target)})
    else:
        try:
            done = copy_database(store, target)
        except (OSError, BackupError) as e:
            fail(str(e))
        except duckdb.Error as e:           # the database itself cannot be read whole
            fail(f"{cfg.db}: cannot be copied: {str(e).strip().splitlines()[0]}")
        finally:
            store.close()
    _say(done, as_json)


@cli.command()
@click.argument("backup_file", metavar="BACKUP", type=click.Path(exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing database (it is kept beside as <db>.before-restore).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_settings
def restore(cfg, backup_file, force, as_json):
    """Put BACKUP (made by `pullwarden backup`) where `db` points (--db), with serve stopped. The
    backup is checked first, before anything is replaced: every table is read whole (DuckDB
    checks each block's checksum) and its rows are compared with those written when it was made;
    it must be a pullwarden database, and one made by an older release is migrated. An existing
    database is replaced only with --force, and kept beside as <db>.before-restore."""
    from core.backup import BackupError, drop_manifest, verify
    from core.store import StoreBusy, StoreError, open_store
    db = Path(cfg.db).absolute()
    partial = db.with_name(db.name + ".restoring")
    for leftover in (partial, Path(f"{partial}.wal")):
        leftover.unlink(missing_ok=True)
    if db.exists():
        if not force:
            fail(f"{db} exists: give --force to replace it (it is kept as {db.name}.before-restore)")
        try:                            # held by serve, or by another command: stop it first
            open_store(str(db), read_only=True).close()
        except StoreBusy as e:
            fail(str(e))
        except StoreError:
            pass                        # a damaged database: what a restore is for
    try:
        verify(backup_file)
    except BackupError as e:
        fail(f"not restored, nothing was replaced: {e}")
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backup_file, partial)
    try:
        store = open_store(str(partial))            # a database of this schema, or migrated to it
    except (StoreBusy, StoreError, RuntimeError) as e:
        partial.unlink(missing_ok=True)
        fail(f"{backup_file}: not a usable backup: {e}")
    try:
        drop_manifest(store)
        version = store.value("select max(version) from schema_version")
        rows = {t: store.value(f"select count(*) from {t}") for t in ("events", "decisions", "facts_hourly", "audit")}
        store.execute("checkpoint")
    finally:
        store.close()
    if db.exists():
        kept = db.with_name(db.name + ".before-restore")
        os.replace(db, kept)
        if Path(f"{db}.wal").exists():          # the replaced database's own, kept with it
            os.replace(f"{db}.wal", f"{kept}.wal")
    os.replace(partial, db)
    done = {"path": str(db), "from": str(Path(backup_file).absolute()), "schema_version": version, "rows": rows}
    if as_json:
        click.echo(json.dumps(done))
    else:
        click.echo(f"restored {db} from {backup_file}: schema version {version}, "
                   + ", ".join(f"{n:,} {t}" for t, n in rows.items()))
