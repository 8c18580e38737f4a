"""Runs SQL over the database: every project is a queryable relation.

Before a statement runs, each project it names gets a temporary view (on this
connection only) holding the pivot of exactly the columns the statement
references, at their finest loop level (``relation.build``). The user's SQL then
runs verbatim in DuckDB. With backfill on, names that the current script logs
but some runs lack are computed first by hindsight replay.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FlorError, QueryError
from ..store.store import Store
from . import analyze as _analyze
from . import relation
from .sqltext import ident, literal

if TYPE_CHECKING:
    import pandas as pd

BASE_TABLES = frozenset(
    {"projects", "versions", "runs", "args", "logs", "segments", "iterations", "checkpoints",
     "schema_version", "log_names"}
)


@dataclass
class Result:
    """Column names and rows of the last statement, plus how long it took."""

    columns: list[str]
    frame: pd.DataFrame
    seconds: float = 0.0

    @property
    def rows(self) -> list[tuple]:
        return list(self.frame.itertuples(index=False, name=None))


# ------------------------------------------------------------------ catalog
def projects(con: Any) -> list[str]:
    return [r[0] for r in con.execute("SELECT projid FROM projects ORDER BY projid").fetchall()]


def catalog(con: Any, projid: str) -> relation.Catalog:
    """Log names per path with their value types, and args, of one project."""
    runs = f"(SELECT run_id FROM runs WHERE projid = {literal(projid)})"
    logs: dict[str, dict[str, frozenset[str]]] = {}
    found = []
    if con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'log_names'"
    ).fetchone()[0]:
        # Kept at ingest: no scan of `logs`, whose size every query would pay for.
        found = con.execute(
            "SELECT name, path, list(DISTINCT vtype) FROM log_names "
            f"WHERE projid = {literal(projid)} GROUP BY name, path"
        ).fetchall()
    if not found:  # not migrated yet (opened read-only), or rows written around ingest
        found = con.execute(
            f"SELECT name, path, list(DISTINCT vtype) FROM logs WHERE run_id IN {runs} "
            "GROUP BY name, path"
        ).fetchall()
    for name, path, vtypes in found:
        logs.setdefault(name, {})[path] = frozenset(vtypes)
    args = {
        name: frozenset(vtypes)
        for name, vtypes in con.execute(
            f"SELECT name, list(DISTINCT vtype) FROM args WHERE run_id IN {runs} GROUP BY name"
        ).fetchall()
    }
    return relation.Catalog(projid, logs, args)


def resolve_project(con: Any, name: str) -> str | None:
    """The projid a table name refers to (exact, else case-insensitive and unique)."""
    names = projects(con)
    if name in names:
        return name
    folded = [p for p in names if p.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def register_views(con: Any, analysis: _analyze.Analysis | None) -> dict[str, str]:
    """Create a temp view per project the statements read; returns table name -> projid."""
    mapping: dict[str, str] = {}
    tables = analysis.tables if analysis is not None else frozenset(projects(con))
    for table in tables:
        if table.lower() in BASE_TABLES:
            continue
        projid = resolve_project(con, table)
        if projid is None:
            continue
        cat = catalog(con, projid)
        names = None if analysis is None or analysis.star else analysis.columns
        ordered = analysis is None or _analyze.lists_rows_of(analysis.statements[-1], table)
        sql = relation.build(cat, names, ordered=ordered)
        pending = _logged_but_unstored(con, projid, cat, names)
        if pending:
            # Logged by today's script, stored for no run yet (backfill off, or it
            # failed): the column exists, NULL, so the query still answers.
            nulls = ", ".join(f"CAST(NULL AS DOUBLE) AS {ident(n)}" for n in pending)
            sql = f"SELECT *, {nulls} FROM ({sql})"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(table)} AS {sql}")
        mapping[table] = projid
    return mapping


def _logged_but_unstored(
    con: Any, projid: str, cat: relation.Catalog, names: Iterable[str] | None
) -> list[str]:
    if not names:
        return []
    unknown = set(names) - {c for c, _ in cat.columns()}
    if not unknown:
        return []
    from ..hindsight.backfill import logged_now

    logged, _ = logged_now(con, projid)
    return sorted(unknown & logged)


# ------------------------------------------------------------------ queries
@contextlib.contextmanager
def connection(write: bool = False, store: Store | None = None) -> Iterator[Any]:
    """A connection after ingesting runs that finished while the database was busy."""
    store = store or Store()
    store.ingest_pending(timeout=5.0, quiet=False)
    with store.connect(write=write) as con:
        yield con


def execute(
    sql: str,
    *,
    backfill: bool = True,
    write: bool = False,
    store: Store | None = None,
    con: Any = None,
    interactive: bool = False,
    confirm: Any = None,
) -> Result:
    """Run ``sql`` (one or more statements); the last statement's result.

    ``confirm(message) -> bool`` is asked before a backfill estimated over 30 s
    when ``interactive``.
    """
    import time

    try:
        analysis: _analyze.Analysis | None = _analyze.analyze(sql)
        parse_error: QueryError | None = None
    except QueryError as exc:
        analysis, parse_error = None, exc  # DuckDB may still know this syntax
    if analysis is not None and analysis.modifies and not write:
        raise QueryError(
            "this statement modifies data and queries are read-only; pass --write "
            "(or .write on in the shell) to allow it"
        )
    if backfill and analysis is not None:
        from ..hindsight.backfill import backfill_for_query

        backfill_for_query(sql, analysis, store=store, interactive=interactive, confirm=confirm)
    own = con is None
    ctx = connection(write=write, store=store) if own else contextlib.nullcontext(con)
    with ctx as c:
        register_views(c, analysis)
        start = time.perf_counter()
        try:
            cursor = c.execute(sql)
            frame = cursor.df() if cursor.description else _empty()
            if write and (analysis is None or analysis.modifies):
                # A statement may have changed `logs` or `runs`: rebuild their catalog.
                from ..store.schema import REBUILD_LOG_NAMES

                # e.g. the statement dropped `logs` itself: nothing left to catalog
                with contextlib.suppress(Exception):
                    c.execute(REBUILD_LOG_NAMES)
        except FlorError:
            raise
        except Exception as exc:  # DuckDB's errors: one line, keep its own words
            message = _one_line(exc)
            if parse_error is not None:
                # DuckDB's own parser error reads better than sqlglot's, when it has one.
                if message.startswith("Parser Error") and "(line " in message:
                    raise QueryError(f"malformed SQL: {message}") from None
                raise parse_error from None
            raise QueryError(message) from None
        seconds = time.perf_counter() - start
    return Result(list(frame.columns), frame, seconds)


def _empty() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame()


def _one_line(exc: Exception) -> str:
    """DuckDB's message on one line; its ``LINE n:`` excerpt and caret become
    ``(line n, column c)``."""
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    msg = lines[0] if lines else type(exc).__name__
    for k, ln in enumerate(lines[1:], start=1):
        if ln.startswith("LINE "):
            label, _, _ = ln.partition(":")
            where = label.lower()
            caret = lines[k + 1] if k + 1 < len(lines) else ""
            if "^" in caret:
                where += f", column {caret.index('^') - len(label) - 1}"
            msg += f" ({where})"
            break
    return msg


def query(sql: str, backfill: bool = True) -> pd.DataFrame:
    """``flor.query``: run SQL, return a DataFrame."""
    return execute(sql, backfill=backfill).frame


def current_project() -> str:
    """The project of the git repository around the working directory."""
    from ..record.versions import projid_of, repo_root

    return projid_of(repo_root(Path.cwd()))


def dataframe(*names: str, projid: str | None = None) -> pd.DataFrame:
    """The project's pivoted view restricted to ``names`` (all names when none)."""
    projid = projid or current_project()
    with connection() as con:
        if projid not in projects(con):
            raise QueryError(
                f"project {projid!r} has no runs yet; record one with `python train.py`"
            )
        cat = catalog(con, projid)
        known = {c for c, _ in cat.columns()}
        missing = [n for n in names if n not in known]
        if missing:
            raise QueryError(
                f"{projid} has no column {missing[0]!r}; known: {', '.join(sorted(known))}"
            )
        wanted = None
        if names:
            wanted = set(names) | set(relation.BUILTINS) | loops_for(cat, names)
        return con.execute(relation.build(cat, wanted)).df()


