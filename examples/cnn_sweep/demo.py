"""A hyper-parameter sweep recorded with flordb: a small CNN with a cosine LR
schedule, one run per learning rate, compared in SQL and plotted; then one
epoch of every run is replayed from its checkpoint to add a per-step metric.

    python examples/cnn_sweep/demo.py            # everything in a temp directory
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LEARNING_RATES = ("0.01", "0.03", "0.1")
ANCHOR = "            loss.backward()\n"
NEW_LINE = (
    '            flor.log("grad_norm", '
    "torch.stack([p.grad.norm() for p in model.parameters()]).norm().item())\n"
)


def sh(*cmd: str, cwd: Path, env: dict[str, str]) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="flordb-sweep-"))
    project = work / "cnn-sweep"
    project.mkdir()
    shutil.copy(HERE / "train.py", project / "train.py")
    env = {**os.environ, "FLORDB_HOME": str(work / "home")}
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(git + ["add", "train.py"], cwd=project, check=True)
    subprocess.run(git + ["commit", "-qm", "CNN on digits"], cwd=project, check=True)
    print(f"demo project: {project}\nFLORDB_HOME: {env['FLORDB_HOME']}")

    py = sys.executable
    flordb = [py, "-m", "flordb"]
    # 1. The sweep: one run per learning rate, same code version.
    for lr in LEARNING_RATES:
        sh(py, "train.py", "--kwargs", f"lr={lr}", cwd=project, env=env)
    # 2. Compare the runs in SQL: final and best validation accuracy, and when.
    sh(*flordb, "query",
       "SELECT lr, arg_max(val_acc, epoch) AS final_acc, max(val_acc) AS best_acc, "
       'arg_max(epoch, val_acc) AS best_epoch FROM "cnn-sweep" GROUP BY lr ORDER BY lr',
       cwd=project, env=env)
    # ... and per epoch, side by side (PIVOT is DuckDB SQL).
    sh(*flordb, "query",
       'PIVOT (SELECT lr, epoch, val_acc FROM "cnn-sweep") ON lr USING first(val_acc) '
       "ORDER BY epoch", cwd=project, env=env)
    # 3. Plot the curves, one line per learning rate.
    plot = work / "val_acc.png"
    sh(*flordb, "plot", "val_acc", "--x", "epoch", "--by", "lr", "-o", str(plot),
       cwd=project, env=env)
    # 4. Hindsight: the gradient norm at every step of the last epoch. Add one line
    # inside the step loop ...
    source = (project / "train.py").read_text()
    assert ANCHOR in source
    (project / "train.py").write_text(source.replace(ANCHOR, ANCHOR + NEW_LINE))
    print(f"\n# added to train.py:\n{NEW_LINE}")
    # ... and ask for it: each run restores model, optimizer, LR scheduler and RNG
    # states as they were after epoch 4 and re-executes epoch 5 only.
    sh(*flordb, "query",
       "SELECT lr, avg(grad_norm) AS mean_grad_norm, max(grad_norm) AS max_grad_norm, "
       'avg(loss) AS mean_loss FROM "cnn-sweep" WHERE epoch = 5 GROUP BY lr ORDER BY lr',
       cwd=project, env=env)
    # The replayed epoch recomputed every loss it had recorded: none differs.
    sh(*flordb, "query",
       "SELECT source, count(*) AS records, count(flag) AS flagged FROM logs "
       "GROUP BY source ORDER BY source", cwd=project, env=env)
    print(f"\nDone. Plot: {plot}\nExplore with: FLORDB_HOME={env['FLORDB_HOME']} flordb shell")


if __name__ == "__main__":
    main()
