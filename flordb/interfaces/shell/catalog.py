"""What the shell knows about the database: tables, project relations, columns, functions.

Loaded through a short read-only connection (the engine's catalog for each
project, DuckDB's own catalog for base tables and functions) and swapped in
whole, so the completer never sees a half-built picture.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Types of the project relation's columns, as relation.build casts them.
_BUILTIN_TYPES = {
    "projid": "VARCHAR", "run_id": "VARCHAR", "tstamp": "TIMESTAMP", "vid": "VARCHAR",
    "filename": "VARCHAR",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # builtin | loop | arg | log for projects; the SQL type's family for tables
    type: str


@dataclass(frozen=True)
class Metadata:
    """Tables (base tables and project relations) with their columns, and SQL functions."""

    tables: dict[str, list[Column]] = field(default_factory=dict)
    projects: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)

    @property
    def base_tables(self) -> list[str]:
        return [t for t in self.tables if t not in self.projects]

    def resolve(self, name: str) -> str | None:
        """The table a (possibly quoted, case-folded) name refers to."""
        name = name.strip('"')
        if name in self.tables:
            return name
        folded = [t for t in self.tables if t.lower() == name.lower()]
        return folded[0] if len(folded) == 1 else None


def value_type(vtypes: frozenset[str]) -> str:
    """The SQL type of a pivoted arg/log column (mirrors ``relation._value_expr``)."""
    if vtypes <= {"int"}:
        return "BIGINT"
    if vtypes <= {"bool"}:
        return "BOOLEAN"
    if vtypes <= {"int", "float", "bool"}:
        return "DOUBLE"
    return "VARCHAR"


def project_columns(cat: Any) -> list[Column]:
    """Columns of one project relation from the engine's ``relation.Catalog``."""
    out = []
    for name, kind in cat.columns():
        if kind == "builtin":
            typ = _BUILTIN_TYPES.get(name, "VARCHAR")
        elif kind == "loop":
            typ = "INTEGER"
        elif kind == "arg":
            typ = value_type(cat.args[name])
        else:
            typ = value_type(frozenset().union(*cat.logs[name].values()))
        out.append(Column(name, kind, typ))
    return out


def load(con: Any) -> Metadata:
    """Everything the completer and ``.schema`` need, from an open connection."""
    from ...query import engine

    tables: dict[str, list[Column]] = {}
    projects = [p for p in engine.projects(con) if p.lower() not in engine.BASE_TABLES]
    for projid in projects:  # a project named like a base table is shadowed by it in SQL
        tables[projid] = project_columns(engine.catalog(con, projid))
    for table, column, dtype in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE schema_name = 'main' AND NOT internal ORDER BY table_name, column_index"
    ).fetchall():
        tables.setdefault(table, []).append(Column(column, "column", dtype))
    functions = sorted(
        {
            r[0] for r in con.execute(
                "SELECT DISTINCT function_name FROM duckdb_functions() "
                "WHERE function_type IN ('scalar', 'aggregate', 'macro', 'table', 'table_macro')"
            ).fetchall()
            if r[0] and (r[0][0].isalpha()) and r[0].replace("_", "").isalnum()
        }
    )
    return Metadata(tables, projects, functions)
