"""A backfilling SELECT versus re-running the affected runs from scratch.

    python bench/backfill.py [--epochs 6] [--n 96000] [--workers 2]

History: two committed versions of the training script of ``bench/replay.py``
(v2 renames ``net`` to ``model``), two recorded runs of each. Today's script
adds a per-epoch ``val_acc``. Measured in one run, side by side:

* backfill: ``flordb query "SELECT run_id, epoch, val_acc FROM benchproj"``
  end to end (it propagates the statement into both versions, restores every
  epoch's checkpoint, runs only the code after the inner loop);
* scratch: the four runs, each its own version with the statement inserted by
  hand, run with the same arguments, ``--workers`` at a time;
* the same SELECT again (nothing left to compute).

The two must give the same values bit for bit. Target: backfill >= 3x faster.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay import CPU, PYTHON, _children_cpu, git, machine, script, timed


def version(v: int, epoch: bool = False) -> str:
    text = script(epoch=epoch)
    return text if v == 1 else text.replace("net", "model")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n", type=int, default=96000, help="training examples (epoch length)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    E, W = args.epochs, args.workers
    runs = [(1, 0.05), (1, 0.04), (2, 0.03), (2, 0.02)]  # (version, lr)
    root = Path(tempfile.mkdtemp(prefix="flordb-bench-backfill-"))
    try:
        repo, home, gt = root / "benchproj", root / "home", root / "scratch"
        repo.mkdir()
        gt.mkdir()
        git(repo, "init", "-q")
        print(f"machine: {machine()}", file=sys.stderr)

        def kwargs(lr: float) -> list[str]:
            return ["--kwargs", f"epochs={E}", f"n={args.n}", f"lr={lr}"]

        pool = ThreadPoolExecutor(W)
        for v in (1, 2):
            (repo / "train.py").write_text(version(v))
            git(repo, "add", "train.py")
            git(repo, "commit", "-q", "-m", f"v{v}")
            list(pool.map(lambda lr: timed([PYTHON, "train.py", *kwargs(lr)], repo, home),
                          [lr for rv, lr in runs if rv == v]))
        (repo / "train.py").write_text(version(2, epoch=True))

        # Scratch: every affected run again, its version with the statement by hand.
        for v in (1, 2):
            (gt / f"train_v{v}.py").write_text(version(v, epoch=True))
        subprocess.run(["git", "init", "-q"], cwd=gt, check=True)
        start, cpu = time.perf_counter(), _children_cpu()
        list(pool.map(lambda r: timed([PYTHON, f"train_v{r[0]}.py", *kwargs(r[1])], gt,
                                      root / "scratch-home"), runs))
        t_scratch, cpu_scratch = time.perf_counter() - start, _children_cpu() - cpu

        sql = "SELECT run_id, lr, epoch, val_acc FROM benchproj ORDER BY lr, run_id, epoch"
        query = [PYTHON, "-m", "flordb", "query", sql, "--format", "json"]
        t_backfill, err = timed(query, repo, home)
        cpu_backfill = CPU["last"]
        t_again, err_again = timed(query, repo, home)
        plan = [line for line in err.splitlines() if "done:" in line]

        import duckdb

        def by_lr(h: Path) -> dict:
            """(lr, epoch) -> val_acc; each run has its own lr."""
            con = duckdb.connect(str(h / "flordb.duckdb"), read_only=True)
            try:
                return {(lr, i): v for lr, i, v in con.execute(
                    "SELECT a.num, l.i1, l.num FROM logs l JOIN args a ON a.run_id = l.run_id "
                    "AND a.name = 'lr' WHERE l.name = 'val_acc'").fetchall()}
            finally:
                con.close()

        got = by_lr(home)
        same = got == by_lr(root / "scratch-home") and len(got) == len(runs) * E
    finally:
        shutil.rmtree(root, ignore_errors=True)

    speedup = t_scratch / t_backfill
    print(f"{len(runs)} runs of 2 versions, {E} epochs each (n={args.n}), {W} workers")
    print(f"{'':<42} {'seconds':>8} {'CPU s':>7}")
    print(f"{'re-run the affected runs from scratch':<42} {t_scratch:8.1f} {cpu_scratch:7.1f}")
    print(f"{'backfilling SELECT (per-epoch val_acc)':<42} {t_backfill:8.1f} {cpu_backfill:7.1f}   "
          f"{speedup:.1f}x faster (target 3.0x), {cpu_scratch / cpu_backfill:.1f}x less CPU"
          f"{'' if speedup >= 3 else '  <- MISSED'}")
    print(f"{'the same SELECT again':<42} {t_again:8.1f}   "
          f"{'nothing replayed' if 'plan' not in err_again else 'REPLAYED AGAIN'}")
    print(f"values: {'bit-identical' if same else 'DIFFERENT'}; {plan[0].split(': ', 1)[-1] if plan else ''}")
    print(f"machine after: load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0 if speedup >= 3 and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
