"""SELECT that backfills: before a query runs, compute the columns it names that
the current script logs but some runs lack.

Only what could appear in the answer is computed: the query's WHERE conjuncts
over run-level columns choose runs, those over loop columns choose outer
iterations (``analyze.pushdown``). Rows land with ``source = 'backfill'`` and
serve every later query, so a second identical query replays nothing.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import FlorError
from ..store.store import Store
from .replay import current_scripts
from .statements import shape


def logged_now(con: Any, projid: str) -> tuple[set[str], Path | None]:
    """Names the project's scripts log as they are now in the working tree."""
    row = con.execute(
        "SELECT p.repo_path FROM runs r JOIN projects p USING (projid) "
        "WHERE r.projid = ? ORDER BY r.tstamp DESC LIMIT 1",
        [projid],
    ).fetchone()
    if row is None or row[0] is None:
        return set(), None
    root = Path(row[0])
    filenames = {
        r[0] for r in con.execute(
            "SELECT DISTINCT filename FROM runs WHERE projid = ?", [projid]
        ).fetchall()
    }
    logged: set[str] = set()
    for text in current_scripts(root, filenames).values():
        logged.update(shape(text).sites)
    return logged, root


def missing_names(con: Any, projid: str, referenced: set[str]) -> tuple[list[str], Path | None]:
    """Names the query references that the current script logs and some runs lack."""
    logged, root = logged_now(con, projid)
    candidates = sorted(referenced & logged)
    if not candidates:
        return [], root
    n_runs = con.execute("SELECT count(*) FROM runs WHERE projid = ?", [projid]).fetchone()[0]
    have = dict(
        con.execute(
            "SELECT name, count(DISTINCT run_id) FROM logs WHERE name IN (SELECT unnest(?)) "
            "AND run_id IN (SELECT run_id FROM runs WHERE projid = ?) GROUP BY name",
            [candidates, projid],
        ).fetchall()
    )
    # A name every run has may still miss iterations (a narrower earlier backfill):
    # the replay planner checks per iteration, so pass those on too when the
    # query restricts nothing. Cheap common case first: a name no run lacks
    # and whose coverage matches the recorded iterations is complete.
    out = []
    for name in candidates:
        if have.get(name, 0) < n_runs or _has_gaps(con, projid, name):
            out.append(name)
    return out, root


def _has_gaps(con: Any, projid: str, name: str) -> bool:
    """Whether some run has this name at fewer outer iterations than it recorded."""
    row = con.execute(
        """
        WITH runs_p AS (SELECT run_id FROM runs WHERE projid = ?),
        have AS (SELECT run_id, count(DISTINCT i1) AS n FROM logs
                 WHERE name = ? AND path <> '' AND run_id IN (SELECT run_id FROM runs_p)
                 GROUP BY run_id),
        want AS (SELECT run_id, count(*) AS n FROM iterations
                 WHERE run_id IN (SELECT run_id FROM runs_p) GROUP BY run_id)
        SELECT count(*) FROM have JOIN want USING (run_id) WHERE have.n < want.n
        """,
        [projid, name],
    ).fetchone()
    return bool(row and row[0])


def backfill_for_query(
    sql: str,
    analysis: Any,
    *,
    store: Store | None = None,
    interactive: bool = False,
    confirm: Callable[[str], bool] | None = None,
) -> None:
    """Backfill what ``sql`` needs; warnings, never errors, for runs that cannot be."""
    from ..query import engine
    from .replay import hindsight

    if analysis.star and not analysis.columns:
        return  # SELECT * expands to what is stored and triggers no backfill
    store = store or Store()
    store.ingest_pending(timeout=5.0, quiet=False)
    work: list[tuple[str, str, list[str], Path | None]] = []
    with store.connect() as con:
        for table in analysis.tables:
            if table.lower() in engine.BASE_TABLES:
                continue
            projid = engine.resolve_project(con, table)
            if projid is None:
                continue
            names, root = missing_names(con, projid, set(analysis.columns))
            if names:
                work.append((table, projid, names, root))
    for table, projid, names, root in work:
        statement = next(
            (s for s in analysis.statements if table in {t.name for t in _tables(s)}),
            analysis.statements[-1],
        )
        try:
            hindsight(
                projid, names, where_statement=statement, relation=table, source="backfill",
                root=root, confirm=confirm if interactive else None, strict_names=False,
            )
        except FlorError as exc:
            print(f"flordb: warning: backfill of {', '.join(names)} skipped: {exc}",
                  file=sys.stderr)


def _tables(statement: Any) -> list[Any]:
    from sqlglot import exp

    return list(statement.find_all(exp.Table))
