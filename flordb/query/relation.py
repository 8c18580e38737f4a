"""The project relation: one row per run and loop context, a column per name.

``build(catalog, names)`` writes the SQL of the pivot that a query needs. It
pivots only the names the query references, at the granularity of the finest
loop level among them: a query over ``epoch`` and ``val_acc`` gets one row
per run and epoch; values logged at a coarser level (an epoch's ``val_acc``,
run-level values, args) repeat on every finer row below them.

Loop contexts are stored as ``path`` ('epoch/step') plus iteration columns
``i1..i6``. Rows at a path are the distinct contexts that logged something at
that path; when a query's names live on sibling paths ('epoch/step' and
'epoch/val_step'), the relation is the union of both, each row NULL in the
other's loop and log columns.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .sqltext import ident, literal

BUILTINS = ("projid", "run_id", "tstamp", "vid", "filename")


@dataclass(frozen=True)
class Catalog:
    """What a project holds: log names per loop path, args, their value types."""

    projid: str
    logs: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)  # name -> path -> vtypes
    args: dict[str, frozenset[str]] = field(default_factory=dict)  # name -> vtypes

    @property
    def paths(self) -> list[str]:
        found = {p for per_path in self.logs.values() for p in per_path}
        # every prefix of a path is a loop level too ('epoch' of 'epoch/step')
        for path in list(found):
            parts = path.split("/")
            for k in range(1, len(parts)):
                found.add("/".join(parts[:k]))
        found.discard("")
        return sorted(found, key=lambda p: (p.count("/"), p))

    @property
    def loops(self) -> dict[str, list[str]]:
        """Loop column name -> the paths that end in it."""
        out: dict[str, list[str]] = {}
        for path in self.paths:
            out.setdefault(path.rsplit("/", 1)[-1], []).append(path)
        return out

    def columns(self) -> list[tuple[str, str]]:
        """(column, kind) in relation order; kind is builtin|loop|arg|log."""
        cols = [(b, "builtin") for b in BUILTINS]
        seen = set(BUILTINS)
        for name in self.loops:
            if name not in seen:
                cols.append((name, "loop"))
                seen.add(name)
        for name in sorted(self.args):
            if name not in seen:
                cols.append((name, "arg"))
                seen.add(name)
        for name in sorted(self.logs):
            if name not in seen:
                cols.append((name, "log"))
                seen.add(name)
        return cols


def _value_expr(vtypes: frozenset[str], where: str) -> str:
    """The aggregate giving one value per context; the newest record wins."""
    if vtypes <= {"int"}:
        return f"CAST(arg_max(num, seq) FILTER (WHERE {where}) AS BIGINT)"
    if vtypes <= {"bool"}:
        return f"CAST(arg_max(num, seq) FILTER (WHERE {where}) AS BOOLEAN)"
    if vtypes <= {"int", "float", "bool"}:
        return f"arg_max(num, seq) FILTER (WHERE {where})"
    return (
        "arg_max(coalesce(txt, CAST(num AS VARCHAR)), seq) "
        f"FILTER (WHERE {where})"
    )


def _runs_of(projid: str) -> str:
    return f"(SELECT run_id FROM runs WHERE projid = {literal(projid)})"


def _level_pivot(catalog: Catalog, path: str, names: list[str], alias: str) -> str:
    """Values of ``names`` logged at exactly ``path``, one row per context there."""
    depth = 0 if path == "" else path.count("/") + 1
    keys = ["run_id"] + [f"i{k + 1}" for k in range(depth)]
    aggs = []
    for name in names:
        where = f"name = {literal(name)}"
        aggs.append(f"{_value_expr(catalog.logs[name][path], where)} AS {ident(name)}")
    select = ", ".join(keys + aggs)
    name_filter = ""
    if names and depth == 0:
        name_filter = " AND name IN (" + ", ".join(literal(n) for n in names) + ")"
    return (
        f"(SELECT {select} FROM logs WHERE path = {literal(path)}{name_filter} "
        f"AND run_id IN {_runs_of(catalog.projid)} GROUP BY {', '.join(keys)}) AS {alias}"
    )


def _args_pivot(catalog: Catalog, names: list[str]) -> str:
    aggs = []
    for name in names:
        where = f"name = {literal(name)}"
        vtypes = catalog.args[name]
        if vtypes <= {"int"}:
            expr = f"CAST(any_value(num) FILTER (WHERE {where}) AS BIGINT)"
        elif vtypes <= {"bool"}:
            expr = f"CAST(any_value(num) FILTER (WHERE {where}) AS BOOLEAN)"
        elif vtypes <= {"int", "float", "bool"}:
            expr = f"any_value(num) FILTER (WHERE {where})"
        else:
            expr = f"any_value(coalesce(txt, CAST(num AS VARCHAR))) FILTER (WHERE {where})"
        aggs.append(f"{expr} AS {ident(name)}")
    return (
        f"(SELECT run_id, {', '.join(aggs)} FROM args WHERE run_id IN "
        f"{_runs_of(catalog.projid)} GROUP BY run_id) AS a"
    )


def _prefixes(path: str) -> list[str]:
    """'' and every proper prefix of ``path``, outermost first."""
    parts = path.split("/") if path else []
    return [""] + ["/".join(parts[:k]) for k in range(1, len(parts))]


def build(catalog: Catalog, names: Iterable[str] | None = None, ordered: bool = True) -> str:
    """SQL for the project relation restricted to ``names`` (every column when None).

    ``ordered``: rows by run start, then loop indices. Sorting millions of rows
    costs as much as the pivot itself, so a query that aggregates, joins or
    orders on its own asks for the relation unordered.
    """
    cols = catalog.columns()
    kinds = dict(cols)
    wanted = [c for c, _ in cols] if names is None else [c for c, _ in cols if c in set(names)]
    loops = [c for c in wanted if kinds[c] == "loop"]
    args = [c for c in wanted if kinds[c] == "arg"]
    logs = [c for c in wanted if kinds[c] == "log"]
    # The paths the rows live at: the deepest paths among those referenced. A
    # name that already has values at (a prefix of) a loop level the query names
    # explicitly does not deepen the rows: `SELECT epoch, stdout` shows the
    # epoch-level lines even when step-level lines exist too.
    explicit: set[str] = set()
    for name in loops:
        explicit.update(catalog.loops[name])
    needed = set(explicit)
    for name in logs:
        paths = catalog.logs[name]
        covered = any(p == "" or e == p or e.startswith(p + "/") for p in paths for e in explicit)
        if not covered:
            needed.update(paths)
    maximal = sorted(
        p for p in needed
        if p and not any(q != p and q.startswith(p + "/") for q in needed)
    )
    loop_order = [c for c, k in cols if k == "loop"]
    if not maximal:
        return _build_at(catalog, "", loop_order, wanted, loops, args, logs, ordered)
    parts = [
        _build_at(catalog, p, loop_order, wanted, loops, args, logs, ordered) for p in maximal
    ]
    if len(parts) == 1:
        return parts[0]
    return " UNION ALL BY NAME ".join(f"({p})" for p in parts)


def _build_at(
    catalog: Catalog, path: str, loop_order: list[str], wanted: list[str],
    loops: list[str], args: list[str], logs: list[str], ordered: bool = True,
) -> str:
    levels = path.split("/") if path else []
    exprs: dict[str, str] = {}  # column -> its select expression, emitted in `wanted` order
    for col in wanted:
        if col in BUILTINS:
            exprs[col] = f"r.{ident(col)}"
        elif col in loops:
            if col in levels:
                exprs[col] = f"c.i{levels.index(col) + 1} AS {ident(col)}"
            else:
                exprs[col] = f"CAST(NULL AS INTEGER) AS {ident(col)}"
    for n in args:
        exprs[n] = f"a.{ident(n)}"
    joins: list[str] = []
    # Contexts at `path`, with the names logged exactly there.
    at_path = [n for n in logs if path in catalog.logs[n]]
    if path:
        joins.append(f"JOIN {_level_pivot(catalog, path, at_path, 'c')} ON c.run_id = r.run_id")
    elif at_path:
        joins.append(
            f"LEFT JOIN {_level_pivot(catalog, '', at_path, 'c')} ON c.run_id = r.run_id"
        )
    for n in at_path:
        exprs[n] = f"c.{ident(n)}"
    # Coarser levels broadcast down. A name logged at several of them takes, on
    # each row, the value of the finest level that has one.
    prefixes = _prefixes(path) if path else []
    sources: dict[str, list[str]] = {}  # name -> aliases, finest first
    for k, prefix in enumerate(prefixes):
        names_here = [n for n in logs if prefix in catalog.logs[n] and n not in at_path]
        if not names_here:
            continue
        alias = f"p{k}"
        depth = 0 if prefix == "" else prefix.count("/") + 1
        cond = " AND ".join(
            [f"{alias}.run_id = r.run_id"] + [f"{alias}.i{d + 1} = c.i{d + 1}" for d in range(depth)]
        )
        joins.append(f"LEFT JOIN {_level_pivot(catalog, prefix, names_here, alias)} ON {cond}")
        for n in names_here:
            sources.setdefault(n, []).insert(0, alias)
    for n, aliases in sources.items():
        if len(aliases) == 1:
            exprs[n] = f"{aliases[0]}.{ident(n)}"
            continue
        kinds = {t for pth in catalog.logs[n] for t in catalog.logs[n][pth]}
        cast = "" if kinds <= {"int", "float", "bool"} or len(kinds) == 1 else "::VARCHAR"
        parts = ", ".join(f"{a}.{ident(n)}{cast}" for a in aliases)
        exprs[n] = f"coalesce({parts}) AS {ident(n)}"
    # Names logged only on other branches are NULL on these rows.
    for n in logs:
        exprs.setdefault(n, f"NULL AS {ident(n)}")
    select = [exprs[c] for c in wanted if c in exprs]
    if args:
        joins.append(f"LEFT JOIN {_args_pivot(catalog, args)} ON a.run_id = r.run_id")
    if not select:
        select = ["r.run_id"]
    sql = (
        f"SELECT {', '.join(select)} FROM runs r {' '.join(joins)} "
        f"WHERE r.projid = {literal(catalog.projid)}"
    )
    if not ordered:
        return sql
    # Integer keys only (rowid breaks ties of equal start times): a VARCHAR
    # run_id in the sort key makes sorting millions of rows markedly slower.
    order = ["r.tstamp", "r.rowid"] + [f"c.i{d + 1}" for d in range(len(levels))]
    return f"{sql} ORDER BY {', '.join(order)}"
