"""Dot-commands: one registry that dispatches them, completes them and writes ``.help``.

A handler takes the shell and the text after the command's name and returns
what SQL returns (columns and rows, ``display.ResultLike``) or ``None`` after
saying something short with ``shell.echo``. Register one with ``@command``.
"""
from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import FlorError
from ..format import FORMATS
from .completer import Suggestion

if TYPE_CHECKING:
    from .display import ResultLike
    from .session import Shell

Handler = Callable[["Shell", str], "ResultLike | None"]


@dataclass
class Rows:
    """A dot-command's result: the same shape as ``engine.Result``."""

    columns: list[str]
    rows: list[tuple]
    seconds: float = 0.0


@dataclass(frozen=True)
class Command:
    name: str  # ".tables"
    usage: str  # "[NAME]"
    help: str
    handler: Handler
    complete: Suggestion | None = None  # what the argument is, for the completer
    aliases: tuple[str, ...] = ()
    details: Callable[[], list[tuple[str, str]]] | None = None  # extra rows of `.help NAME`


COMMANDS: dict[str, Command] = {}
_ALIASES: dict[str, str] = {}


def command(
    name: str, usage: str = "", complete: Suggestion | None = None,
    aliases: tuple[str, ...] = (), details: Callable[[], list[tuple[str, str]]] | None = None,
) -> Callable[[Handler], Handler]:
    """Register a dot-command; its docstring's first line is its help (keep it short:
    ``.help`` fits 80 columns)."""

    def register(handler: Handler) -> Handler:
        doc = (handler.__doc__ or "").strip().splitlines()
        COMMANDS[name] = Command(name, usage, doc[0] if doc else "", handler, complete, aliases,
                                 details)
        for alias in aliases:
            _ALIASES[alias] = name
        return handler

    return register


def lookup(name: str) -> Command:
    """The command called ``name`` (or an alias); a one-line error naming ``.help`` if none."""
    found = COMMANDS.get(_ALIASES.get(name, name))
    if found is None:
        raise FlorError(f"unknown command {name}; type .help for the list")
    return found


def dispatch(shell: Shell, line: str) -> ResultLike | None:
    """Run one dot-command line, e.g. ``.mode csv``."""
    name, _, arg = line.strip().rstrip(";").strip().partition(" ")
    return lookup(name.lower()).handler(shell, arg.strip())


def completions() -> dict[str, tuple[str, Suggestion | None]]:
    """name -> (help, argument suggestion), for ``completer.SQLCompleter``."""
    return {c.name: (c.help, c.complete) for c in COMMANDS.values()}


def reference() -> str:
    """The command list of docs/shell.md, generated from the registry."""
    lines = ["| command | what it does |", "|---|---|"]
    for c in COMMANDS.values():
        usage = f"{c.name} {c.usage}".strip().replace("|", "\\|")
        lines.append(f"| `{usage}` | {c.help} |")
    return "\n".join(lines)


def _on_off(shell: Shell, attr: str, arg: str, label: str) -> None:
    if arg:
        if arg.lower() not in ("on", "off"):
            raise FlorError(f"{label} takes on or off, received {arg!r}")
        setattr(shell, attr, arg.lower() == "on")
    shell.echo(f"{label}: {'on' if getattr(shell, attr) else 'off'}")


def _unquote(name: str) -> str:
    name = name.strip().rstrip(";").strip()
    if len(name) > 1 and name[0] == name[-1] and name[0] in "\"'":
        return name[1:-1]
    return name


# ------------------------------------------------------------------ the commands
_ON_OFF = Suggestion("choice", choices=("on", "off"))


@command(".help", "[COMMAND]", Suggestion("command"))
def help_(shell: Shell, arg: str) -> Rows:
    """List dot-commands (or describe one)."""
    if not arg:
        return Rows(["command", "description"],
                    [(f"{c.name} {c.usage}".strip(), c.help) for c in COMMANDS.values()])
    c = lookup(arg if arg.startswith(".") else "." + arg)
    rows = [(f"{c.name} {c.usage}".strip(), c.help)]
    rows += [(f"  {usage}", text) for usage, text in (c.details() if c.details else [])]
    rows += [(f"  alias {a}", "") for a in c.aliases]
    return Rows(["command", "description"], rows)


@command(".tables")
def tables(shell: Shell, arg: str) -> Rows:
    """List project relations and base tables."""
    md = shell.refresh()
    return Rows(["name", "kind", "columns"],
                [(t, "project" if t in md.projects else "table", len(md.tables[t]))
                 for t in md.projects + md.base_tables])


@command(".schema", "[NAME]", Suggestion("table"))
def schema(shell: Shell, arg: str) -> Rows:
    """Columns of a table or project, with types."""
    md = shell.refresh()
    if not arg:
        return Rows(["table", "column", "kind", "type"],
                    [(t, c.name, c.kind, c.type) for t in md.projects + md.base_tables
                     for c in md.tables[t]])
    name = md.resolve(_unquote(arg))
    if name is None:
        raise FlorError(f"no table or project {_unquote(arg)!r}; see .tables")
    return Rows(["column", "kind", "type"], [(c.name, c.kind, c.type) for c in md.tables[name]])


