"""flordb without torch: scikit-learn's SGDClassifier.partial_fit on digits, its
numpy arrays checkpointed, two runs compared in SQL, then a metric added in
hindsight and backfilled for the last two epochs of both runs.

    python examples/sklearn_sgd/demo.py            # everything in a temp directory
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANCHOR = '        flor.log("val_acc", clf.score(val_X, val_y))\n'
NEW_LINE = (
    '        flor.log("val_loss", log_loss(val_y, clf.predict_proba(val_X), labels=classes))\n'
)


def sh(*cmd: str, cwd: Path, env: dict[str, str]) -> None:
    print(f"\n$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="flordb-sklearn-"))
    project = work / "sgd-digits"
    project.mkdir()
    shutil.copy(HERE / "train.py", project / "train.py")
    env = {**os.environ, "FLORDB_HOME": str(work / "home")}
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(git + ["add", "train.py"], cwd=project, check=True)
    subprocess.run(git + ["commit", "-qm", "SGDClassifier on digits"], cwd=project, check=True)
    print(f"demo project: {project}\nFLORDB_HOME: {env['FLORDB_HOME']}")

    py = sys.executable
    flordb = [py, "-m", "flordb"]
    # 1. Record two runs with different step sizes.
    for eta0 in ("0.01", "0.05"):
        sh(py, "train.py", "--kwargs", f"eta0={eta0}", cwd=project, env=env)
    # 2. Compare them in SQL: validation accuracy per epoch, mean batch accuracy.
    sh(*flordb, "query",
       'SELECT eta0, epoch, val_acc, avg(train_acc) AS train_acc FROM "sgd-digits" '
       "GROUP BY ALL ORDER BY eta0, epoch", cwd=project, env=env)
    # The checkpoints are plain numpy arrays (plus the Generator that shuffles).
    sh(*flordb, "query",
       "SELECT object, count(*) AS checkpoints, sum(raw_bytes) AS raw_bytes, "
       "sum(stored_bytes) AS stored_bytes FROM checkpoints GROUP BY object ORDER BY object",
       cwd=project, env=env)
    # 3. Hindsight: we want the validation log-loss too. Add one line ...
    source = (project / "train.py").read_text()
    assert ANCHOR in source
    (project / "train.py").write_text(source.replace(ANCHOR, ANCHOR + NEW_LINE))
    print(f"\n# added to train.py:\n{NEW_LINE}")
    # ... and ask for the last two epochs: each run restores coef_, intercept_ and
    # the Generator as they were after epoch 5 and replays epochs 6 and 7 only.
    sh(*flordb, "query",
       'SELECT eta0, epoch, val_acc, val_loss FROM "sgd-digits" WHERE epoch >= 6 '
       "ORDER BY eta0, epoch", cwd=project, env=env)
    # Replay re-checks every value it recomputes; no row is flagged as a mismatch.
    sh(*flordb, "query",
       "SELECT source, count(*) AS records, count(flag) AS flagged FROM logs "
       "GROUP BY source ORDER BY source", cwd=project, env=env)
    print(f"\nDone. Explore with: FLORDB_HOME={env['FLORDB_HOME']} flordb shell")


if __name__ == "__main__":
    main()
