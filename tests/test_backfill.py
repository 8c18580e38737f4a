"""Backfilling SELECT across code versions (multiversion hindsight logging).

The history: four committed versions of a tiny torch training script (a
rename, an extracted helper, a moved evaluation), two runs of each; today's
script adds a per-step and a per-epoch ``flor.log``. A SELECT that names them
must return exactly what from-scratch runs of each version, with the
statements inserted by hand, log for the same arguments; compute only what the
WHERE clause lets through; and compute nothing twice.
"""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_training import (
    NUMPY_SCRIPT,
    VERSIONS,
    checkpointed_epochs,
    commit,
    copy_home,
    init_repo,
    per_epoch,
    per_step,
    repo_state,
    rows_of,
    run_env,
    run_many,
    run_script,
    script,
    values,
)

pytestmark = pytest.mark.slow

EPOCHS, STEPS = 4, 4
# Two runs of each version, told apart by their learning rate.
LRS = {v: (0.02 * v, 0.02 * v + 0.01) for v in range(1, len(VERSIONS) + 1)}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("backfill")
    repo = init_repo(base / "proj")
    home = base / "home"
    vids = {}
    for v, text in enumerate(VERSIONS, start=1):
        vids[v] = commit(repo, script(text), f"v{v}")
        run_many([(repo, home, (f"lr={lr}",)) for lr in LRS[v]])
    # Today's script: v4 plus the two statements, not committed yet.
    (repo / "train.py").write_text(script(VERSIONS[-1], step=per_step(4), epoch=per_epoch(4)))

    # Ground truth: every version with the statements inserted by hand, run from scratch.
    gt_repo = init_repo(base / "gt")
    gt_home = base / "gt-home"
    for v, text in enumerate(VERSIONS, start=1):
        (gt_repo / f"train_v{v}.py").write_text(script(text, step=per_step(v), epoch=per_epoch(v)))
    run_many([(gt_repo, gt_home, (f"lr={lr}",), f"train_v{v}.py")
              for v in LRS for lr in LRS[v]])
    gt = {n: values(gt_home, n) for n in ("grad_norm", "val_mae", "loss")}
    assert len(gt["val_mae"]) == 8 * EPOCHS and len(gt["grad_norm"]) == 8 * EPOCHS * STEPS
    assert values(home, "loss") == gt["loss"]  # the statements changed no computation
    assert all(c == list(range(EPOCHS)) for c in checkpointed_epochs(home).values())
    return SimpleNamespace(repo=repo, home=home, gt=gt, vids=vids)


@pytest.fixture
def project(history: SimpleNamespace, flordb_home: Path, monkeypatch: pytest.MonkeyPatch):
    copy_home(history.home, flordb_home)
    monkeypatch.chdir(history.repo)
    return history


def query(sql: str, backfill: bool = True) -> list[dict]:
    import flordb as flor

    frame = flor.query(sql, backfill=backfill)
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")


def keyed(records: list[dict], name: str, by: tuple[str, ...] | None = None
          ) -> dict[tuple, float]:
    """``(lr, epoch[, step]) -> value`` of the non-NULL values of ``name``.

    A per-epoch value repeats on each step row of a mixed query: pass
    ``by=("lr", "epoch")`` to check it is the same on all of them.
    """
    by = by or tuple(c for c in ("lr", "epoch", "step") if c in records[0])
    out: dict[tuple, float] = {}
    for r in records:
        if r[name] is None:
            continue
        key = tuple(r[c] for c in by)
        assert out.setdefault(key, r[name]) == r[name], f"two values at {key}"
    return out


def only(gt: dict, epochs=None, lrs=None) -> dict:
    return {k: v for k, v in gt.items()
            if (epochs is None or k[1] in epochs) and (lrs is None or k[0] in lrs)}


def backfilled(home: Path, name: str) -> list[tuple]:
    return rows_of(home, "SELECT DISTINCT run_id, i1 FROM logs WHERE name = ? "
                         "AND source = 'backfill' ORDER BY ALL", [name])


def plan_rows(err: str) -> list[list[str]]:
    """(needed, execute, restore) of every run in the printed plans."""
    return [[c.strip() for c in line.split("|")[2:5]]
            for line in err.splitlines() if line[:8].isdigit() and "|" in line]