@command(".projects")
def projects(shell: Shell, arg: str) -> ResultLike:
    """List projects with run counts."""
    return shell.query(
        "SELECT p.projid, count(r.run_id) AS runs, max(r.tstamp) AS last_run, p.repo_path "
        "FROM projects p LEFT JOIN runs r ON r.projid = p.projid GROUP BY ALL ORDER BY p.projid",
        backfill=False,
    )


@command(".runs", "[PROJECT]", Suggestion("project"))
def runs(shell: Shell, arg: str) -> ResultLike:
    """List runs (of one project), oldest first."""
    from ...query.sqltext import literal

    # Narrow enough for 80 columns: run ids start with the time; SELECT * FROM runs has all.
    where = f"WHERE projid = {literal(_unquote(arg))} " if arg else ""
    project = "" if arg else "projid, "
    return shell.query(
        f"SELECT run_id, {project}status, left(vid, 10) AS vid, filename, mode "
        f"FROM runs {where}ORDER BY tstamp, run_id",
        backfill=False,
    )


@command(".versions")
def versions(shell: Shell, arg: str) -> ResultLike:
    """List code versions with run counts."""
    from ...query import engine

    with shell.database():
        return engine.listing("versions")


@command(".checkpoints", "[RUN]")
def checkpoints(shell: Shell, arg: str) -> ResultLike:
    """List checkpoints (of one run)."""
    from ...query import engine

    with shell.database():
        return engine.listing("checkpoints", _unquote(arg) or None)


@command(".export", "FILE.parquet [SQL]", details=lambda: [
    ("SQL", "default: SELECT * FROM the current project")])
def export(shell: Shell, arg: str) -> None:
    """Write a query's result to Parquet."""
    from ...query import engine

    path, _, sql = arg.partition(" ")
    if not path:
        raise FlorError("usage: .export FILE.parquet [SQL]")
    with shell.database():
        n = engine.export(_unquote(path), sql=sql.strip().rstrip(";") or None,
                          backfill=shell.backfill)
    shell.echo(f"wrote {n} rows to {_unquote(path)}")


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # not sys.exit: the shell goes on
        raise FlorError(f".plot: {message}; see .help plot")


PLOT_USAGE = "Y [OPTIONS]"
PLOT_OPTIONS = (
    ("Y", "the metric, a flor.log name"),
    ("--x COL", "x axis (default: Y's finest loop level)"),
    ("--by COL", "one line per value (default: run_id)"),
    ("--where PRED", "SQL predicate choosing the rows"),
    ("--project P", "default: the current git repository"),
    ("-o OUT.png", "default: Y.png"),
)


def plot_parser() -> argparse.ArgumentParser:
    """``.plot``'s options: those of ``flordb plot``, with ``-o`` defaulting to ``Y.png``."""
    p = _ArgParser(prog=".plot", add_help=False)
    p.add_argument("y")
    p.add_argument("--x")
    p.add_argument("--by", default="run_id")
    p.add_argument("--where")
    p.add_argument("--project")
    p.add_argument("-o", "--output")
    return p


@command(".plot", PLOT_USAGE, Suggestion("plot"), details=lambda: list(PLOT_OPTIONS))
def plot(shell: Shell, arg: str) -> None:
    """Draw a metric's curves to a PNG."""
    from .. import plot as _plot

    try:
        argv = shlex.split(arg)
    except ValueError as exc:
        raise FlorError(f".plot: {exc}") from None
    ns = plot_parser().parse_args(argv)
    with shell.database():
        path = _plot.plot(ns.y, x=ns.x, by=ns.by, where=ns.where, project=ns.project,
                          out=ns.output or f"{ns.y}.png", backfill=shell.backfill)
    shell.echo(f"wrote {path}")


@command(".mode", "[table|csv|json|markdown]", Suggestion("choice", choices=FORMATS))
def mode(shell: Shell, arg: str) -> None:
    """Output format of results."""
    if arg:
        if arg.lower() not in FORMATS:
            raise FlorError(f"unknown mode {arg!r}; use one of {', '.join(FORMATS)}")
        shell.mode = arg.lower()
    shell.echo(f"mode: {shell.mode}")


@command(".timer", "[on|off]", _ON_OFF)
def timer(shell: Shell, arg: str) -> None:
    """Show each statement's elapsed time."""
    _on_off(shell, "timer", arg, "timer")


@command(".backfill", "[on|off]", _ON_OFF)
def backfill(shell: Shell, arg: str) -> None:
    """Replay to fill missing log columns first."""
    _on_off(shell, "backfill", arg, "backfill")


@command(".write", "[on|off]", _ON_OFF)
def write(shell: Shell, arg: str) -> None:
    """Allow statements that modify tables."""
    _on_off(shell, "write", arg, "write")


@command(".quit", aliases=(".exit", ".q"))
def quit_(shell: Shell, arg: str) -> None:
    """Leave the shell (Ctrl-D too)."""
    shell.running = False

