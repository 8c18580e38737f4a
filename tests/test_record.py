"""Recording: flor.arg/log/loop in real scripts, run as subprocesses in a real git repo.

Covers --kwargs overrides, loop nesting, value types, runs that crash or are
killed, concurrent runs, a reader holding the database, and code versions that
leave the user's repository untouched.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import PYTHON, TORCH_SCRIPT, make_repo, rows, run_sql, wait_for_line

# ---------------------------------------------------------------- --kwargs

KWARGS_SCRIPT = """
import argparse, json, sys
import flordb as flor

parser = argparse.ArgumentParser()
parser.add_argument("--name")
parser.add_argument("rest", nargs="*")
ns = parser.parse_args()
values = {
    "lr": flor.arg("lr", 0.1),
    "epochs": flor.arg("epochs", 5),
    "flag": flor.arg("flag", True),
    "opt": flor.arg("opt", "sgd"),
    "layers": flor.arg("layers", [1]),
    "untouched": flor.arg("untouched", 7),
}
print(json.dumps({
    "values": values,
    "types": {k: type(v).__name__ for k, v in values.items()},
    "argv": sys.argv[1:],
    "name": ns.name,
    "rest": ns.rest,
}))
"""


def test_kwargs_override_cast_to_default_type_and_leave_argv_to_the_script(repo):
    repo.write_script(KWARGS_SCRIPT)
    proc = repo.run_script(
        "--name", "foo", "--kwargs", "lr=0.01", "epochs=2", "flag=false", "opt=adam",
        "layers=[2, 3]", "extra",
    )
    out = json.loads(proc.stdout)
    assert out["values"] == {
        "lr": 0.01, "epochs": 2, "flag": False, "opt": "adam", "layers": [2, 3], "untouched": 7,
    }
    assert out["types"] == {
        "lr": "float", "epochs": "int", "flag": "bool", "opt": "str", "layers": "list",
        "untouched": "int",
    }
    # The script's own argparse never saw the --kwargs tokens.
    assert out["argv"] == ["--name", "foo", "extra"]
    assert out["name"] == "foo" and out["rest"] == ["extra"]

    args = {r[0]: r[1:] for r in rows("SELECT name, vtype, num, txt FROM args")}
    assert args["lr"] == ("float", 0.01, None)
    assert args["epochs"] == ("int", 2.0, None)
    assert args["flag"] == ("bool", 0.0, None)
    assert args["opt"] == ("str", None, "adam")
    assert args["layers"][0] == "json" and json.loads(args["layers"][2]) == [2, 3]
    frame = run_sql(f"SELECT lr, epochs, flag, opt, untouched FROM {repo.projid}")
    assert frame.to_dict("records") == [
        {"lr": 0.01, "epochs": 2, "flag": False, "opt": "adam", "untouched": 7}
    ]
    types = dict(run_sql(f"DESCRIBE SELECT lr, epochs, flag, opt FROM {repo.projid}")
                 [["column_name", "column_type"]].itertuples(index=False))
    assert types == {"lr": "DOUBLE", "epochs": "BIGINT", "flag": "BOOLEAN", "opt": "VARCHAR"}


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("flordb: error:")]


def test_kwargs_that_cannot_be_cast_is_one_error_line(repo):
    repo.write_script(
        """
        import flordb as flor
        x = flor.arg("x", object())
        print("unreachable")
        """
    )
    proc = repo.run_script("--kwargs", "x=1", check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    assert "cannot cast" in errors[0] and "'x'" in errors[0]
    assert "unreachable" not in proc.stdout


def test_kwargs_value_of_wrong_type_names_value_and_type(repo):
    repo.write_script("import flordb as flor\nflor.arg('epochs', 3)\n")
    proc = repo.run_script("--kwargs", "epochs=abc", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    [error] = _error_lines(proc.stderr)
    assert "epochs='abc'" in error and "int" in error


@pytest.mark.parametrize("argv", [["--kwargs"], ["--kwargs", "1x=2"]])
def test_malformed_kwargs_is_one_error_line(repo, argv):
    repo.write_script("import flordb as flor\nflor.arg('x', 1)\n")
    proc = repo.run_script(*argv, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(_error_lines(proc.stderr)) == 1, proc.stderr


def test_unused_kwargs_warn(repo):
    repo.write_script("import flordb as flor\nflor.arg('x', 1)\n")
    proc = repo.run_script("--kwargs", "y=2")
    assert "--kwargs y never read" in proc.stderr


# ------------------------------------------------------------------ nesting

NESTED_SCRIPT = """
import flordb as flor

