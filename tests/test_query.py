"""Queries: SQL analysis (pure), the project relation's semantics, read-only
execution, errors, export and flor.dataframe.

Most data here is written as segments laid out exactly like a real run's and
ingested through the store (``conftest.fake_run``); a few tests record real runs.
"""
from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest
from conftest import epoch_step_logs, fake_run, make_repo, rows, run_sql

import flordb as flor
from flordb.errors import QueryError
from flordb.query import analyze as an
from flordb.query.engine import execute
from flordb.query.relation import Catalog, build
from flordb.query.sqltext import ident, literal

# ------------------------------------------------------------- pure analysis

ANALYZE_CASES = [
    # sql, tables, columns, star, modifies
    ("SELECT * FROM runs", {"runs"}, set(), True, False),
    ("SELECT run_id, loss FROM proj WHERE epoch > 2", {"proj"}, {"run_id", "loss", "epoch"},
     False, False),
    ('SELECT "val acc" FROM "my-proj"', {"my-proj"}, {"val acc"}, False, False),
    ("WITH t AS (SELECT loss FROM proj) SELECT * FROM t", {"proj"}, {"loss"}, True, False),
    ("SELECT a FROM p1 JOIN p2 USING (run_id)", {"p1", "p2"}, {"a", "run_id"}, False, False),
    ("SELECT 1 UNION SELECT 2", set(), set(), False, False),
    ("DESCRIBE runs", {"runs"}, set(), False, False),
    ("SUMMARIZE runs", {"runs"}, set(), False, False),
    ("SHOW TABLES", set(), set(), False, False),
    ("DELETE FROM runs", {"runs"}, set(), False, True),
    ("DROP TABLE runs", {"runs"}, set(), False, True),
    ("INSERT INTO runs VALUES (1)", {"runs"}, set(), False, True),
    ("UPDATE runs SET status = 'x'", {"runs"}, {"status"}, False, True),
    ("CREATE TABLE x AS SELECT 1", {"x"}, set(), False, True),
    ("SELECT 1; DELETE FROM runs", {"runs"}, set(), False, True),
    ("ATTACH 'other.db' AS o", set(), set(), False, True),
]


@pytest.mark.parametrize("sql, tables, columns, star, modifies", ANALYZE_CASES)
def test_analyze(sql, tables, columns, star, modifies):
    a = an.analyze(sql)
    assert (set(a.tables), set(a.columns), a.star, a.modifies) == (tables, columns, star, modifies)


PUSHDOWN_CASES = [
    # where, loops, ranges, run_sql
    ("epoch = 3", {"epoch": {3}}, {}, None),
    ("epoch IN (1, 2) AND epoch = 2", {"epoch": {2}}, {}, None),
    ("epoch BETWEEN 2 AND 4", {}, {"epoch": (2, 4)}, None),
    ("epoch > 2 AND epoch <= 5", {}, {"epoch": (3, 5)}, None),
    ("3 < epoch", {}, {"epoch": (4, float("inf"))}, None),
    ("lr = 0.1 AND epoch = 1", {"epoch": {1}}, {}, '("lr" = 0.1)'),
    ("lr = 0.1 OR epoch = 1", {}, {}, None),  # mixes kinds: not pushed
    ("loss < 0.5", {}, {}, None),  # a log column: never pushed
]


@pytest.mark.parametrize("where, loops, ranges, run_sql_", PUSHDOWN_CASES)
def test_pushdown(where, loops, ranges, run_sql_):
    stmt = an.parse(f"SELECT loss FROM proj WHERE {where}")[0]
    sel = an.pushdown(stmt, "proj", {"epoch", "step"}, {"lr", "run_id"})
    assert (sel.loops, sel.ranges, sel.run_sql) == (loops, ranges, run_sql_)


def test_parse_error_keeps_line_and_column():
    with pytest.raises(QueryError) as info:
        an.parse("SELECT (1,\n  2")
    assert info.value.line == 2 and info.value.col is not None
    assert "line 2" in str(info.value)


def test_sqltext_quoting():
    assert ident('a"b') == '"a""b"'
    assert literal("it's") == "'it''s'"
    with pytest.raises(ValueError):
        ident("a\x00b")


