"""Overhead of hands-free recording (``flordb run``) against the plain script.

    python bench/handsfree.py [--reps 7] [--epochs 6] [--threads 1]

(a) One training workload, three ways, side by side in one temporary git
    repository; the order rotates every repetition, so drift in machine load
    hits all three alike:

    * ``plain``: ``python train.py``, an MLP (0.8 M parameters, Adam, StepLR) on
      synthetic data, printing each epoch's loss; no flordb anywhere;
    * ``handsfree``: ``flordb run train.py``, the same file;
    * ``explicit``: ``python train_flor.py``, the same script written against the
      API (``flor.checkpointing``, ``flor.loop`` on both loops, ``flor.log`` of the
      loss it prints).

    Each script times its own training loop (first epoch to last, the checkpoints
    taken at epoch ends included), in wall time and in main-thread CPU time, and
    prints both last. Also measured: the whole process (start-up, the git
    snapshot of the code, the end-of-run ingest into DuckDB), in wall time and in
    CPU time of all its threads. Overheads are medians over repetitions of each
    repetition's ratio to ``plain``; the minimum (the least disturbed run) is
    shown too. The target is the checkpointing bound ε (``FLORDB_EPSILON``,
    default 1/15) on the training loop's wall time. Every run must print the same
    losses.

(b) What the instrumentation itself costs per inner iteration: an empty nested
    loop (``--steps`` iterations per epoch) plain and under ``flordb run``.

Exit status 1 when hands-free recording is over ε or a run printed other losses.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import machine

PLAIN = '''
import argparse
import time

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
x = torch.randn(8192, 256)
y = (x[:, :10] * 3).argmax(1)
model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(),
                      nn.Linear(512, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)

start, start_cpu = time.perf_counter(), time.thread_time()
for epoch in range(args.epochs):
    perm = torch.randperm(len(x))
    total = 0.0
    for step in range(len(x) // 128):
        idx = perm[step * 128:(step + 1) * 128]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    scheduler.step()
    print("epoch", epoch, "loss", repr(total))
print("TIMES", time.perf_counter() - start, time.thread_time() - start_cpu)
'''

START = "start, start_cpu = time.perf_counter(), time.thread_time()\n"


def explicit(plain: str) -> str:
    """``plain`` written against the API: identical arithmetic, identical output."""
    head, loop = plain.split(START)
    loop, tail = loop.split('print("TIMES"')
    loop = (
        loop.replace("for epoch in range(args.epochs):",
                     "for epoch in flor.loop('epoch', range(epochs)):")
        .replace("for step in range(len(x) // 128):",
                 "for step in flor.loop('step', range(len(x) // 128)):")
        .replace("repr(total)", 'repr(flor.log("loss", total))')
    )
    return (
        head.replace("import torch\n", "import torch\nimport flordb as flor\n", 1)
        + 'epochs = flor.arg("epochs", args.epochs)  # the run starts here, as hands-free\'s\n'
        + START
        + "with flor.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler):\n"
        + textwrap.indent(loop, "    ")
        + 'print("TIMES"' + tail
    )


EXPLICIT = explicit(PLAIN)

# (b): nothing but the loops; hands-free picks them as the loop with a nested loop.
EMPTY = '''
import sys
import time

steps = int(sys.argv[1])
start, start_cpu = time.perf_counter(), time.thread_time()
for epoch in range(5):
    for step in range(steps):
        pass
print("TIMES", time.perf_counter() - start, time.thread_time() - start_cpu)
'''

VARIANTS = ("plain", "handsfree", "explicit")
MEASURES = (
    ("loop", "training loop, wall"),
    ("loop_cpu", "training loop, main-thread CPU"),
    ("process", "whole process, wall"),
    ("process_cpu", "whole process, CPU all threads"),
)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com",
                    "-c", "commit.gpgsign=false", *args], cwd=repo, check=True,
                   capture_output=True)


def command(variant: str, script: str, argv: list[str]) -> list[str]:
    if variant == "handsfree":
        return [sys.executable, "-m", "flordb", "run", script, *argv]
    return [sys.executable, script, *argv]


def run_once(variant: str, script: str, repo: Path, env: dict[str, str], argv: list[str]
             ) -> tuple[dict[str, float], list[str]]:
    """The four times of one run, and the lines it printed before them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command(variant, script, argv), cwd=repo, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} {script} failed ({proc.returncode}):\n{proc.stderr}")
    lines = proc.stdout.splitlines()
    _, loop, loop_cpu = lines[-1].split()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ({"loop": float(loop), "loop_cpu": float(loop_cpu), "process": wall,
             "process_cpu": cpu}, lines[:-1])


