"""Applies the DDL in ``sql/`` (shipped inside the wheel as ``flordb/sql``)."""
from __future__ import annotations

from importlib import util
from pathlib import Path

SCHEMA_VERSION = 2
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
    if row is None or row[0] is None or row[0] < SCHEMA_VERSION:
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION])
