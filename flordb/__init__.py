"""flordb: a SQL-queryable, multiversion log database for ML training.

    import flordb as flor
    lr = flor.arg("lr", 1e-3)
    with flor.checkpointing(model=net, optimizer=opt):
        for epoch in flor.loop("epoch", range(5)):
            for x, y in flor.loop("step", loader):
                ...
                flor.log("loss", loss.item())

This module only re-exports the public contract; the work lives in
``record`` -> ``checkpoint`` -> ``store`` -> ``query`` -> ``hindsight`` -> ``interfaces``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Bind the subpackage ``flordb.query`` now: importing it later (the first
# flor.query call does) would overwrite the function ``query`` defined below.
from . import query as _query_package  # noqa: F401
from .errors import FlorError
from .record import kwargs as _kwargs
from .record.run import arg, checkpointing, commit, log, loop
from .settings import config

if TYPE_CHECKING:
    import pandas

__version__ = "0.1.0"
__all__ = [
    "FlorError",
    "arg",
    "checkpointing",
    "commit",
    "config",
    "dataframe",
    "export",
    "log",
    "loop",
    "propagate",
    "query",
    "replay",
]

# Take `--kwargs a=1 b=x` out of sys.argv before the script's own argparse runs.
_kwargs.strip_argv()


def query(sql: str, backfill: bool = True) -> pandas.DataFrame:
    """Run SQL over the database; project names are queryable relations.

    >>> flor.query('SELECT run_id, epoch, val_acc FROM "my-project" WHERE epoch = 4')
    """
    from .query.engine import query as _query

    return _query(sql, backfill=backfill)


def dataframe(*names: str) -> pandas.DataFrame:
    """The current project's pivoted view restricted to ``names`` (all when none)."""
    from .query.engine import dataframe as _dataframe

    return _dataframe(*names)


def replay(names: list[str] | str, where: str | None = None, workers: int | None = None) -> Any:
    """Hindsight-log ``names`` for past runs (all, or those matching ``where``)."""
    from .hindsight.replay import replay as _replay

    return _replay(names, where=where, workers=workers)


def propagate(new_source: str, old_source: str) -> str:
    """``old_source`` with every ``flor.log`` statement of ``new_source`` it lacks inserted."""
    from .hindsight.propagate import propagate as _propagate

    return _propagate(new_source, old_source)


def export(path: str, sql: str | None = None, format: str = "parquet") -> int:
    """Write a query result (default: the whole project view) to ``path``; returns rows."""
    from .query.engine import export as _export

    return _export(path, sql=sql, format=format)
