"""``flordb`` on the command line: each command is a few lines around the Python
function of the same name. Library errors become one line on stderr here.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from .. import settings
from ..errors import FlorError
from .format import FORMATS, render

_FORMAT_HELP = "output format (default: table)"


def _print_result(result, fmt: str) -> None:  # type: ignore[no-untyped-def]
    rows = result.rows
    if fmt == "table" and not result.columns:
        return
    sys.stdout.write(render(fmt, result.columns, rows) + "\n")
    if fmt == "table":
        n = len(rows)
        print(f"({n} row{'s' if n != 1 else ''})", file=sys.stderr)


def cmd_query(args: argparse.Namespace) -> int:
    from ..query.engine import execute

    result = execute(args.sql, backfill=not args.no_backfill, write=args.write)
    _print_result(result, args.format)
    return 0


def cmd_dataframe(args: argparse.Namespace) -> int:
    from ..query.engine import Result, dataframe

    frame = dataframe(*args.names)
    _print_result(Result(list(frame.columns), frame), args.format)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..query.engine import export

    rows = export(args.out, sql=args.query)
    print(f"wrote {rows} rows to {args.out}", file=sys.stderr)
    return 0


def _listing(kind: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from ..query.engine import listing

        _print_result(listing(kind, getattr(args, "run", None)), args.format)
        return 0

    return run


def cmd_propagate(args: argparse.Namespace) -> int:
    import difflib
    from pathlib import Path

    from ..hindsight.propagate import propagate_detailed

    new = _read(args.new)
    old = _read(args.old)
    result = propagate_detailed(new, old)
    for refusal in result.refused:
        print(
            f"flordb: warning: not propagated: {refusal.statement} ({refusal.reason})",
            file=sys.stderr,
        )
    diff = difflib.unified_diff(
        old.splitlines(keepends=True), result.source.splitlines(keepends=True),
        fromfile=args.old, tofile=args.out or args.old,
    )
    sys.stdout.writelines(diff)
    if args.out:
        Path(args.out).write_text(result.source)
    return 0


def _read(path: str) -> str:
    from pathlib import Path

    try:
        return Path(path).read_text()
    except OSError as exc:
        raise FlorError(f"cannot read {path}: {exc.strerror}") from None


def cmd_replay(args: argparse.Namespace) -> int:
    from ..hindsight.replay import replay

    replay(args.names, where=args.where, workers=args.workers, executor=args.executor,
           address=args.address)
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    from .shell.session import main as shell_main

    return shell_main(write=args.write)


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot

    path = plot(args.y, x=args.x, by=args.by, where=args.where, out=args.output,
                project=args.project)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..handsfree.runner import run_script

    script_args = list(args.args)
    explain = args.explain
    if script_args and script_args[-1] == "--explain":
        # `flordb run SCRIPT ARGS --explain`: the contract's form; the flag is ours
        script_args.pop()
        explain = True
    return run_script(args.script, script_args, explain=explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flordb",
        description="flordb: a SQL-queryable, multiversion log database for ML training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "record an unmodified script (hands-free mode)")
    p.add_argument("--explain", action="store_true", help="show the instrumented loops and exit")
    p.add_argument("script", help="the training script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")

    p = add("shell", cmd_shell, "interactive SQL shell over the database")
    p.add_argument("--write", action="store_true", help="allow statements that modify tables")

    p = add("query", cmd_query, "run one SQL statement and print the result")
    p.add_argument("sql", help='the statement, e.g. \'SELECT * FROM "my-project"\'')
    p.add_argument("--no-backfill", action="store_true", help="answer with what is stored")
    p.add_argument("--write", action="store_true", help="allow statements that modify tables")
    p.add_argument("--format", choices=FORMATS[:3], default="table", help=_FORMAT_HELP)

    p = add("dataframe", cmd_dataframe, "print the current project's pivoted view")
    p.add_argument("names", nargs="*", help="log/arg names to include (default: all)")
    p.add_argument("--format", choices=FORMATS[:3], default="table", help=_FORMAT_HELP)

    p = add("replay", cmd_replay, "hindsight-log NAMEs for past runs")
    p.add_argument("names", nargs="+", metavar="NAME", help="flor.log names of the current script")
    p.add_argument("--where", help='SQL predicate choosing runs/iterations, e.g. "epoch IN (2, 3)"')
    p.add_argument("--workers", type=int, help="parallel worker processes (default: cores)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where to run")
    p.add_argument("--address", help="Ray cluster address (with --executor ray)")

    p = add("propagate", cmd_propagate, "propagate flor.log statements from NEW.py into OLD.py")
    p.add_argument("--from", dest="new", required=True, metavar="NEW.py")
    p.add_argument("--to", dest="old", required=True, metavar="OLD.py")
    p.add_argument("--out", metavar="PATH", help="write the result here (default: print a diff)")

    p = add("export", cmd_export, "export a query result to Parquet")
    p.add_argument("out", metavar="OUT.parquet")
    p.add_argument("--query", help="SQL (default: the current project's whole view)")

    for kind, help in (("runs", "list runs"), ("versions", "list code versions")):
        p = add(kind, _listing(kind), help)
        p.add_argument("--format", choices=FORMATS[:3], default="table", help=_FORMAT_HELP)
    p = add("checkpoints", _listing("checkpoints"), "list checkpoints (of one run)")
    p.add_argument("run", nargs="?", help="a run_id")
    p.add_argument("--format", choices=FORMATS[:3], default="table", help=_FORMAT_HELP)

    p = add("plot", cmd_plot, "draw a metric's curves to a PNG")
    p.add_argument("y", help="the metric (a flor.log name)")
    p.add_argument("--x", help="x axis column (default: the finest loop level)")
    p.add_argument("--by", default="run_id", help="one line per value of this column")
    p.add_argument("--where", help="SQL predicate")
    p.add_argument("--project", help="project name (default: the current repository)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except FlorError as exc:
        if _debug():
            traceback.print_exc()
        print(f"flordb: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flordb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug or an unexpected failure: still one line
        if _debug():
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        print(
            f"flordb: error: {type(exc).__name__}: {first} (set FLORDB_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


def _debug() -> bool:
    try:
        return bool(settings.get("debug"))
    except FlorError:
        return False