assert flor.log("run_level", 42) == 42
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(4)):
        flor.log("loss", epoch * 10 + step)
        for micro in flor.loop("micro", iter(range(2))):  # no len()
            flor.log("g", micro)
    flor.log("val", epoch)
    for vstep in flor.loop("vstep", range(5)):
        flor.log("vloss", vstep)
        if vstep == 1:
            break  # leaving a flor.loop early restores the enclosing context
    flor.log("after", epoch)
flor.log("final", 1)
"""


def test_records_carry_the_index_of_every_enclosing_loop(repo):
    repo.write_script(NESTED_SCRIPT)
    repo.run_script()
    logs = run_sql("SELECT name, path, i1, i2, i3, num FROM logs ORDER BY seq")
    by_name = {n: g for n, g in logs.groupby("name")}
    loss = by_name["loss"]
    assert set(loss.path) == {"epoch/step"}
    assert list(zip(loss.i1, loss.i2)) == [(e, s) for e in range(3) for s in range(4)]
    assert (loss.i1 * 10 + loss.i2 == loss.num).all()
    assert loss.i3.isna().all()
    g = by_name["g"]
    assert set(g.path) == {"epoch/step/micro"}
    assert list(zip(g.i1, g.i2, g.i3)) == [
        (e, s, m) for e in range(3) for s in range(4) for m in range(2)
    ]
    assert list(by_name["vloss"].i2) == [0, 1] * 3
    for name in ("val", "after"):
        frame = by_name[name]
        assert set(frame.path) == {"epoch"} and list(frame.i1) == [0, 1, 2]
        assert frame.i2.isna().all()
    for name in ("run_level", "final"):
        frame = by_name[name]
        assert list(frame.path) == [""] and frame.i1.isna().all()


def test_step_restarts_at_zero_each_epoch_in_the_relation(repo):
    repo.write_script(NESTED_SCRIPT)
    repo.run_script()
    frame = run_sql(
        f"SELECT epoch, step, loss, val, run_level FROM {repo.projid} ORDER BY epoch, step"
    )
    assert list(frame.step) == [0, 1, 2, 3] * 3
    assert list(frame.loss) == [e * 10 + s for e in range(3) for s in range(4)]
    assert list(frame.val) == [e for e in range(3) for _ in range(4)]  # broadcast down
    assert set(frame.run_level) == {42}


# ------------------------------------------------------------------ types

TYPES_SCRIPT = """
import enum
import numpy as np
import torch
import flordb as flor

class Level(enum.IntEnum):
    HIGH = 3

values = {
    "int": 7, "big": 2**40, "float": 0.25, "bool": True, "str": "hello",
    "dict": {"k": [1, 2], "s": "x"}, "list": [1.5, 2.5],
    "t_float": torch.tensor(0.5), "t_int": torch.tensor(3), "t_bool": torch.tensor(False),
    "np_f64": np.float64(1.5), "np_f32": np.float32(2.5), "np_i64": np.int64(9),
    "np_bool": np.bool_(True), "enum": Level.HIGH,
}
for name, value in values.items():
    assert flor.log(name, value) is value
d = {"mutable": 1}
flor.log("snap", d)
d["mutable"] = 2  # logged containers are snapshot at the call
for epoch in flor.loop("epoch", range(2)):
    flor.log("acc", torch.tensor(0.5 + epoch / 4))
