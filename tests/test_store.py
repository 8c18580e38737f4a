"""The store: schema, pending segments, exactly-once ingest, a busy database."""
from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import PYTHON, epoch_step_logs, fake_run, rows, run_sql, wait_for_line

from flordb.errors import StoreError
from flordb.store import schema, segments
from flordb.store.store import Store, value_columns

TABLES = {"schema_version", "projects", "versions", "runs", "args", "logs", "log_names",
          "segments", "iterations", "checkpoints"}


def _count(home: Path, table: str) -> int:
    with Store(home).connect() as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_schema_is_idempotent_and_versioned(flordb_home):
    store = Store(flordb_home)
    for _ in range(3):
        with store.connect(write=True):
            pass
    with store.connect() as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        versions = con.execute("SELECT version FROM schema_version").fetchall()
    assert TABLES <= tables
    assert versions == [(schema.SCHEMA_VERSION,)]
    assert (schema.sql_dir() / "schema.sql").exists()


def test_flordb_home_is_created_when_missing(flordb_home):
    assert not flordb_home.exists()
    with Store().connect():
        pass
    assert (flordb_home / "flordb.duckdb").exists()


def test_ingest_lays_out_runs_args_logs_and_segments(flordb_home):
    seg = fake_run(flordb_home, run_id="r1", args={"lr": 0.1, "opt": "adam"},
                   logs=epoch_step_logs(2, 3))
    assert not seg.exists()
    assert rows("SELECT run_id, projid, status, vid, filename FROM runs") == [
        ("r1", "proj", "finished", "0" * 40, "train.py")
    ]
    assert rows("SELECT name, vtype, num, txt FROM args ORDER BY name") == [
        ("lr", "float", 0.1, None), ("opt", "str", None, "adam")
    ]
    assert rows("SELECT segment, run_id, records FROM segments") == [("r1", "r1", 8)]
    logs = rows("SELECT seq, source, name, path, i1, i2, i3, vtype, num FROM logs ORDER BY seq")
    assert logs[0] == (0, "record", "loss", "epoch/step", 0, 0, None, "float", 0.0)
    assert logs[3] == (3, "record", "acc", "epoch", 0, None, None, "float", 0.0)
    assert [r[0] for r in logs] == list(range(8))
    assert rows("SELECT projid, repo_path FROM projects") == [("proj", "/repos/proj")]


@pytest.mark.parametrize(
    "value, expected",
    [
        (3, ("int", 3.0, None)),
        (2.5, ("float", 2.5, None)),
        (True, ("bool", 1.0, None)),
        ("x", ("str", None, "x")),
        ({"a": [1]}, ("json", None, '{"a": [1]}')),
        ([1, 2], ("json", None, "[1, 2]")),
        (None, ("json", None, "null")),
    ],
)
def test_value_columns(value, expected):
    assert value_columns(value) == expected


def test_a_live_writers_segment_waits(flordb_home):
    path = segments.pending_dir(flordb_home) / "live.seg"
    writer = segments.SegmentWriter(path)
    writer.append({"t": "run", "source": "record", "run_id": "live", "projid": "proj",
                   "tstamp": time.time()})
    report = Store(flordb_home).ingest_pending()
    assert (report.segments, report.pending) == (0, 1)
    assert path.exists()
    writer.close()  # the writer is gone (like an exited process): its lock is released
    report = Store(flordb_home).ingest_pending()
    assert (report.segments, report.pending) == (1, 0)
    assert rows("SELECT run_id, status FROM runs") == [("live", "killed")]


def test_torn_tail_is_ignored_and_the_run_is_killed(flordb_home):
    path = fake_run(flordb_home, run_id="torn", logs=epoch_step_logs(1, 5), status=None,
                    ingest=False)
    with open(path, "ab") as f:
        f.write(b"\x40\x00\x00\x00partial frame")  # says 64 bytes, has 13
    Store(flordb_home).ingest_pending()
    assert rows("SELECT status, end_time FROM runs") == [("killed", None)]
    assert _count(flordb_home, "logs") == 6