def test_relation_sql_quotes_every_user_name():
    evil = "x'); DROP TABLE runs; --"
    cat = Catalog(
        "p'roj", logs={evil: {"epoch": frozenset({"int"})}, 'a"b': {"": frozenset({"str"})}},
        args={"lr": frozenset({"float"})},
    )
    sql = build(cat)
    con = duckdb.connect()
    for stmt in (("CREATE TABLE runs (run_id VARCHAR, projid VARCHAR, tstamp TIMESTAMP, "
                  "vid VARCHAR, filename VARCHAR)"),
                 ("CREATE TABLE logs (run_id VARCHAR, seq BIGINT, name VARCHAR, path VARCHAR, "
                  "i1 INT, i2 INT, i3 INT, i4 INT, i5 INT, i6 INT, num DOUBLE, txt VARCHAR)"),
                 "CREATE TABLE args (run_id VARCHAR, name VARCHAR, num DOUBLE, txt VARCHAR)"):
        con.execute(stmt)
    cols = [d[0] for d in con.execute(sql).description]
    assert evil in cols and 'a"b' in cols
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)


# ------------------------------------------------------- relation semantics

@pytest.fixture
def two_runs(flordb_home):
    fake_run(flordb_home, run_id="r1", args={"lr": 0.1, "opt": "sgd", "epochs": 3},
             logs=epoch_step_logs(3, 4) + [("note", "first", "", ())])
    fake_run(flordb_home, run_id="r2", args={"lr": 0.01, "opt": "adam", "epochs": 2},
             logs=epoch_step_logs(2, 4, scale=2.0))
    return flordb_home


def test_epoch_level_names_give_one_row_per_run_and_epoch(two_runs):
    frame = run_sql("SELECT run_id, epoch, acc, lr, opt FROM proj ORDER BY run_id, epoch")
    assert frame.values.tolist() == [
        ["r1", 0, 0.0, 0.1, "sgd"], ["r1", 1, 0.1, 0.1, "sgd"], ["r1", 2, 0.2, 0.1, "sgd"],
        ["r2", 0, 0.0, 0.01, "adam"], ["r2", 1, 0.2, 0.01, "adam"],
    ]


def test_run_level_names_give_one_row_per_run(two_runs):
    assert rows("SELECT run_id, lr, epochs, note FROM proj ORDER BY run_id") == [
        ("r1", 0.1, 3, "first"), ("r2", 0.01, 2, None),
    ]


def test_coarser_values_repeat_on_finer_rows(two_runs):
    frame = run_sql("SELECT run_id, epoch, step, loss, acc, lr FROM proj")
    assert len(frame) == 3 * 4 + 2 * 4
    r1 = frame[frame.run_id == "r1"]
    assert (r1.acc == r1.epoch / 10).all() and set(r1.lr) == {0.1}
    assert list(r1.step) == [0, 1, 2, 3] * 3
    # Each (run, epoch, step) appears exactly once.
    assert not frame.duplicated(["run_id", "epoch", "step"]).any()


def test_builtin_columns_and_types(two_runs):
    frame = run_sql("SELECT projid, run_id, tstamp, vid, filename, epoch, step, loss, acc, "
                    "lr, epochs, opt FROM proj LIMIT 1")
    assert frame.iloc[0][["projid", "vid", "filename"]].tolist() == ["proj", "0" * 40, "train.py"]
    types = dict(run_sql("DESCRIBE SELECT * FROM proj")[["column_name", "column_type"]]
                 .itertuples(index=False))
    assert types == {
        "projid": "VARCHAR", "run_id": "VARCHAR", "tstamp": "TIMESTAMP", "vid": "VARCHAR",
        "filename": "VARCHAR", "epoch": "INTEGER", "step": "INTEGER", "epochs": "BIGINT",
        "lr": "DOUBLE", "opt": "VARCHAR", "acc": "DOUBLE", "loss": "DOUBLE", "note": "VARCHAR",
    }


def test_numbers_are_numeric_in_sql(two_runs):
    assert rows("SELECT run_id, max(loss) - min(loss) AS spread, avg(acc) FROM proj "
                "GROUP BY run_id ORDER BY run_id") == [("r1", 203.0, pytest.approx(0.1)),
                                                         ("r2", 206.0, pytest.approx(0.1))]


