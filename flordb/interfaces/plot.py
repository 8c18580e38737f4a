"""``flordb plot`` and the shell's ``.plot``: a metric's curves, one line per run, as a PNG.

The data comes through ``engine.execute`` like any query (so backfill applies);
the picture is drawn with matplotlib's Agg canvas, without pyplot, so nothing
global (backend, open figures) changes in the calling process.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import QueryError

if TYPE_CHECKING:
    import pandas as pd

SIZE = (8.0, 4.5)  # inches
DPI = 100  # 800 x 450 pixels
MAX_LEGEND = 12


def plot(
    y: str,
    x: str | None = None,
    by: str | None = "run_id",
    where: str | None = None,
    out: str | Path = "plot.png",
    project: str | None = None,
    backfill: bool = True,
) -> str:
    """Draw ``y`` against ``x`` with one line per value of ``by``; returns the PNG's path.

    ``x`` defaults to ``y``'s finest loop level; for a metric logged inside
    nested loops (``epoch/step``) it is a global step: the row's position within
    its run. Lines of ``run_id`` are labelled with the args that differ.

    >>> plot("loss", where="lr < 0.1", out="loss.png")  # doctest: +SKIP
    'loss.png'
    """
    from ..query import engine
    from ..query.sqltext import ident

    by = by or "run_id"
    with engine.connection() as con:
        projid = _project(engine, con, project)
        cat = engine.catalog(con, projid)
    kinds = dict(cat.columns())
    for role, name in (("metric", y), ("--x", x), ("--by", by)):
        if name is not None and name not in kinds:
            known = ", ".join(c for c, k in cat.columns() if k in ("log", "arg", "loop"))
            raise QueryError(f"{projid} has no column {name!r} (the {role}); known: {known}")
    levels = _levels(cat, y)
    if x is None and not levels:
        raise QueryError(
            f"{y!r} is logged once per run, so it has no loop to plot against; "
            f"pass --x, e.g. --x {next(iter(sorted(cat.args)), 'tstamp')}"
        )
    args = sorted(cat.args)
    wanted = ["run_id", "tstamp", *levels, *(c for c in (x, by) if c), y, *args]
    cols = list(dict.fromkeys(wanted))
    sql = f"SELECT {', '.join(ident(c) for c in cols)} FROM {ident(projid)}"
    if where:
        sql += f" WHERE {where}"
    sql += " ORDER BY " + ", ".join(ident(c) for c in ["tstamp", "run_id", *levels])
    frame = engine.execute(sql, backfill=backfill).frame
    return draw(frame, y, x=x, by=by, levels=levels, args=args, out=out,
                title=f"{y} · {projid}" + (f" · {where}" if where else ""))


def _project(engine: Any, con: Any, project: str | None) -> str:
    name = project or engine.current_project()
    projid = engine.resolve_project(con, name)
    if projid is None:
        known = ", ".join(engine.projects(con)) or "none yet"
        raise QueryError(f"no project {name!r} in the database (projects: {known}); "
                         "pass --project")
    return projid


def _levels(cat: Any, y: str) -> list[str]:
    """Loop levels of ``y``'s finest path (``['epoch', 'step']``); [] for run-level names."""
    paths = [p for p in cat.logs.get(y, {}) if p]
    if not paths:
        return []
    deepest = max(paths, key=lambda p: (p.count("/"), p))
    return deepest.split("/")


def draw(
    frame: pd.DataFrame, y: str, *, x: str | None, by: str, levels: list[str],
    args: list[str], out: str | Path, title: str = "",
) -> str:
    """Render curves of ``frame[y]`` to ``out`` (see ``plot``)."""
    import pandas as pd

    df = frame.copy()
    df[y] = pd.to_numeric(df[y], errors="coerce")
    df = df[df[y].notna()]
    if df.empty:
        raise QueryError(f"no numeric values of {y!r} to plot; check the name and --where")
    if x is None:
        if len(levels) == 1:
            df["_x"], xlabel = df[levels[0]], levels[0]
        else:  # nested loops: a global step, the row's order within its run
            df["_x"], xlabel = df.groupby("run_id", sort=False).cumcount(), "/".join(levels)
    else:
        df["_x"], xlabel = df[x], x
    df = df[df["_x"].notna()]
    groups = df.groupby([by, "_x"], sort=False, dropna=False)[y]
    averaged = bool((groups.size() > 1).any())
    curves = groups.mean().reset_index()
    labels = _labels(df, by, args)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    keys = list(dict.fromkeys(df[by].tolist()))
    for key in keys:
        line = curves[curves[by].isna()] if pd.isna(key) else curves[curves[by] == key]
        line = line.sort_values("_x")
        marker = "o" if len(line) <= 30 else None
        ax.plot(line["_x"], line[y], marker=marker, markersize=3, linewidth=1.5,
                label=labels.get(key, str(key)))
    if x is None or x in levels:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if x is None and len(levels) > 1:  # mark where the outer loop moves on
        first = df[df["run_id"] == df["run_id"].iloc[0]]
        starts = first["_x"][first[levels[0]].ne(first[levels[0]].shift())].tolist()[1:]
        for start in starts:
            ax.axvline(start - 0.5, color="0.5", linewidth=0.6, alpha=0.35, linestyle="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"mean {y}" if averaged else y)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    if 1 < len(keys) <= MAX_LEGEND:
        ax.legend(fontsize="small", frameon=False)
    elif len(keys) > MAX_LEGEND:
        ax.text(0.99, 0.98, f"{len(keys)} lines", transform=ax.transAxes, ha="right",
                va="top", fontsize="small")
    path = Path(out)
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as exc:
        raise QueryError(f"cannot write {path}: {exc.strerror}") from None
    return str(path)


def _labels(df: pd.DataFrame, by: str, args: list[str]) -> dict[Any, str]:
    """Legend text per line: the args that differ between runs, else the value of ``by``."""
    if by != "run_id":
        return {k: f"{by}={_fmt(k)}" for k in df[by].unique()}
    per_run = df.groupby("run_id", sort=False)[args].first() if args else None
    varying = [a for a in args if per_run is not None and per_run[a].nunique(dropna=False) > 1]
    out: dict[Any, str] = {}
    for run_id in df["run_id"].unique():
        if varying and per_run is not None:
            out[run_id] = ", ".join(f"{a}={_fmt(per_run.at[run_id, a])}" for a in varying)
        else:
            out[run_id] = str(run_id)
    texts = list(out.values())
    for run_id, text in out.items():
        if texts.count(text) > 1:
            out[run_id] = f"{text} ({str(run_id)[-8:]})"
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