"""


def test_value_types_are_stored_with_their_sql_types(repo):
    repo.write_script(TYPES_SCRIPT)
    repo.run_script()
    got = {r[0]: r[1:] for r in rows("SELECT name, vtype, num, txt FROM logs") if r[0] != "acc"}
    assert got["int"] == ("int", 7.0, None)
    assert got["big"] == ("int", float(2**40), None)
    assert got["float"] == ("float", 0.25, None)
    assert got["bool"] == ("bool", 1.0, None)
    assert got["str"][0] == "str" and got["str"][2] == "hello"
    assert got["dict"][0] == "json" and json.loads(got["dict"][2]) == {"k": [1, 2], "s": "x"}
    assert got["list"][0] == "json" and json.loads(got["list"][2]) == [1.5, 2.5]
    assert got["t_float"] == ("float", 0.5, None)
    assert got["t_int"] == ("int", 3.0, None)
    assert got["t_bool"] == ("bool", 0.0, None)
    assert got["np_f64"] == ("float", 1.5, None)
    assert got["np_f32"] == ("float", 2.5, None)
    assert got["np_i64"] == ("int", 9.0, None)
    assert got["np_bool"] == ("bool", 1.0, None)
    assert got["enum"] == ("int", 3.0, None)
    assert json.loads(got["snap"][2]) == {"mutable": 1}

    cols = ", ".join(f'"{n}"' for n in got)
    described = run_sql(f"DESCRIBE SELECT {cols}, acc FROM {repo.projid}")
    types = dict(described[["column_name", "column_type"]].itertuples(index=False))
    assert types == {
        "int": "BIGINT", "big": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN",
        "str": "VARCHAR", "dict": "VARCHAR", "list": "VARCHAR", "t_float": "DOUBLE",
        "t_int": "BIGINT", "t_bool": "BOOLEAN", "np_f64": "DOUBLE", "np_f32": "DOUBLE",
        "np_i64": "BIGINT", "np_bool": "BOOLEAN", "enum": "BIGINT", "snap": "VARCHAR",
        "acc": "DOUBLE",
    }
    # Numbers are numeric in SQL: arithmetic and JSON functions work on them.
    row = run_sql(
        f"SELECT \"int\" + 1 AS i, \"big\" AS b, \"dict\"->>'s' AS s FROM {repo.projid} LIMIT 1"
    ).iloc[0]
    assert (row.i, row.b, row.s) == (8, 2**40, "x")
    acc = run_sql(f"SELECT epoch, acc FROM {repo.projid} ORDER BY epoch")
    assert list(acc.acc) == [0.5, 0.75]


def test_tiny_torch_training_run(repo):
    repo.write_script(TORCH_SCRIPT)
    proc = repo.run_script("--kwargs", "epochs=2", "lr=0.1")
    assert re.search(r"recorded run \S+ of proj \(18 records\)", proc.stderr), proc.stderr
    frame = run_sql(f"SELECT run_id, epoch, step, loss, val_loss, lr, epochs FROM {repo.projid}")
    assert len(frame) == 2 * 8
    assert set(frame.lr) == {0.1} and set(frame.epochs) == {2}
    assert frame.loss.dtype.kind == "f" and frame.loss.notna().all()
    per_epoch = run_sql(f"SELECT epoch, val_loss FROM {repo.projid} ORDER BY epoch")
    assert len(per_epoch) == 2 and per_epoch.val_loss[1] < per_epoch.val_loss[0]


# --------------------------------------------------------- crash and kill

def test_uncaught_exception_marks_run_failed_and_keeps_records(repo):
    repo.write_script(
        """
        import flordb as flor
        for epoch in flor.loop("epoch", range(10)):
            flor.log("loss", 1.0 / (epoch + 1))
            if epoch == 3:
                raise RuntimeError("diverged at epoch 3")
        """
    )
    proc = repo.run_script(check=False)
    assert proc.returncode == 1
    assert "RuntimeError: diverged at epoch 3" in proc.stderr  # the user's traceback stays
    run = run_sql("SELECT status, error, end_time FROM runs").iloc[0]
    assert run.status == "failed"
    assert "diverged at epoch 3" in run.error
    assert run.end_time is not None
    frame = run_sql(f"SELECT epoch, loss FROM {repo.projid} ORDER BY epoch")
    assert list(frame.epoch) == [0, 1, 2, 3]


KILL_SCRIPT = """
import time
import flordb as flor

for epoch in flor.loop("epoch", range(1000)):
    for step in flor.loop("step", range(10)):
        flor.log("t", time.time())
        if epoch == 0 and step == 0:
            print("started", flush=True)
        time.sleep(0.005)