def test_where_on_args_and_loops(two_runs):
    assert rows("SELECT run_id, step, loss FROM proj WHERE lr < 0.05 AND epoch = 1 "
                "AND step >= 2 ORDER BY step") == [("r2", 2, 204.0), ("r2", 3, 206.0)]


def test_select_star_expands_to_every_stored_column(two_runs):
    frame = run_sql("SELECT * FROM proj")
    assert list(frame.columns) == [
        "projid", "run_id", "tstamp", "vid", "filename", "epoch", "step", "epochs", "lr", "opt",
        "acc", "loss", "note",
    ]
    assert len(frame) == 20


def test_sibling_loops_are_a_union(flordb_home):
    logs = []
    for e in range(2):
        logs += [("loss", float(s), "epoch/step", (e, s)) for s in range(3)]
        logs += [("vloss", float(v), "epoch/vstep", (e, v)) for v in range(2)]
        logs.append(("acc", e / 2, "epoch", (e,)))
    fake_run(flordb_home, run_id="r", logs=logs)
    frame = run_sql("SELECT epoch, step, vstep, loss, vloss, acc FROM proj")
    frame = frame.astype(object).where(frame.notna(), None)
    assert len(frame) == 2 * 3 + 2 * 2
    train = frame[frame.step.notna()]
    val = frame[frame.vstep.notna()]
    assert train.vloss.isna().all() and val.loss.isna().all()
    assert sorted(val.acc) == [0.0, 0.0, 0.5, 0.5]  # epoch-level values broadcast to both


def test_the_newest_record_of_a_context_wins(flordb_home):
    fake_run(flordb_home, run_id="r", logs=[
        ("loss", 1.0, "epoch", (0,)), ("loss", 2.0, "epoch", (0,)), ("loss", 3.0, "epoch", (1,)),
    ])
    assert rows("SELECT epoch, loss FROM proj ORDER BY epoch") == [(0, 2.0), (1, 3.0)]


def test_mixed_value_types_fall_back_to_text(flordb_home):
    fake_run(flordb_home, run_id="r", logs=[("m", 1, "epoch", (0,)), ("m", "n/a", "epoch", (1,)),
                                            ("f", 1, "epoch", (0,)), ("f", 0.5, "epoch", (1,))])
    assert rows("SELECT epoch, m, f FROM proj ORDER BY epoch") == [(0, "1.0", 1.0),
                                                                  (1, "n/a", 0.5)]


def test_projects_are_separate_relations_and_case_insensitive(flordb_home):
    fake_run(flordb_home, "alpha", run_id="a1", logs=[("x", 1, "", ())])
    fake_run(flordb_home, "Beta-2", run_id="b1", logs=[("y", 2, "", ())])
    assert rows("SELECT run_id, x FROM alpha") == [("a1", 1)]
    assert rows('SELECT run_id, y FROM "beta-2"') == [("b1", 2)]
    assert rows('SELECT a.x + b.y FROM alpha a, "Beta-2" b') == [(3,)]
    with pytest.raises(QueryError, match="y"):
        run_sql("SELECT y FROM alpha")


def test_base_tables_are_queryable(two_runs):
    assert rows("SELECT count(*) FROM logs") == [(12 + 3 + 8 + 2 + 1,)]
    assert rows("SELECT run_id, status FROM runs ORDER BY run_id") == [
        ("r1", "finished"), ("r2", "finished")]
    assert rows("SELECT name FROM args WHERE run_id = 'r1' ORDER BY name") == [
        ("epochs",), ("lr",), ("opt",)]


def test_multiple_statements_return_the_last(two_runs):
    assert rows("SELECT 1; SELECT count(*) FROM runs") == [(2,)]


# ----------------------------------------------------------- read-only

@pytest.mark.parametrize("sql", [
    "DELETE FROM runs", "DROP TABLE logs", "UPDATE runs SET status = 'x'",
    "INSERT INTO args VALUES ('r', 'n', 'int', 1, NULL)", "CREATE TABLE t AS SELECT 1",
])
def test_queries_are_read_only_unless_write(two_runs, sql):
    with pytest.raises(QueryError, match="--write"):
        execute(sql, backfill=False)
    assert rows("SELECT count(*) FROM runs") == [(2,)]


def test_write_allows_modification(two_runs):
    execute("DELETE FROM runs WHERE run_id = 'r2'", backfill=False, write=True)
    assert rows("SELECT run_id FROM runs") == [("r1",)]