def overhead(runs: list[dict[str, float]], plain: list[dict[str, float]], key: str) -> float:
    """Median over repetitions of a variant's time relative to plain's, minus one."""
    return statistics.median(r[key] / p[key] - 1 for r, p in zip(runs, plain, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--steps", type=int, default=100_000, help="(b): iterations per epoch")
    args = parser.parse_args()
    argv = ["--epochs", str(args.epochs), "--threads", str(args.threads)]
    epsilon = 1 / 15  # FLORDB_EPSILON's default
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "bench"
        repo.mkdir()
        (repo / "train.py").write_text(PLAIN.lstrip())
        (repo / "train_flor.py").write_text(EXPLICIT.lstrip())
        (repo / "empty.py").write_text(EMPTY.lstrip())
        git(repo, "init", "-q")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", "workload")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLORDB_")}
        env.update(FLORDB_HOME=str(Path(tmp) / "home"), FLORDB_QUIET="1")
        if os.environ.get("FLORDB_EPSILON"):
            from flordb import settings

            env["FLORDB_EPSILON"] = os.environ["FLORDB_EPSILON"]
            epsilon = float(settings.get("epsilon"))
        scripts = {"plain": "train.py", "handsfree": "train.py", "explicit": "train_flor.py"}
        for variant in VARIANTS:  # warm the file cache, .pyc files and the database
            run_once(variant, scripts[variant], repo, env, ["--epochs", "1"])
        times: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        outputs: set[tuple[str, ...]] = set()
        for rep in range(args.reps):
            order = VARIANTS[rep % 3:] + VARIANTS[:rep % 3]
            for variant in order:
                t, lines = run_once(variant, scripts[variant], repo, env, argv)
                times[variant].append(t)
                outputs.add(tuple(lines))
            print(f"rep {rep + 1}/{args.reps}: " + ", ".join(
                f"{v} {times[v][-1]['loop']:.2f}s" for v in VARIANTS), file=sys.stderr)
        runs = (
            "SELECT mode, ckpt_overhead, (SELECT count(*) FROM checkpoints c "
            "WHERE c.run_id = r.run_id AND c.object = 'model') AS ckpts FROM runs r "
            "WHERE (SELECT count(*) FROM iterations i WHERE i.run_id = r.run_id) > 1"
        )  # the warm-up runs (one epoch) left out
        recorded = subprocess.run(
            [sys.executable, "-m", "flordb", "query", "--format", "json", "--no-backfill", runs],
            cwd=repo, env=env, capture_output=True, text=True, check=True,
        )
        empty: dict[str, list[dict[str, float]]] = {"plain": [], "handsfree": []}
        for _ in range(args.reps):
            for variant, found in empty.items():
                found.append(run_once(variant, "empty.py", repo, env, [str(args.steps)])[0])
    policy: dict[str, list[tuple[float, int]]] = {}
    for row in json.loads(recorded.stdout):
        policy.setdefault(row["mode"], []).append((row["ckpt_overhead"] or 0.0, row["ckpts"]))

    print(f"(a) {args.epochs} epochs x {8192 // 128} steps of an MLP (0.8 M parameters, Adam, "
          f"StepLR), {args.threads} torch thread(s); {args.reps} repetitions")
    print(f"{'':<31}{'plain':>16}{'handsfree':>26}{'explicit':>26}")
    print(f"{'':<31}{'median   min':>16}" + f"{'median   min  overhead':>26}" * 2)
    for key, label in MEASURES:
        row = f"{label:<31}"
        for variant in VARIANTS:
            values = [t[key] for t in times[variant]]
            row += f"{statistics.median(values):>8.2f}s{min(values):>6.2f}s"
            if variant != "plain":
                row += f"{overhead(times[variant], times['plain'], key):>+10.1%}"
        print(row)
    cells = ""
    for variant, mode in (("handsfree", "handsfree"), ("explicit", "record")):
        spent = policy.get(mode, [])
        text = "-"
        if spent:
            text = (f"{statistics.median(s for s, _ in spent):.1%} "
                    f"({statistics.median(n for _, n in spent):.0f} of {args.epochs})")
        cells += f"{text:>26}"
    print(f"{'checkpoint cost/compute (runs)':<31}{'':>16}{cells}")
    same = len(outputs) == 1
    print("same printed losses in every run of every variant: " + ("yes" if same else "NO"))

    per_iter = [
        (h["loop"] - p["loop"]) / (5 * args.steps) * 1e6
        for h, p in zip(empty["handsfree"], empty["plain"], strict=True)
    ]
    step_s = statistics.median(t["loop"] for t in times["plain"]) / (args.epochs * 8192 // 128)
    cost = statistics.median(per_iter)
    print(f"(b) instrumentation per inner iteration: {cost:.2f} us (median of {args.reps}; "
          f"{5 * args.steps} iterations); {cost / (step_s * 1e6):.3%} of a step of (a)")

    over = overhead(times["handsfree"], times["plain"], "loop")
    verdict = "ok" if over <= epsilon and same else "OVER"
    print(f"hands-free training-loop overhead {over:+.1%} (explicit API "
          f"{overhead(times['explicit'], times['plain'], 'loop'):+.1%}); "
          f"target <= {epsilon:.1%} (epsilon): {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
