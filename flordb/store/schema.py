"""Applies the DDL in ``sql/`` (shipped inside the wheel as ``flordb/sql``)."""
from __future__ import annotations

from importlib import util
from pathlib import Path

SCHEMA_VERSION = 3
# The catalog of log names, rebuilt from `logs` (a full scan): run when a
# database older than version 3 is opened, and after statements run with --write.
REBUILD_LOG_NAMES = (
    "DELETE FROM log_names; "
    "INSERT OR IGNORE INTO log_names SELECT DISTINCT r.projid, l.name, l.path, l.vtype "
    "FROM logs l JOIN runs r USING (run_id)"
)
# version -> SQL that brings a database of an earlier version up to it
MIGRATIONS = {3: REBUILD_LOG_NAMES}
MAX_DEPTH = 6  # loop levels the logs table has columns for (i1..i6)


def sql_dir() -> Path:
    """The directory holding the .sql files, in a wheel or in a source checkout."""
    # flordb.sql has no __init__.py: it is a namespace package, whose
    # resources.files() is a MultiplexedPath, not a directory; ask its spec.
    try:
        spec = util.find_spec("flordb.sql")
    except ModuleNotFoundError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "schema.sql").exists():
            return Path(location)
    return Path(__file__).resolve().parents[2] / "sql"


def read_sql(name: str) -> str:
    return (sql_dir() / name).read_text()


def apply(con) -> None:
    """Create every table that is missing and record the schema version."""
    con.execute(read_sql("schema.sql"))
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] if row is not None and row[0] is not None else 0
    if current < SCHEMA_VERSION:
        for version, sql in sorted(MIGRATIONS.items()):
            if current < version:
                con.execute(sql)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION])