def loops_for(cat: relation.Catalog, names: Iterable[str]) -> set[str]:
    """Loop columns of the paths where ``names`` live."""
    out: set[str] = set()
    for name in names:
        for path in cat.logs.get(name, {}):
            out.update(p for p in path.split("/") if p)
        if name in cat.loops:
            for path in cat.loops[name]:
                out.update(path.split("/"))
    return out


def export(
    path: str, sql: str | None = None, format: str = "parquet", backfill: bool = True
) -> int:
    """Write a query result (default: the current project's view) to ``path``."""
    if format != "parquet":
        raise QueryError(f"unsupported export format {format!r}; use parquet")
    import pyarrow.parquet as pq

    if sql is None:
        sql = f"SELECT * FROM {ident(current_project())}"
    result = execute(sql, backfill=backfill)
    import pyarrow as pa

    table = pa.Table.from_pandas(result.frame, preserve_index=False)
    out = Path(path)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise QueryError(f"cannot write {out}: {exc.strerror}") from None
    return table.num_rows


def listing(kind: str, run_id: str | None = None) -> Result:
    """``flordb runs``, ``versions`` and ``checkpoints``: base-table listings."""
    sql = {
        "runs": "SELECT run_id, projid, tstamp, status, vid, filename, mode, ckpt_overhead "
        "FROM runs ORDER BY tstamp",
        "versions": "SELECT v.projid, v.vid, v.tstamp, v.branch, count(r.run_id) AS runs "
        "FROM versions v LEFT JOIN runs r ON r.vid = v.vid AND r.projid = v.projid "
        "GROUP BY ALL ORDER BY v.tstamp",
        "checkpoints": "SELECT run_id, iteration, object, codec, kind, raw_bytes, stored_bytes, "
        "status FROM checkpoints {where} ORDER BY run_id, iteration, object",
    }[kind]
    if kind == "checkpoints":
        sql = sql.format(where=f"WHERE run_id = {literal(run_id)}" if run_id else "")
    return execute(sql, backfill=False)


def warn(message: str) -> None:
    print(f"flordb: warning: {message}", file=sys.stderr)
