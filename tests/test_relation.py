"""The project relation's granularity rules, on a real DuckDB file."""
from __future__ import annotations

import pytest

from flordb.query import engine, relation
from flordb.store.store import Store


@pytest.fixture
def con(tmp_path):
    store = Store(tmp_path)
    with store.connect(write=True) as c:
        c.execute("INSERT INTO projects VALUES ('p', NULL, now())")
        c.execute(
            "INSERT INTO runs (run_id, projid, tstamp, status) VALUES ('r1', 'p', now(), 'finished')"
        )
        rows = [("stdout", "epoch", 0, None, "epoch 0 done")]
        rows += [("stdout", "epoch/step", 0, s, f"step {s}") for s in range(3)]
        rows += [("loss", "epoch/step", 0, s, None) for s in range(3)]
        rows += [("acc", "epoch", 0, None, None)]
        for seq, (name, path, i1, i2, txt) in enumerate(rows):
            vtype = "str" if txt is not None else "float"
            num = None if txt is not None else 0.5
            c.execute(
                "INSERT INTO logs (run_id, seq, source, name, path, i1, i2, vtype, num, txt) "
                "VALUES ('r1', ?, 'record', ?, ?, ?, ?, ?, ?, ?)",
                [seq, name, path, i1, i2, vtype, num, txt],
            )
        yield c


def rows(con, names):
    return con.execute(relation.build(engine.catalog(con, "p"), names)).fetchall()


def test_named_coarse_loop_keeps_the_coarse_level(con):
    # stdout exists at epoch and at step level: naming only `epoch` shows the epoch line
    assert rows(con, ["epoch", "stdout"]) == [(0, "epoch 0 done")]


def test_a_name_only_logged_deeper_deepens_the_rows(con):
    assert rows(con, ["epoch", "loss"]) == [(0, 0.5)] * 3


def test_finest_level_when_no_loop_is_named(con):
    assert [r[0] for r in rows(con, ["stdout"])] == ["step 0", "step 1", "step 2"]


def test_coarse_values_broadcast_to_finer_rows(con):
    assert rows(con, ["epoch", "step", "acc"]) == [(0, s, 0.5) for s in range(3)]