"""


def test_sigkill_keeps_records_older_than_a_second(repo):
    repo.write_script(KILL_SCRIPT)
    proc = repo.start_script()
    wait_for_line(proc, "started", timeout=60)
    time.sleep(2.0)
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    pending = list((repo.home / "pending").glob("*.seg"))
    assert len(pending) == 1  # the writer is gone; its segment waits for the next flordb process

    result = repo.flordb(
        "query", "--no-backfill", "--format", "json",
        f"SELECT run_id, epoch, step, t FROM {repo.projid} ORDER BY t",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert not list((repo.home / "pending").glob("*.seg"))
    assert rows, "no records survived"
    assert rows[-1]["t"] >= killed_at - 1.0
    # Nothing in the middle is missing: every (epoch, step) up to the last one is there.
    assert [(r["epoch"], r["step"]) for r in rows] == [(i // 10, i % 10) for i in range(len(rows))]
    status = run_sql("SELECT status, end_time FROM runs").iloc[0]
    assert status.status == "killed"


def test_sigterm_marks_run_terminated_and_keeps_records(repo):
    repo.write_script(KILL_SCRIPT)
    proc = repo.start_script()
    wait_for_line(proc, "started", timeout=60)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    run = run_sql("SELECT status FROM runs").iloc[0]
    assert run.status == "terminated"
    frame = run_sql(f"SELECT epoch, step FROM {repo.projid} ORDER BY epoch, step")
    assert len(frame) > 10
    assert list(zip(frame.epoch, frame.step)) == [(i // 10, i % 10) for i in range(len(frame))]


# ---------------------------------------------------- concurrency and locks

def _assert_no_duplicates() -> None:
    dupes = run_sql(
        "SELECT run_id, seq, count(*) AS n FROM logs GROUP BY run_id, seq HAVING count(*) > 1"
    )
    assert dupes.empty, dupes


def test_two_runs_finishing_at_the_same_moment_both_land(repo):
    repo.write_script(
        """
        import os, time
        import flordb as flor

        flor.arg("who", "nobody")
        for epoch in flor.loop("epoch", range(5)):
            for step in flor.loop("step", range(200)):
                flor.log("loss", epoch + step / 1000)
        time.sleep(max(0.0, float(os.environ["FINISH_AT"]) - time.time()))
        """
    )
    finish_at = str(time.time() + 4.0)
    procs = [
        repo.start_script("--kwargs", f"who={who}", env={"FINISH_AT": finish_at})
        for who in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    frame = run_sql(f"SELECT who, count(*) AS n FROM {repo.projid} GROUP BY who ORDER BY who")
    assert frame.to_dict("records") == [{"who": "a", "n": 1000}, {"who": "b", "n": 1000}]
    assert run_sql("SELECT count(*) AS n FROM logs").n[0] == 2000
    assert set(run_sql("SELECT status FROM runs").status) == {"finished"}
    _assert_no_duplicates()
    assert not list((repo.home / "pending").glob("*.seg"))


HOLD_READ_ONLY = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1], read_only=True)
print('open', flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_run_ending_while_a_reader_holds_the_database_loses_nothing(repo):
    repo.write_script(
        """
        import flordb as flor
        for epoch in flor.loop("epoch", range(3)):
            for step in flor.loop("step", range(100)):
                flor.log("loss", step)
        """
    )
    repo.run_script()  # creates the database
    reader = subprocess.Popen(
        [PYTHON, "-c", HOLD_READ_ONLY, str(repo.home / "flordb.duckdb"), "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    repo.procs.append(reader)
    wait_for_line(reader, "open", timeout=30)
    proc = repo.run_script()  # ends while the reader holds the database
    # Either it waited for the reader to let go, or it left its segment pending.
    assert "recorded run" in proc.stderr or "database is busy" in proc.stderr, proc.stderr
    reader.communicate(timeout=60)
    # The next flordb command ingests whatever is pending.
    result = repo.flordb("query", "--no-backfill", "--format", "csv",
                         "SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM logs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["n,runs", "600,2"]
    _assert_no_duplicates()
    assert not list((repo.home / "pending").glob("*.seg"))


def test_a_segment_ingested_twice_never_duplicates(repo):
    repo.write_script(KILL_SCRIPT)
    proc = repo.start_script()
    wait_for_line(proc, "started", timeout=60)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    [segment] = (repo.home / "pending").glob("*.seg")
    saved = repo.path.parent / "saved.seg"
    shutil.copyfile(segment, saved)
    first = run_sql("SELECT count(*) AS n FROM logs").n[0]
    assert first > 0 and not segment.exists()
    shutil.copyfile(saved, segment)  # as if the unlink after ingest had been lost
    assert run_sql("SELECT count(*) AS n FROM logs").n[0] == first
    assert not segment.exists()
    assert run_sql("SELECT count(*) AS n FROM runs").n[0] == 1
    _assert_no_duplicates()


# ------------------------------------------------------------ identifiers

def test_log_names_that_need_quoting_work_as_columns_and_cannot_inject(repo):
    repo.write_script(
        """
        import flordb as flor
        flor.arg("lr'; DROP TABLE args; --", 0.5)
        for epoch in flor.loop("epoch", range(2)):
            flor.log('a"b', epoch)
            flor.log("val acc", epoch / 2)
            flor.log("x'); DROP TABLE runs; --", "v")
        """
    )
    repo.run_script()
    frame = run_sql(
        f'SELECT epoch, "a""b", "val acc", "x\'); DROP TABLE runs; --", '
        f'"lr\'; DROP TABLE args; --" FROM {repo.projid} ORDER BY epoch'
    )
    assert list(frame.columns) == [
        "epoch", 'a"b', "val acc", "x'); DROP TABLE runs; --", "lr'; DROP TABLE args; --",
    ]
    assert frame.values.tolist() == [[0, 0, 0.0, "v", 0.5], [1, 1, 0.5, "v", 0.5]]
    star = run_sql(f"SELECT * FROM {repo.projid}")
    assert 'a"b' in star.columns and len(star) == 2
    assert run_sql("SELECT count(*) AS n FROM runs").n[0] == 1
    assert run_sql("SELECT count(*) AS n FROM args").n[0] == 1


def test_project_names_that_need_quoting(tmp_path, flordb_home, monkeypatch):
    r = make_repo(tmp_path, flordb_home, name="it's my-proj")
    monkeypatch.chdir(r.path)
    r.write_script("import flordb as flor\nflor.log('x', 1)\n")
    r.run_script()
    frame = run_sql('SELECT projid, x FROM "it\'s my-proj"')
    assert frame.to_dict("records") == [{"projid": "it's my-proj", "x": 1}]


# ------------------------------------------------------------ code versions

SIMPLE_SCRIPT = """
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    flor.log("loss", 1.0 / (epoch + 1))
"""


def _vids() -> list[str]:
    return list(run_sql("SELECT vid FROM runs ORDER BY tstamp").vid)


def test_user_repository_is_unchanged_byte_for_byte(repo):
    repo.write_script(SIMPLE_SCRIPT)
    repo.git("add", "train.py")
    repo.git("commit", "-q", "-m", "add train.py")
    repo.write("README.md", "# edited, not staged\n")
    repo.write("staged.py", "x = 1\n")
    repo.git("add", "staged.py")
    repo.write("notes.txt", "untracked\n")
    repo.write("debug.log", "ignored\n")
    repo.git("branch", "side")
    repo.git("stash", "list")
    before = repo.snapshot()
    head = repo.git("rev-parse", "HEAD").strip()

    repo.run_script()
    repo.run_script()
    after = repo.snapshot()
    assert after == before
    assert repo.git("rev-parse", "HEAD").strip() == head

    vids = _vids()
    assert len(vids) == 2 and vids[0] == vids[1]  # identical trees reuse one vid
    vid = vids[0]
    assert re.fullmatch(r"[0-9a-f]{40}", vid)
    assert repo.git("cat-file", "-t", vid).strip() == "commit"
    assert repo.git("rev-parse", f"{vid}^").strip() == head
    # The version holds the working tree as it ran: edits, staged and untracked files.
    assert repo.git("show", f"{vid}:README.md") == "# edited, not staged\n"
    assert repo.git("show", f"{vid}:staged.py") == "x = 1\n"
    assert repo.git("show", f"{vid}:notes.txt") == "untracked\n"
    assert repo.git("ls-tree", "--name-only", vid).split().count("debug.log") == 0
    refs = repo.git("for-each-ref", "--format=%(objectname) %(refname)", "refs/flor/")
    [(target, ref)] = [line.split() for line in refs.splitlines()]
    assert target == vid and ref.startswith("refs/flor/")
    assert run_sql("SELECT projid, vid FROM versions").values.tolist() == [["proj", vid]]

    repo.write("notes.txt", "changed\n")
    repo.run_script()
    assert len(set(_vids())) == 2
    assert len(repo.git("for-each-ref", "refs/flor/").splitlines()) == 2


def test_repository_without_commits_is_unchanged(tmp_path, flordb_home, monkeypatch):
    r = make_repo(tmp_path, flordb_home, name="fresh", commit=False)
    monkeypatch.chdir(r.path)
    r.write_script(SIMPLE_SCRIPT)
    r.git("add", "README.md")
    before = r.snapshot()
    r.run_script()
    assert r.snapshot() == before
    assert r.git("rev-parse", "--verify", "-q", "HEAD", check=False) == ""
    [vid] = _vids()
    assert re.fullmatch(r"[0-9a-f]{40}", vid)
    assert r.git("cat-file", "-t", vid).strip() == "commit"
    assert "parent" not in r.git("cat-file", "-p", vid)
    assert r.git("show", f"{vid}:train.py").startswith("import flordb")
    assert rows("SELECT head FROM versions") == [(None,)]


def test_script_in_a_subdirectory_records_its_path_relative_to_the_repo(repo):
    repo.write_script(SIMPLE_SCRIPT, name="src/train.py")
    repo.run_script(script="src/train.py")
    run = run_sql("SELECT projid, filename FROM runs").iloc[0]
    assert (run.projid, run.filename) == ("proj", "src/train.py")


def test_outside_a_git_repository_is_one_line_error_naming_git_init(tmp_path):
    nogit = tmp_path / "nogit"
    nogit.mkdir()
    (nogit / "train.py").write_text(SIMPLE_SCRIPT)
    proc = subprocess.run(
        [PYTHON, "train.py"], cwd=nogit, capture_output=True, text=True, timeout=60,
        env=dict(os.environ), check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flordb: error:")
    assert "git init" in lines[0]


# ---------------------------------------------------------- no stray runs

def test_importing_or_querying_never_creates_a_run(repo):
    repo.write_script(SIMPLE_SCRIPT)
    repo.run_script()
    repo.write_script(
        """
        import flordb as flor
        import flordb.record, flordb.store, flordb.query
        frame = flor.query("SELECT count(*) AS n FROM runs", backfill=False)
        print(int(frame.n[0]))
        print(len(flor.dataframe("loss")))
        """,
        name="look.py",
    )
    refs_before = repo.git("for-each-ref", "refs/flor/")
    proc = repo.run_script(script="look.py")
    assert proc.stdout.split() == ["1", "2"]
    assert "recorded run" not in proc.stderr
    assert repo.flordb("query", "--no-backfill", "SELECT * FROM runs").returncode == 0
    assert repo.flordb("runs").returncode == 0
    subprocess.run([PYTHON, "-c", "import flordb"], cwd=repo.path, check=True,
                   env=repo.env())
    assert run_sql("SELECT count(*) AS n FROM runs").n[0] == 1
    assert not list((repo.home / "pending").glob("*.seg"))
    assert repo.git("for-each-ref", "refs/flor/") == refs_before


def test_flor_commit_ends_the_run_and_a_later_record_starts_another(repo):
    repo.write_script(
        """
        import flordb as flor
        flor.log("x", 1)
        flor.commit()
        flor.commit()  # a second commit is a no-op
        flor.log("x", 2)
        """
    )
    proc = repo.run_script()
    assert proc.stderr.count("recorded run") == 2
    frame = run_sql(f"SELECT run_id, x FROM {repo.projid} ORDER BY x")
    assert list(frame.x) == [1, 2] and frame.run_id.nunique() == 2


@pytest.mark.skipif(sys.platform != "linux", reason="fork semantics")
def test_forked_child_does_not_end_the_parents_run(repo):
    repo.write_script(
        """
        import os
        import flordb as flor
        for epoch in flor.loop("epoch", range(2)):
            flor.log("loss", epoch)
            pid = os.fork()
            if pid == 0:
                flor.commit()  # a DataLoader-like worker: must not end the parent's run
                os._exit(0)
            os.waitpid(pid, 0)
        """
    )
    repo.run_script()
    frame = run_sql(f"SELECT epoch, loss FROM {repo.projid} ORDER BY epoch")
    assert list(frame.loss) == [0, 1]
    assert run_sql("SELECT status FROM runs").status.tolist() == ["finished"]
