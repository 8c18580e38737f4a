"""Hindsight replay (``flor.replay`` / ``flordb replay``) against ground truth.

Every expected value comes from a from-scratch run of the hand-instrumented
script with the same arguments (in its own FLORDB_HOME), and replayed values
must equal it bit for bit. The recorded runs are made once per module; each
test replays on a private copy of their FLORDB_HOME.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_training import (
    GNORM,
    NUMPY_SCRIPT,
    TORCH_SCRIPT,
    WNORM,
    checkpointed_epochs,
    commit,
    copy_home,
    init_repo,
    repo_state,
    rows_of,
    run_env,
    run_many,
    run_script,
    script,
    values,
)

pytestmark = pytest.mark.slow

LRS = (0.05, 0.1)
EPOCHS = 4
STEPS = 4  # len(x) // 32 in TORCH_SCRIPT


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two recorded runs of TORCH_SCRIPT; today's script logs WNORM and GNORM too.

    ``gt`` holds what from-scratch runs of today's script log for the same args.
    """
    base = tmp_path_factory.mktemp("replay")
    repo = init_repo(base / "proj")
    commit(repo, script(TORCH_SCRIPT), "v1")
    home, gt_home = base / "home", base / "gt-home"
    run_many([(repo, home, (f"lr={lr}",)) for lr in LRS])
    # Today's script: the user adds two statements to the working tree.
    (repo / "train.py").write_text(script(TORCH_SCRIPT, step=GNORM, epoch=WNORM))
    run_many([(repo, gt_home, (f"lr={lr}",)) for lr in LRS])
    gt = {name: values(gt_home, name) for name in ("wnorm", "gnorm", "val_loss", "loss")}
    assert len(gt["wnorm"]) == len(LRS) * EPOCHS
    assert len(gt["gnorm"]) == len(LRS) * EPOCHS * STEPS
    ckpts = checkpointed_epochs(home)
    assert sorted(map(len, ckpts.values())) == [EPOCHS] * len(LRS), ckpts
    # The replays must reproduce what was recorded, too.
    assert values(home, "val_loss") == gt["val_loss"]
    return SimpleNamespace(repo=repo, home=home, gt=gt, run_ids=sorted(ckpts))


@pytest.fixture
def replayed(recorded: SimpleNamespace, flordb_home: Path, monkeypatch: pytest.MonkeyPatch):
    """The recorded runs in this test's own FLORDB_HOME; cwd is the repository."""
    copy_home(recorded.home, flordb_home)
    monkeypatch.chdir(recorded.repo)
    return recorded


def replay(names, **kwargs):  # type: ignore[no-untyped-def]
    from flordb.hindsight.replay import replay as run

    return run(names, **kwargs)


def only(gt: dict, *, epoch: int | None = None, lr: float | None = None) -> dict:
    return {k: v for k, v in gt.items()
            if (epoch is None or k[1] == epoch) and (lr is None or k[0] == lr)}


def replay_rows(home: Path, name: str) -> list[tuple]:
    return rows_of(home, "SELECT run_id, i1, i2, source, flag FROM logs WHERE name = ? "
                         "ORDER BY run_id, i1, i2", [name])


# ------------------------------------------------------------------ outer loop
def test_outer_statement_restores_checkpoints_and_matches_scratch(replayed, flordb_home, capsys):
    """A per-epoch statement after the inner loop: every epoch restored, none executed,
    values bit-for-bit those of an instrumented from-scratch run."""
    report = replay(["wnorm"], workers=1)

    assert report.executed == 0
    assert report.restored == len(LRS) * EPOCHS
    assert report.failures == [] and report.mismatches == [] and report.skipped == []
    assert values(flordb_home, "wnorm") == replayed.gt["wnorm"]
    assert {r[3:] for r in replay_rows(flordb_home, "wnorm")} == {("replay", None)}
    err = capsys.readouterr().err
    plan = [line.split("|") for line in err.splitlines() if line.startswith(tuple(replayed.run_ids))]
    assert [[c.strip() for c in row[2:5]] for row in plan] == [["4", "0", "4"]] * len(LRS)
    assert "0 iteration(s) executed, 8 restored" in err