class _Evil:
    """Pickles to a call that would create a file if anyone unpickled it."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_an_unreadable_frame_is_skipped_and_executes_nothing(flordb_home, tmp_path):
    path = fake_run(flordb_home, run_id="bad", status=None, ingest=False)
    target = tmp_path / "pwned"
    with open(path, "ab") as f:
        for frame in (
            {"t": "logs", "names": ["a"], "values": [1], "paths": [""], "ctxs": [()]},
            {"t": "logs", "names": ["evil"], "values": [_Evil(str(target))], "paths": [""],
             "ctxs": [()]},
            {"t": "logs", "names": ["b"], "values": [2], "paths": [""], "ctxs": [()]},
        ):
            data = pickle.dumps(frame)
            f.write(segments._LEN.pack(len(data)) + data)
    Store(flordb_home).ingest_pending()
    assert not target.exists()
    assert rows("SELECT name, num FROM logs ORDER BY seq") == [("a", 1.0), ("b", 2.0)]


def test_a_segment_without_header_is_dropped(flordb_home):
    path = segments.pending_dir(flordb_home) / "empty.seg"
    path.write_bytes(b"")
    report = Store(flordb_home).ingest_pending()
    assert report.records == 0 and not path.exists()
    assert _count(flordb_home, "runs") == 0


def test_reingesting_a_segment_is_a_no_op(flordb_home, tmp_path):
    path = fake_run(flordb_home, run_id="twice", args={"lr": 1}, logs=epoch_step_logs(2, 2),
                    ingest=False)
    saved = tmp_path / "saved.seg"
    shutil.copyfile(path, saved)
    assert Store(flordb_home).ingest_pending().records == 6
    for _ in range(2):
        shutil.copyfile(saved, path)
        report = Store(flordb_home).ingest_pending()
        assert report.records == 0 and not path.exists()
    assert _count(flordb_home, "logs") == 6
    assert _count(flordb_home, "args") == 1
    assert _count(flordb_home, "runs") == 1


HOLDER = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1], read_only=sys.argv[3] == 'ro')
print('open', flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold_database(home: Path, seconds: float, write: bool = False) -> subprocess.Popen:
    proc = subprocess.Popen(
        [PYTHON, "-c", HOLDER, str(home / "flordb.duckdb"), str(seconds),
         "rw" if write else "ro"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_line(proc, "open", timeout=30)
    return proc


def test_a_busy_database_leaves_segments_pending_until_the_next_open(flordb_home, capsys):
    fake_run(flordb_home, run_id="first", logs=epoch_step_logs(1, 2))
    holder = _hold_database(flordb_home, 30)
    try:
        fake_run(flordb_home, run_id="second", logs=epoch_step_logs(1, 2), ingest=False)
        report = Store(flordb_home).ingest_pending(timeout=0.3, quiet=False)
        assert (report.segments, report.pending) == (0, 1)
        assert "stay pending" in capsys.readouterr().err
        assert (flordb_home / "pending" / "second.seg").exists()
        # Readers still read (what has landed so far) while another reader holds the file.
        with Store(flordb_home).connect() as con:
            assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    finally:
        holder.kill()
        holder.communicate()
    assert rows("SELECT run_id FROM runs ORDER BY run_id") == [("first",), ("second",)]
    assert not (flordb_home / "pending" / "second.seg").exists()


def test_a_writer_holding_the_database_makes_readers_wait_then_fail_clearly(flordb_home):
    fake_run(flordb_home, run_id="first")
    holder = _hold_database(flordb_home, 30, write=True)
    try:
        with (
            pytest.raises(StoreError, match="locked by another process"),
            Store(flordb_home).connect(timeout=0.5),
        ):
            pass
    finally:
        holder.kill()
        holder.communicate()
    with Store(flordb_home).connect(timeout=5) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


INGESTER = """
import sys
from pathlib import Path
from flordb.store.store import Store
print("ready", flush=True)
sys.stdin.readline()
report = Store(Path(sys.argv[1])).ingest_pending(timeout=60)
print(report.segments, report.records, report.pending, flush=True)
"""


def test_concurrent_ingesters_ingest_each_segment_once(flordb_home):
    fake_run(flordb_home, run_id="seed")
    for k in range(12):
        fake_run(flordb_home, run_id=f"r{k:02d}", logs=epoch_step_logs(2, 50), ingest=False)
    procs = [
        subprocess.Popen([PYTHON, "-c", INGESTER, str(flordb_home)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for proc in procs:
        wait_for_line(proc, "ready", timeout=30)
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    totals = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        totals.append(tuple(int(x) for x in out.split()))
    assert sum(t[0] for t in totals) == 12
    assert sum(t[1] for t in totals) == 12 * 102
    assert _count(flordb_home, "logs") == 12 * 102
    assert rows("SELECT count(*) FROM (SELECT run_id, seq FROM logs GROUP BY ALL "
                "HAVING count(*) > 1)") == [(0,)]
    assert not list((flordb_home / "pending").glob("*.seg"))


def test_replays_replace_older_replays_but_never_recorded_values(flordb_home):
    logs = [("loss", 1.0, "epoch", (0,)), ("loss", 2.0, "epoch", (1,))]
    fake_run(flordb_home, run_id="r", logs=logs)
    fake_run(flordb_home, run_id="r", source="replay", segment="r-replay1",
             logs=[("grad", 0.1, "epoch", (0,)), ("grad", 0.2, "epoch", (1,))])
    # A later replay recomputes epoch 1 only.
    from flordb.store.segments import SegmentWriter, pending_dir

    seg = SegmentWriter(pending_dir(flordb_home) / "r-replay2.seg")
    seg.append({"t": "run", "source": "replay", "run_id": "r", "projid": "proj",
                "tstamp": 0.0})
    seg.append({"t": "logs", "names": ["grad"], "values": [0.25], "paths": ["epoch"],
                "ctxs": [(1,)]})
    seg.close()
    Store(flordb_home).ingest_pending()
    assert rows("SELECT source, name, i1, num FROM logs ORDER BY name, i1, source") == [
        ("replay", "grad", 0, 0.1), ("replay", "grad", 1, 0.25),
        ("record", "loss", 0, 1.0), ("record", "loss", 1, 2.0),
    ]
    assert rows("SELECT status FROM runs") == [("finished",)]  # a replay never rewrites the run


def test_large_segment_ingests_columnar(flordb_home):
    n = 200_000
    logs = [("loss", float(i), "epoch/step", (i // 1000, i % 1000)) for i in range(n)]
    fake_run(flordb_home, run_id="big", logs=logs)
    assert rows("SELECT count(*), sum(num), max(i1), max(i2) FROM logs") == [
        (n, float(sum(range(n))), 199, 999)
    ]


def test_store_never_uses_the_default_connection(flordb_home):
    fake_run(flordb_home, run_id="r")
    # The module-level default connection stays empty: flordb opens its own.
    assert "runs" not in {r[0] for r in duckdb.sql("SHOW TABLES").fetchall()}
    assert sys.modules.get("flordb.store.store") is not None


def test_log_names_catalog_is_kept_at_ingest(flordb_home):
    fake_run(flordb_home, run_id="r1", logs=epoch_step_logs(1, 2) + [("note", "x", "", ())])
    fake_run(flordb_home, "other", run_id="r2", logs=[("loss", 1, "epoch", (0,))])
    assert rows("SELECT projid, name, path, vtype FROM log_names ORDER BY ALL") == [
        ("other", "loss", "epoch", "int"),
        ("proj", "acc", "epoch", "float"),
        ("proj", "loss", "epoch/step", "float"),
        ("proj", "note", "", "str"),
    ]


def test_an_older_database_gets_its_catalog_on_open(flordb_home):
    fake_run(flordb_home, run_id="r1", logs=epoch_step_logs(1, 2))
    with Store(flordb_home).connect(write=True) as con:  # as a version-2 database was
        con.execute("DROP TABLE log_names")
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO schema_version (version) VALUES (2)")
    from flordb.store import store as store_module

    store_module._SCHEMA_CHECKED.clear()
    assert rows("SELECT acc FROM proj") == [(0.0,)]
    assert rows("SELECT count(*) FROM log_names") == [(2,)]
    assert rows("SELECT max(version) FROM schema_version") == [(schema.SCHEMA_VERSION,)]


def test_writes_rebuild_the_catalog(flordb_home):
    from flordb.query.engine import execute

    fake_run(flordb_home, run_id="r1", logs=epoch_step_logs(1, 2) + [("gone", 1, "", ())])
    execute("DELETE FROM logs WHERE name = 'gone'", backfill=False, write=True)
    assert rows("SELECT name FROM log_names ORDER BY name") == [("acc",), ("loss",)]
    assert "gone" not in run_sql("SELECT * FROM proj").columns