def test_read_only_holds_even_when_sqlglot_cannot_parse(two_runs):
    # Statements sqlglot cannot analyse still run on a read-only connection.
    with pytest.raises(QueryError):
        execute("DELETE FROM runs WHERE run_id IN (SELEC 1)", backfill=False)
    assert rows("SELECT count(*) FROM runs") == [(2,)]


@pytest.mark.parametrize("sql, line, col", [
    ("SELEC * FROM runs", 1, 1),
    ("SELECT *\nFROM runs\nWHERE (a = ", 3, 10),
    ("SELECT 'abc", 1, 8),
    ("SELECT * FROM runs WHERE", 1, None),
])
def test_malformed_sql_names_line_and_column(two_runs, sql, line, col):
    with pytest.raises(QueryError) as info:
        execute(sql, backfill=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith("malformed SQL")
    assert f"line {line}" in message
    if col is not None:
        assert f"column {col}" in message


def test_unknown_column_is_one_line(two_runs):
    with pytest.raises(QueryError) as info:
        execute("SELECT nosuch FROM proj", backfill=False)
    assert "nosuch" in str(info.value) and "\n" not in str(info.value)


def test_empty_database_queries_work(flordb_home):
    assert rows("SELECT count(*) FROM runs") == [(0,)]
    assert not (flordb_home / "pending").exists() or not list((flordb_home / "pending").iterdir())


# ----------------------------------------------- export and the Python API

def test_export_parquet_preserves_types(repo):
    fake_run(repo.home, run_id="r1", args={"lr": 0.1, "opt": "sgd", "flag": True, "n": 3},
             logs=epoch_step_logs(2, 3) + [("ok", True, "epoch", (0,)), ("ok", False, "epoch", (1,))])
    out = repo.path.parent / "out.parquet"
    n = flor.export(str(out))
    assert n == 6
    frame = pd.read_parquet(out)
    assert len(frame) == 6
    assert str(frame.lr.dtype) == "float64" and str(frame.n.dtype) == "int64"
    assert str(frame.flag.dtype) == "bool" and frame.ok.dtype == "bool"
    assert str(frame.epoch.dtype) == "int32" and frame.loss.dtype == "float64"
    assert frame.opt.tolist() == ["sgd"] * 6
    assert str(frame.tstamp.dtype).startswith("datetime64")
    con = duckdb.connect()
    types = dict(con.execute(f"DESCRIBE SELECT * FROM '{out}'").fetchall() and
                 [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM '{out}'").fetchall()])
    assert types["lr"] == "DOUBLE" and types["n"] == "BIGINT" and types["flag"] == "BOOLEAN"
    assert types["epoch"] == "INTEGER" and types["opt"] == "VARCHAR"
    assert types["tstamp"].startswith("TIMESTAMP")
    part = flor.export(str(out), sql="SELECT run_id, epoch, acc FROM proj WHERE epoch = 1")
    assert part == 1 and pd.read_parquet(out).acc.tolist() == [0.1]


def test_flor_dataframe_from_inside_the_repository(repo):
    fake_run(repo.home, run_id="r1", args={"lr": 0.1}, logs=epoch_step_logs(2, 3))
    frame = flor.dataframe("loss")
    assert set(frame.columns) >= {"projid", "run_id", "tstamp", "vid", "filename", "epoch",
                                  "step", "loss"}
    assert "acc" not in frame.columns and "lr" not in frame.columns
    assert len(frame) == 6
    every = flor.dataframe()
    assert {"loss", "acc", "lr"} <= set(every.columns) and len(every) == 6
    by_epoch = flor.dataframe("acc", "lr")
    assert len(by_epoch) == 2 and "step" not in by_epoch.columns
    with pytest.raises(QueryError, match="nosuch"):
        flor.dataframe("nosuch")


def test_flor_dataframe_needs_a_current_project(tmp_path, monkeypatch, flordb_home):
    fake_run(flordb_home, run_id="r1", logs=[("x", 1, "", ())])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(flor.FlorError, match="git init"):
        flor.dataframe("x")
    # Other projects stay queryable by name from anywhere.
    assert rows("SELECT x FROM proj") == [(1,)]


def test_flor_query_twice_and_with_backfill(repo):
    fake_run(repo.home, run_id="r1", logs=epoch_step_logs(2, 3))
    for _ in range(2):  # the second call must find the function, not the subpackage
        frame = flor.query("SELECT epoch, acc FROM proj ORDER BY epoch")
        assert frame.acc.tolist() == [0.0, 0.1]


def test_query_over_a_real_run_with_backfill_default(repo):
    repo.write_script(
        """
        import flordb as flor
        lr = flor.arg("lr", 0.5)
        for epoch in flor.loop("epoch", range(3)):
            for step in flor.loop("step", range(2)):
                flor.log("loss", lr * (epoch + step))
            flor.log("acc", epoch / 4)
        """
    )
    repo.run_script()
    frame = flor.query("SELECT run_id, epoch, acc, lr FROM proj ORDER BY epoch")
    assert frame[["epoch", "acc", "lr"]].values.tolist() == [[0, 0.0, 0.5], [1, 0.25, 0.5],
                                                              [2, 0.5, 0.5]]
    assert json.loads(frame.to_json(orient="records"))[0]["lr"] == 0.5
    assert rows("SELECT count(*) FROM runs") == [(1,)]


def test_a_project_named_after_a_base_table_does_not_shadow_it(tmp_path, flordb_home,
                                                               monkeypatch):
    r = make_repo(tmp_path, flordb_home, name="logs")
    fake_run(flordb_home, "logs", run_id="r1", logs=[("x", 1, "", ())])
    monkeypatch.chdir(r.path)
    assert list(run_sql("SELECT * FROM logs").columns)[:3] == ["run_id", "seq", "source"]


def test_a_name_logged_at_two_levels_takes_the_finest_value_on_each_row(flordb_home):
    fake_run(flordb_home, run_id="r", logs=[
        ("lr", 0.1, "", ()), ("lr", 0.05, "epoch", (1,)),
        ("loss", 1.0, "epoch/step", (0, 0)), ("loss", 2.0, "epoch/step", (1, 0)),
    ])
    assert rows("SELECT epoch, step, loss, lr FROM proj ORDER BY epoch") == [
        (0, 0, 1.0, 0.1), (1, 0, 2.0, 0.05)]


@pytest.mark.parametrize("sql, expected", [
    ("SELECT epoch, loss FROM p LIMIT 5", True),
    ("SELECT * FROM p WHERE epoch > 1", True),
    ("SELECT epoch, avg(loss) OVER (PARTITION BY run_id) FROM p", True),
    ("SELECT avg(loss) FROM p", False),
    ("SELECT run_id, count(*) FROM p GROUP BY 1", False),
    ("SELECT * FROM p ORDER BY loss", False),
    ("SELECT DISTINCT run_id FROM p", False),
    ("SELECT * FROM p JOIN q USING (run_id)", False),
    ("SELECT * FROM (SELECT * FROM p)", False),
    ("SELECT * FROM p UNION ALL SELECT * FROM p", False),
])
def test_lists_rows_of(sql, expected):
    assert an.lists_rows_of(an.parse(sql)[0], "p") is expected


def test_plain_listings_come_in_run_then_loop_order(flordb_home):
    # r2 starts first although its run_id sorts last.
    fake_run(flordb_home, run_id="zz-first", tstamp=1_600_000_000.0, logs=epoch_step_logs(2, 30))
    fake_run(flordb_home, run_id="aa-second", tstamp=1_600_000_100.0, logs=epoch_step_logs(3, 30))
    frame = run_sql("SELECT run_id, epoch, step, loss FROM proj")
    expected = ([("zz-first", e, s) for e in range(2) for s in range(30)]
                + [("aa-second", e, s) for e in range(3) for s in range(30)])
    assert list(zip(frame.run_id, frame.epoch, frame.step)) == expected
    assert run_sql("SELECT run_id, epoch, acc FROM proj LIMIT 3").epoch.tolist() == [0, 1, 0]
    # Aggregates read the relation unordered and give the same answer.
    assert rows("SELECT run_id, count(*), sum(loss) FROM proj GROUP BY run_id ORDER BY 1") == [
        ("aa-second", 90, float(sum(e * 100 + s for e in range(3) for s in range(30)))),
        ("zz-first", 60, float(sum(e * 100 + s for e in range(2) for s in range(30)))),
    ]