# ------------------------------------------------------------------ inner loop
def test_inner_statement_where_epoch_then_the_rest_then_nothing(replayed, flordb_home):
    """``--where "epoch = 2"`` executes epoch 2 only; a second replay computes just what
    is missing; a third computes nothing."""
    first = replay(["gnorm"], where="epoch = 2", workers=1)
    assert (first.runs, first.executed, first.restored) == (len(LRS), len(LRS), 0)
    assert {r[1] for r in replay_rows(flordb_home, "gnorm")} == {2}
    assert values(flordb_home, "gnorm") == only(replayed.gt["gnorm"], epoch=2)
    assert first.mismatches == []  # `loss` of epoch 2 was re-executed and checked

    second = replay(["gnorm"], workers=1)
    assert second.executed == len(LRS) * (EPOCHS - 1)  # 0, 1 and 3: epoch 2 is there
    assert values(flordb_home, "gnorm") == replayed.gt["gnorm"]  # no duplicates either

    count = rows_of(flordb_home, "SELECT count(*) FROM logs")[0][0]
    third = replay(["gnorm"], workers=1)
    assert (third.runs, third.executed, third.restored) == (0, 0, 0)
    assert rows_of(flordb_home, "SELECT count(*) FROM logs")[0][0] == count


def test_two_workers_split_each_run_and_equal_one_worker(replayed, flordb_home, monkeypatch):
    from flordb.hindsight import plan

    # These runs are far too short to be worth splitting; pretend workers start instantly.
    monkeypatch.setattr(plan, "WORKER_START_SECONDS", 1e-4)
    report = replay(["gnorm"], workers=2)

    assert report.executed >= len(LRS) * EPOCHS and report.failures == []
    segments = rows_of(
        flordb_home,
        "SELECT run_id, count(*) FROM segments WHERE segment LIKE '%.replay-%' GROUP BY run_id",
    )
    assert sorted(n for _, n in segments) == [2] * len(LRS)  # each run split over 2 workers
    # One worker gives the ground truth (previous test); so do two.
    assert values(flordb_home, "gnorm") == replayed.gt["gnorm"]
    assert report.mismatches == []


