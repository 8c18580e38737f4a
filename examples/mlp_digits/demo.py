"""flordb end to end: record two runs, query them, then add a flor.log line and
ask for it in SQL — flordb backfills it for the past runs from their checkpoints.

    python examples/mlp_digits/demo.py            # everything in a temp directory
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW_LINE = '        flor.log("val_loss", loss_fn(model(val_X), val_y).item())\n'


def sh(*cmd: str, cwd: Path, env: dict[str, str]) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="flordb-demo-"))
    project = work / "digits-demo"
    project.mkdir()
    shutil.copy(HERE / "train.py", project / "train.py")
    env = {**os.environ, "FLORDB_HOME": str(work / "home")}
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(git + ["add", "train.py"], cwd=project, check=True)
    subprocess.run(git + ["commit", "-qm", "MLP on digits"], cwd=project, check=True)
    print(f"demo project: {project}\nFLORDB_HOME: {env['FLORDB_HOME']}")

    py = sys.executable
    flordb = [py, "-m", "flordb"]
    # 1. Record: two runs of a small sweep.
    for lr in ("0.05", "0.1"):
        sh(py, "train.py", "--kwargs", f"lr={lr}", "epochs=6", cwd=project, env=env)
    # 2. Query: one row per run and epoch.
    sh(*flordb, "query",
       'SELECT run_id, lr, epoch, val_acc, avg(loss) AS mean_loss FROM "digits-demo" '
       "GROUP BY ALL ORDER BY run_id, epoch", cwd=project, env=env)
    # 3. Hindsight: we now want the validation loss too. Add one line ...
    source = (project / "train.py").read_text()
    anchor = '        flor.log("val_acc", acc)\n'
    (project / "train.py").write_text(source.replace(anchor, anchor + NEW_LINE))
    print(f"\n# added to train.py:\n{NEW_LINE}")
    # ... and ask for it: the SELECT backfills both past runs, restoring checkpoints.
    sh(*flordb, "query",
       'SELECT run_id, lr, epoch, val_acc, val_loss FROM "digits-demo" ORDER BY run_id, epoch',
       cwd=project, env=env)
    # 4. Asking again replays nothing: the backfilled values are stored.
    sh(*flordb, "query",
       'SELECT lr, max(val_acc) AS best_acc, min(val_loss) AS best_val_loss '
       'FROM "digits-demo" GROUP BY lr ORDER BY lr', cwd=project, env=env)
    sh(*flordb, "query",
       "SELECT run_id, count(DISTINCT iteration) AS checkpoints, sum(raw_bytes) AS raw_bytes, "
       "sum(stored_bytes) AS stored_bytes FROM checkpoints GROUP BY run_id ORDER BY run_id",
       cwd=project, env=env)
    print(f"\nDone. Explore with: FLORDB_HOME={env['FLORDB_HOME']} flordb shell")


if __name__ == "__main__":
    main()
