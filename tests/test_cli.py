"""The command line: exit codes, output formats, one-line errors.

Most tests call ``main`` in-process (fast); the ones about tracebacks and exit
statuses run ``python -m flordb`` as a real process.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess

import duckdb
import pandas as pd
import pytest
from conftest import PYTHON, epoch_step_logs, fake_run

from flordb.interfaces.cli import main


@pytest.fixture
def cli(capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def data(repo):
    fake_run(repo.home, run_id="r1", args={"lr": 0.1, "opt": "a,b"},
             logs=epoch_step_logs(2, 3) + [("note", 'say "hi"', "", ())])
    fake_run(repo.home, run_id="r2", args={"lr": 0.01, "opt": "sgd"}, logs=epoch_step_logs(1, 3))
    return repo


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flordb: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_help_lists_the_commands(cli):
    proc = subprocess.run([PYTHON, "-m", "flordb", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    for command in ("run", "shell", "query", "dataframe", "replay", "propagate", "export",
                    "runs", "versions", "checkpoints", "plot"):
        assert command in proc.stdout
    code, out, _ = cli()
    assert code == 0 and "usage: flordb" in out


def test_query_table_format(data, cli):
    code, out, err = cli("query", "--no-backfill",
                         "SELECT run_id, epoch, acc, note FROM proj ORDER BY run_id, epoch")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("|")[0].strip() == "run_id"
    assert len(lines) == 2 + 3
    assert lines[-1].split("|")[-1].strip() == "NULL"
    assert "(3 rows)" in err


def test_query_csv_writes_null_as_empty_field(data, cli):
    code, out, err = cli("query", "--no-backfill", "--format", "csv",
                         "SELECT run_id, epoch, acc, note, opt FROM proj ORDER BY run_id, epoch")
    assert code == 0 and err == ""
    parsed = list(csv.reader(io.StringIO(out)))
    assert parsed[0] == ["run_id", "epoch", "acc", "note", "opt"]
    assert parsed[1] == ["r1", "0", "0.0", 'say "hi"', "a,b"]
    assert parsed[3] == ["r2", "0", "0.0", "", "sgd"]
    assert out.splitlines()[3] == "r2,0,0.0,,sgd"


def test_query_json_is_an_array_of_objects(data, cli):
    code, out, _ = cli("query", "--no-backfill", "--format", "json",
                       "SELECT run_id, tstamp, epoch, acc, lr, note FROM proj "
                       "ORDER BY run_id, epoch")
    assert code == 0
    doc = json.loads(out)
    assert isinstance(doc, list) and len(doc) == 3
    assert doc[0]["run_id"] == "r1" and doc[0]["epoch"] == 0 and doc[0]["lr"] == 0.1
    assert doc[2]["note"] is None
    assert isinstance(doc[0]["tstamp"], str) and doc[0]["tstamp"].startswith("2023-")
    code, out, _ = cli("query", "--no-backfill", "--format", "json",
                       "SELECT * FROM runs WHERE false")
    assert json.loads(out) == []


def test_query_with_backfill_default_path(data, cli):
    code, out, _ = cli("query", "--format", "json", "SELECT run_id, epoch, acc FROM proj "
                       "WHERE epoch = 1")
    assert code == 0 and json.loads(out) == [{"run_id": "r1", "epoch": 1, "acc": 0.1}]


def test_query_refuses_writes_unless_write(data, cli):
    code, _, err = cli("query", "--no-backfill", "DELETE FROM runs")
    assert code == 1
    assert "--write" in _one_error_line(err)
    code, _, _ = cli("query", "--no-backfill", "--write", "DELETE FROM runs WHERE run_id = 'r2'")
    assert code == 0
    code, out, _ = cli("query", "--no-backfill", "--format", "csv", "SELECT run_id FROM runs")
    assert out.split() == ["run_id", "r1"]


def test_malformed_sql_is_exit_1_one_line_with_position(data):
    proc = data.flordb("query", "--no-backfill", "SELECT run_id\nFROM runs\nWHERE (a = ")
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert "line 3" in line and "column 10" in line
    assert proc.stdout == ""


def test_unknown_table_is_one_line(data):
    proc = data.flordb("query", "SELECT * FROM nosuch")
    assert proc.returncode == 1
    assert "nosuch" in _one_error_line(proc.stderr)


def test_debug_shows_the_traceback(data):
    proc = data.flordb("query", "--no-backfill", "DELETE FROM runs", env={"FLORDB_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_export_parquet_readable_by_pandas_and_duckdb(data, cli):
    out = data.path.parent / "proj.parquet"
    code, _, err = cli("export", str(out))
    assert code == 0 and "wrote 9 rows" in err
    frame = pd.read_parquet(out)
    assert len(frame) == 9 and {"loss", "acc", "lr", "opt", "epoch", "step"} <= set(frame.columns)
    assert frame.loss.dtype == "float64" and str(frame.epoch.dtype) == "int32"
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*), sum(loss) FROM '{out}'").fetchone() == (
        9, float(0 + 1 + 2 + 100 + 101 + 102 + 0 + 1 + 2))
    code, _, err = cli("export", str(out), "--query", "SELECT run_id, lr FROM proj")
    assert code == 0 and pd.read_parquet(out).to_dict("records") == [
        {"run_id": "r1", "lr": 0.1}, {"run_id": "r2", "lr": 0.01}]


def test_dataframe_command(data, cli):
    code, out, _ = cli("dataframe", "acc", "--format", "csv")
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert len(parsed) == 3 and "step" not in parsed[0] and "acc" in parsed[0]


def test_dataframe_outside_a_repository(tmp_path, flordb_home):
    fake_run(flordb_home, run_id="r1", logs=[("x", 1, "", ())])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([PYTHON, "-m", "flordb", "dataframe"], cwd=elsewhere,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "git init" in _one_error_line(proc.stderr)
    # Projects stay queryable by name from anywhere.
    proc = subprocess.run([PYTHON, "-m", "flordb", "query", "--no-backfill", "--format", "csv",
                           "SELECT x FROM proj"], cwd=elsewhere, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.split() == ["x", "1"]


@pytest.mark.parametrize("kind, columns", [
    ("runs", {"run_id", "projid", "tstamp", "status", "vid", "filename"}),
    ("versions", {"projid", "vid", "tstamp", "runs"}),
    ("checkpoints", {"run_id", "iteration", "object", "codec", "raw_bytes", "stored_bytes"}),
])
def test_listings(data, cli, kind, columns):
    code, out, _ = cli(kind, "--format", "csv")
    assert code == 0
    header = out.splitlines()[0].split(",")
    assert columns <= set(header)
    code, out, _ = cli(kind, "--format", "json")
    doc = json.loads(out)
    assert isinstance(doc, list)
    if kind == "runs":
        assert [r["run_id"] for r in doc] == ["r1", "r2"]
        assert {r["status"] for r in doc} == {"finished"}
    if kind == "versions":
        assert doc == [{"projid": "proj", "vid": "0" * 40, "tstamp": doc[0]["tstamp"],
                        "branch": "main", "runs": 2}]


def test_a_real_run_then_the_cli(repo):
    repo.write_script(
        """
        import flordb as flor
        lr = flor.arg("lr", 0.5)
        for epoch in flor.loop("epoch", range(2)):
            flor.log("acc", epoch + lr)
        """
    )
    repo.run_script("--kwargs", "lr=0.25")
    proc = repo.flordb("query", "--format", "csv", "SELECT epoch, acc, lr FROM proj")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["epoch,acc,lr", "0,0.25,0.25", "1,1.25,0.25"]
    proc = repo.flordb("runs", "--format", "json")
    [run] = json.loads(proc.stdout)
    assert run["status"] == "finished" and len(run["vid"]) == 40 and run["filename"] == "train.py"


def test_broken_pipe_is_quiet(data):
    proc = subprocess.run(
        f"'{PYTHON}' -m flordb query --no-backfill --format csv "
        "'SELECT * FROM range(200000)' | head -1",
        shell=True, cwd=data.path, capture_output=True, text=True, env=data.env(), check=False,
    )
    assert proc.stdout.strip() == "range"
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