# ------------------------------------------------------------------ isolation
def test_cli_replay_leaves_the_repository_untouched(replayed, flordb_home):
    repo = replayed.repo
    # A user mid-work: a staged edit, an untracked file, an ignored file.
    (repo / "NOTES.md").write_text("staged\n")
    subprocess.run(["git", "add", "NOTES.md"], cwd=repo, check=True)
    (repo / "scratch.txt").write_text("untracked\n")
    (repo / "run.log").write_text("ignored\n")
    try:
        before = repo_state(repo)
        proc = subprocess.run(
            [sys.executable, "-m", "flordb", "replay", "wnorm", "gnorm", "--where",
             "lr = 0.1 AND epoch = 3", "--workers", "1"],
            cwd=repo, env=run_env(flordb_home), capture_output=True, text=True, timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert repo_state(repo) == before
    finally:
        subprocess.run(["git", "rm", "-q", "--cached", "NOTES.md"], cwd=repo, check=True)
        for name in ("NOTES.md", "scratch.txt", "run.log"):
            (repo / name).unlink()
    assert "replay plan for 1 run(s)" in proc.stderr
    assert values(flordb_home, "wnorm") == only(replayed.gt["wnorm"], lr=0.1, epoch=3)
    assert values(flordb_home, "gnorm") == only(replayed.gt["gnorm"], lr=0.1, epoch=3)
    # The private checkout is gone too.
    assert not list((flordb_home / "replay").glob("*"))


# ------------------------------------------------------------------ executors
def test_ray_executor_gives_the_same_values(replayed, flordb_home):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    try:
        report = replay(["wnorm"], where="lr = 0.1", executor="ray")
    finally:
        ray.shutdown()
    assert report.failures == [] and report.restored == EPOCHS
    assert values(flordb_home, "wnorm") == only(replayed.gt["wnorm"], lr=0.1)


# ------------------------------------------------------------------ small numpy runs
WSUM = 'flor.log("wsum", float(w.sum()))'


@pytest.fixture
def numpy_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = init_repo(tmp_path / "nproj")
    monkeypatch.chdir(repo)
    return repo


def test_outer_statement_after_a_missing_checkpoint(numpy_repo, flordb_home, tmp_path):
    """Epoch 1 has no checkpoint (its write failed): it runs from epoch 0's state, the
    other epochs are restored. Restored epoch 0 ran its body (a random permutation)
    on top of the restored state, so epoch 1 must restore epoch 0 again first."""
    from flordb.store.store import Store

    commit(numpy_repo, script(NUMPY_SCRIPT), "v1")
    # Every checkpoint a keyframe, as after a failed write, so one can go missing.
    run_script(numpy_repo, flordb_home, env={"FLORDB_KEYFRAME_EVERY": "1"})
    (numpy_repo / "train.py").write_text(script(NUMPY_SCRIPT, epoch=WSUM))
    run_script(numpy_repo, tmp_path / "gt-home")
    with Store(flordb_home).connect(write=True) as con:
        con.execute("UPDATE checkpoints SET status = 'failed', digest = NULL WHERE iteration = 1")

    report = replay(["wsum"], workers=1)

    assert (report.executed, report.restored) == (1, EPOCHS - 1)
    assert report.mismatches == [] and report.failures == []
    assert values(flordb_home, "wsum") == values(tmp_path / "gt-home", "wsum")


def test_fresh_interpreter_workers_equal_forked_ones(numpy_repo, flordb_home, tmp_path, monkeypatch):
    """Workers normally fork from a warm zygote; FLORDB_REPLAY_FORK=0 starts each one
    as a plain ``python train.py``. Both give the from-scratch values."""
    commit(numpy_repo, script(NUMPY_SCRIPT), "v1")
    run_script(numpy_repo, flordb_home, "lr=0.1")
    run_script(numpy_repo, flordb_home, "lr=0.2")
    (numpy_repo / "train.py").write_text(script(NUMPY_SCRIPT, step=WSUM))
    run_many([(numpy_repo, tmp_path / "gt-home", (f"lr={lr}",)) for lr in (0.1, 0.2)])
    gt = values(tmp_path / "gt-home", "wsum")

    replay(["wsum"], where="lr = 0.1", workers=2)
    monkeypatch.setenv("FLORDB_REPLAY_FORK", "0")
    replay(["wsum"], where="lr = 0.2", workers=2)

    assert values(flordb_home, "wsum") == gt


def test_fidelity_mismatch_is_detected_and_flagged(numpy_repo, flordb_home, capsys):
    """The script logs an unseeded random number: replay flags the run's replayed rows
    and names the run, the statement and the iteration."""
    noisy = ["random.seed()  # unseeded: differs on every execution",
             'flor.log("noise", random.random())']
    text = script(NUMPY_SCRIPT, epoch=noisy).replace("import time\n", "import random\nimport time\n")
    commit(numpy_repo, text, "noisy")
    run_script(numpy_repo, flordb_home)
    (numpy_repo / "train.py").write_text(
        script(NUMPY_SCRIPT, epoch=[*noisy, WSUM]).replace("import time\n", "import random\nimport time\n")
    )
    (run_id,) = [r[0] for r in rows_of(flordb_home, "SELECT run_id FROM runs")]

    report = replay(["wsum"], workers=1)

    assert report.mismatches, "nondeterminism went unnoticed"
    assert {(m["run_id"], m["name"]) for m in report.mismatches} == {(run_id, "noise")}
    assert sorted(m["iteration"] for m in report.mismatches) == list(range(EPOCHS))
    flags = rows_of(flordb_home, "SELECT DISTINCT flag FROM logs WHERE name = 'wsum'")
    assert flags == [("mismatch",)]
    err = capsys.readouterr().err
    assert f"run {run_id} noise at epoch|0" in err and "flagged 'mismatch'" in err


def test_a_crashing_run_is_reported_and_the_others_get_values(numpy_repo, flordb_home, tmp_path):
    import numpy as np

    commit(numpy_repo, script(NUMPY_SCRIPT), "v1")
    extra = tmp_path / "extra.npy"  # a data file outside the repository...
    np.save(extra, np.full((64, 4), 0.5))
    run_script(numpy_repo, flordb_home, "lr=0.1")
    run_script(numpy_repo, flordb_home, "lr=0.2", f"data={extra}")
    extra.unlink()  # ...that is gone by the time of the replay
    (numpy_repo / "train.py").write_text(script(NUMPY_SCRIPT, epoch=WSUM))
    failing = rows_of(flordb_home, "SELECT run_id FROM args WHERE name = 'lr' AND num = 0.2")[0][0]

    report = replay(["wsum"], workers=2)

    assert [run for run, _ in report.failures] == [failing]
    assert "No such file" in report.failures[0][1] or "FileNotFound" in report.failures[0][1]
    got = values(flordb_home, "wsum")
    assert sorted(got) == [(0.1, e) for e in range(EPOCHS)]


def test_lc_checkpoints_make_values_approximate(numpy_repo, flordb_home):
    commit(numpy_repo, script(NUMPY_SCRIPT), "v1")
    # lc stores deltas of float arrays of 1024+ elements lossily
    run_script(numpy_repo, flordb_home, "dim=1500", "lr=0.001", env={"FLORDB_CODEC": "lc"})
    (numpy_repo / "train.py").write_text(script(NUMPY_SCRIPT, epoch=WSUM))
    (run_id,) = [r[0] for r in rows_of(flordb_home, "SELECT run_id FROM runs")]

    report = replay(["wsum"], workers=1)

    assert report.approximate == [run_id]
    flags = rows_of(flordb_home, "SELECT DISTINCT flag FROM logs WHERE name = 'wsum'")
    assert flags == [("approximate",)]
    assert len(values(flordb_home, "wsum")) == EPOCHS