def test_backfilling_select_across_four_versions(project, flordb_home, capsys):
    before = repo_state(project.repo)
    gt = project.gt
    everyone = [lr for v in LRS for lr in LRS[v]]

    # 1. --no-backfill answers with what is stored (the per-step loss only).
    rec = query("SELECT run_id, lr, epoch, step, loss FROM proj", backfill=False)
    assert keyed(rec, "loss") == gt["loss"]

    # 2. A per-step statement, one epoch: pushdown makes every run execute epoch 1 only.
    rec = query("SELECT run_id, lr, epoch, step, grad_norm FROM proj WHERE epoch = 1")
    assert keyed(rec, "grad_norm") == only(gt["grad_norm"], epochs={1})
    assert {i for _, i in backfilled(flordb_home, "grad_norm")} == {1}
    err = capsys.readouterr().err
    assert plan_rows(err) == [["1", "1", "0"]] * 8, err

    # 3. The per-epoch statement for some runs (run-level pushdown): restored, not executed.
    rec = query("SELECT lr, epoch, val_mae FROM proj WHERE lr < 0.065 ORDER BY lr, epoch")
    low = [lr for lr in everyone if lr < 0.065]
    assert keyed(rec, "val_mae") == only(gt["val_mae"], lrs=low)
    err = capsys.readouterr().err
    assert plan_rows(err) == [["4", "0", "4"]] * len(low), err

    # 4. Both statements, no predicate: the rest of every run, nothing twice.
    sql = "SELECT run_id, vid, lr, epoch, step, loss, grad_norm, val_mae FROM proj"
    rec = query(sql)
    assert keyed(rec, "grad_norm") == gt["grad_norm"]
    assert keyed(rec, "val_mae", by=("lr", "epoch")) == gt["val_mae"]  # on each step row...
    assert len(rec) == 8 * EPOCHS * STEPS
    assert values(flordb_home, "grad_norm") == gt["grad_norm"]  # ...stored once
    assert values(flordb_home, "val_mae") == gt["val_mae"]
    assert rows_of(flordb_home, "SELECT DISTINCT flag FROM logs") == [(None,)]
    capsys.readouterr()

    # 5. The same query again replays nothing.
    count = rows_of(flordb_home, "SELECT count(*) FROM logs")[0][0]
    start = time.perf_counter()
    again = query(sql)
    seconds = time.perf_counter() - start
    assert again == rec
    assert rows_of(flordb_home, "SELECT count(*) FROM logs")[0][0] == count
    assert "plan" not in capsys.readouterr().err
    assert seconds < 5, f"a query with nothing to backfill took {seconds:.1f} s"

    # Four code versions took part, and the user's repository never moved.
    assert len({r["vid"] for r in rec}) == 4
    assert repo_state(project.repo) == before


def test_cli_query_backfills_one_run_and_no_backfill_does_not(project, flordb_home):
    lr = LRS[2][1]  # one run of v2
    sql = f"SELECT lr, epoch, val_mae FROM proj WHERE lr = {lr} AND epoch >= 2"
    env = run_env(flordb_home)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flordb", "query", *args], cwd=project.repo,
                              env=env, capture_output=True, text=True, timeout=300,
                              check=False)

    proc = cli(sql, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "lr,epoch,val_mae"
    got = {(float(a), int(e)): float(v) for a, e, v in (line.split(",") for line in lines[1:])}
    assert got == only(project.gt["val_mae"], epochs={2, 3}, lrs={lr})
    assert "backfill plan for 1 run(s)" in proc.stderr
    assert {i for _, i in backfilled(flordb_home, "val_mae")} == {2, 3}

    # The other epochs are not stored: --no-backfill answers NULL and computes nothing.
    proc = cli(sql.replace("epoch >= 2", "epoch < 2"), "--no-backfill", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert [line.split(",")[2] for line in proc.stdout.strip().splitlines()[1:]] == ["", ""]
    assert {i for _, i in backfilled(flordb_home, "val_mae")} == {2, 3}


# ------------------------------------------------------------------ refusals
VAL = [
    "xv = np.random.randn(16, dim)",
    "yv = xv @ np.linspace(-2.0, 3.0, dim)",
]
VAL_MSE = 'flor.log("val_mse", float(np.mean((xv @ w - yv) ** 2)))'


def with_validation(text: str) -> str:
    return text.replace("w = np.zeros(dim)\n", "w = np.zeros(dim)\n" + "\n".join(VAL) + "\n")


def test_a_version_that_cannot_take_the_statement_stays_null(
    tmp_path: Path, flordb_home: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    repo = init_repo(tmp_path / "nproj")
    monkeypatch.chdir(repo)
    commit(repo, script(NUMPY_SCRIPT), "no validation set yet")
    run_script(repo, flordb_home, "lr=0.1")
    commit(repo, with_validation(script(NUMPY_SCRIPT)), "validation set")
    run_script(repo, flordb_home, "lr=0.2")
    (repo / "train.py").write_text(with_validation(script(NUMPY_SCRIPT, epoch=VAL_MSE)))
    run_script(repo, tmp_path / "gt-home", "lr=0.2")
    old = rows_of(flordb_home, "SELECT run_id FROM args WHERE name = 'lr' AND num = 0.1")[0][0]
    before = repo_state(repo)

    rec = query("SELECT run_id, lr, epoch, val_mse FROM nproj")

    assert keyed(rec, "val_mse") == values(tmp_path / "gt-home", "val_mse")
    assert [r["val_mse"] for r in rec if r["lr"] == 0.1] == [None] * EPOCHS
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if old in line and "warning" in line]
    assert warning and "xv" in warning[0], err
    assert repo_state(repo) == before
    assert not any(math.isnan(v) for v in keyed(rec, "val_mse").values())
