"""Pure analysis of SQL text with sqlglot: SQL in, dataclasses out.

No database access here: ``analyze`` tells which tables and columns a query
references and whether it modifies data; ``pushdown`` turns a query's WHERE
conjuncts into the runs and loop iterations that could appear in its answer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import cast

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from ..errors import QueryError

_READ_ONLY = (
    exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Describe, exp.Show, exp.Pragma,
    exp.Subquery, exp.Values, exp.Summarize,
)


@dataclass(frozen=True)
class Analysis:
    statements: list[exp.Expression]
    tables: frozenset[str]  # unqualified table names referenced (CTE names excluded)
    columns: frozenset[str]  # column names referenced anywhere
    star: bool  # a `*` or `t.*` somewhere: every column of the relation
    modifies: bool


def parse(sql: str) -> list[exp.Expression]:
    """Parse one or more statements; a ParseError becomes a QueryError with line/column."""
    # sqlglot warns on stderr when it parses DuckDB syntax it does not model
    # (EXPLAIN, CALL) as an opaque command; that is expected here.
    log = logging.getLogger("sqlglot")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        statements = [cast(exp.Expression, s) for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        desc = str(first.get("description") or exc).splitlines()[0]
        raise QueryError(
            f"malformed SQL: {desc}", first.get("line"), first.get("col")
        ) from None
    except sqlglot.errors.TokenError as exc:
        raise QueryError(f"malformed SQL: {str(exc).splitlines()[0]}") from None
    finally:
        log.setLevel(level)
    if not statements:
        raise QueryError("empty query; write a SQL statement, e.g. SELECT * FROM runs")
    return statements


def analyze(sql: str) -> Analysis:
    """Tables, columns and write-ness of every statement in ``sql``."""
    statements = parse(sql)
    tables: set[str] = set()
    columns: set[str] = set()
    star = False
    modifies = False
    for stmt in statements:
        if not isinstance(stmt, _READ_ONLY) and not _is_read_only_command(stmt):
            modifies = True
        ctes = {cte.alias_or_name for cte in stmt.find_all(exp.CTE)}
        for table in stmt.find_all(exp.Table):
            if not table.args.get("db") and table.name and table.name not in ctes:
                tables.add(table.name)
        for col in stmt.find_all(exp.Column):
            if isinstance(col.this, exp.Star):
                star = True
            elif col.name:
                columns.add(col.name)
        for join in stmt.find_all(exp.Join):
            for ident in join.args.get("using") or []:
                columns.add(ident.name)
        if any(True for _ in stmt.find_all(exp.Star)):
            star = True
    return Analysis(statements, frozenset(tables), frozenset(columns), star, modifies)


def lists_rows_of(statement: exp.Expression, table: str) -> bool:
    """Whether ``statement`` lists the rows of ``table`` as they come: one SELECT
    straight from it, with no join, ORDER BY, GROUP BY, DISTINCT or aggregate.
    Only then does the relation's own row order reach the result.

    >>> lists_rows_of(parse("SELECT epoch, loss FROM p LIMIT 5")[0], "p")
    True
    >>> lists_rows_of(parse("SELECT avg(loss) FROM p")[0], "p")
    False
    """
    if not isinstance(statement, exp.Select):
        return False
    if any(statement.args.get(k) for k in ("order", "group", "distinct", "joins")):
        return False
    for expression in statement.expressions:
        for agg in expression.find_all(exp.AggFunc):
            # avg(loss) OVER (...) keeps the rows; an aggregate of a subquery is its own.
            if agg.find_ancestor(exp.Window) is None and agg.find_ancestor(exp.Select) is statement:
                return False
    from_ = statement.args.get("from_") or statement.args.get("from")
    source = from_.this if from_ is not None else None
    return isinstance(source, exp.Table) and source.name == table and not source.args.get("db")


def _is_read_only_command(stmt: exp.Expression) -> bool:
    if isinstance(stmt, exp.Command):
        return str(stmt.this).upper() in ("SHOW", "DESCRIBE", "SUMMARIZE", "EXPLAIN")
    return False


# ---------------------------------------------------------------- pushdown
@dataclass
class Selection:
    """What a query's WHERE clause lets through, as far as it can be pushed down.

    ``run_sql``: a SQL predicate over run-level columns (args, run_id, vid,
    tstamp, ...) that selects runs, or None for every run. ``loops``: loop
    column -> the iterations that may appear (a set of ints), absent when
    unrestricted. ``ranges`` holds (low, high) bounds, inclusive, for loop
    columns restricted by comparisons.
    """

    run_sql: str | None = None
    loops: dict[str, set[int]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allows(self, loop: str, i: int) -> bool:
        if loop in self.loops and i not in self.loops[loop]:
            return False
        if loop in self.ranges:
            lo, hi = self.ranges[loop]
            return lo <= i <= hi
        return True


def pushdown(
    statement: exp.Expression, relation: str, loop_cols: set[str], run_cols: set[str]
) -> Selection:
    """Conjuncts of the WHERE of the SELECT reading ``relation`` that can be pushed down.

    Only top-level AND-ed conjuncts that reference nothing but loop columns
    (and literals) or nothing but run-level columns are used; anything else
    (ORs across kinds, log columns, subqueries) is left for the query itself,
    and the selection stays wide: computing more never gives a wrong answer.
    """
    sel = Selection()
    select = _select_reading(statement, relation)
    if select is None:
        return sel
    where = select.args.get("where")
    if where is None:
        return sel
    run_parts: list[str] = []
    for conj in _conjuncts(where.this):
        cols = {c.name for c in conj.find_all(exp.Column)}
        if not cols or conj.find(exp.Subquery) or conj.find(exp.Select):
            continue
        if len(cols) == 1 and cols <= loop_cols:
            _loop_conjunct(conj, next(iter(cols)), sel)
        elif cols <= run_cols:
            stripped = conj.copy().transform(
                lambda n: exp.column(n.name, quoted=True) if isinstance(n, exp.Column) else n
            )
            run_parts.append(stripped.sql(dialect="duckdb"))
    if run_parts:
        sel.run_sql = " AND ".join(f"({p})" for p in run_parts)
    return sel


def _select_reading(statement: exp.Expression, relation: str) -> exp.Select | None:
    for select in statement.find_all(exp.Select):
        from_ = select.args.get("from_") or select.args.get("from")
        tables = [t.name for t in select.find_all(exp.Table)] if from_ else []
        if relation in tables and from_ is not None:
            direct = from_.find(exp.Table)
            if direct is not None and direct.name == relation:
                return select
    return None


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.And):
        return _conjuncts(cast(exp.Expression, node.left)) + _conjuncts(cast(exp.Expression, node.right))
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    return [node]


def _int(node: exp.Expression) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(float(node.this))
        except ValueError:
            return None
    if isinstance(node, exp.Neg):
        inner = _int(node.this)
        return None if inner is None else -inner
    return None


def _narrow(sel: Selection, col: str, lo: float, hi: float) -> None:
    old = sel.ranges.get(col, (float("-inf"), float("inf")))
    sel.ranges[col] = (max(old[0], lo), min(old[1], hi))


def _loop_conjunct(conj: exp.Expression, col: str, sel: Selection) -> None:
    """Apply `epoch = 3`, `epoch IN (..)`, BETWEEN and comparisons; ignore the rest."""
    if isinstance(conj, exp.In) and isinstance(conj.this, exp.Column) and not conj.args.get("query"):
        values = [_int(v) for v in conj.expressions]
        if values and all(v is not None for v in values):
            new = set(cast(list[int], values))  # None was ruled out just above
            sel.loops[col] = sel.loops[col] & new if col in sel.loops else new
        return
    if isinstance(conj, exp.Between) and isinstance(conj.this, exp.Column):
        lo, hi = _int(conj.args["low"]), _int(conj.args["high"])
        if lo is not None and hi is not None:
            _narrow(sel, col, lo, hi)
        return
    ops: dict[type[exp.Expression], str] = {exp.EQ: "=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
    op = ops.get(type(conj))
    if op is None:
        return
    left, right = conj.this, conj.expression
    if isinstance(right, exp.Column) and not isinstance(left, exp.Column):
        left, right = right, left
        op = {"=": "=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}[op]
    value = _int(right)
    if not isinstance(left, exp.Column) or value is None:
        return
    if op == "=":
        sel.loops[col] = sel.loops[col] & {value} if col in sel.loops else {value}
    elif op == ">":
        _narrow(sel, col, value + 1, float("inf"))
    elif op == ">=":
        _narrow(sel, col, value, float("inf"))
    elif op == "<":
        _narrow(sel, col, float("-inf"), value - 1)
    elif op == "<=":
        _narrow(sel, col, float("-inf"), value)
