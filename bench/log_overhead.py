"""Cost of recording: flor.log in a hot nested loop, and the end-of-run ingest.

Runs real training-shaped scripts in a throwaway git repository and FLORDB_HOME:

1. per-call cost of ``flor.log(name, float)`` inside ``flor.loop("epoch")`` with
   an inner plain loop (CALLS calls per repeat), side by side in the same run with
   the same loop appending ``(name, value)`` to a Python list (the floor); the
   background writer runs as in any real run, so its share of the GIL counts.
   The cost of an inner ``flor.loop`` iteration is printed too.
2. end-of-run: a run logging RECORDS records (100 epochs x 5k steps x 2 names),
   timed from ``flor.commit()`` to its return (final flush + DuckDB ingest).

    python bench/log_overhead.py           # 100k calls x 7 repeats, 1M-record run x 3
    python bench/log_overhead.py --quick   # 20k calls x 5 repeats, 200k-record run x 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, run_child, sandbox

TARGET_US = 1.5
TARGET_RATIO = 30.0
TARGET_INGEST_S = 2.0
REFERENCES = [
    ("original FlorDB 4.0.1 flor.log", "64 us/call; 3.1 s per 100k records at end of run"),
    ("MLflow log_batch", "109 us/value"),
    ("TensorBoard add_scalar", "49 us/call"),
]

HOT_LOOP = """
import json, sys, time
import flordb as flor
from flordb.record.run import active

epochs, steps, repeat = (int(a) for a in sys.argv[1:4])
perf = time.perf_counter
flor.arg("bench", "log_overhead")
sink = []
out = {"log": [], "call": [], "append": [], "loop": []}
for rep in flor.loop("rep", range(repeat)):
    # the floor: the same loop nest, appending to a list
    t0 = perf()
    for epoch in flor.loop("a_epoch", range(epochs)):
        for step in range(steps):
            sink.append(("loss", 0.5))
    out["append"].append(perf() - t0)
    sink.clear()
    writer = active().writer
    writer.flush()
    t0 = perf()
    for epoch in flor.loop("epoch", range(epochs)):
        for step in range(steps):
            flor.log("loss", 0.5)
    t1 = perf()
    # The background writer's work for these records (drain, pickle, write) holds
    # the GIL the training thread needs: paid here so that it is counted.
    writer.flush()
    out["log"].append(perf() - t0)
    out["call"].append(t1 - t0)
    # an inner flor.loop with an empty body: the cost of one loop iteration
    t0 = perf()
    for epoch in flor.loop("l_epoch", range(epochs)):
        for step in flor.loop("step", range(steps)):
            pass
    out["loop"].append(perf() - t0)
t0 = perf()
flor.commit()
out["commit"] = perf() - t0
print(json.dumps(out))
"""

INGEST = """
import json, sys, time
import flordb as flor

epochs, steps = int(sys.argv[1]), int(sys.argv[2])
flor.arg("bench", "ingest")
t0 = time.perf_counter()
for epoch in flor.loop("epoch", range(epochs)):
    for step in range(steps):
        flor.log("loss", step * 0.001)
        flor.log("acc", step)
logged = time.perf_counter() - t0
t0, c0 = time.perf_counter(), time.process_time()
flor.commit()
print(json.dumps({"commit": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "logged": logged}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    if opts.quick:
        epochs, steps, repeat, big_epochs, runs = 10, 2_000, 5, 20, 2
    else:
        epochs, steps, repeat, big_epochs, runs = 10, 10_000, 7, 100, 3
    calls = epochs * steps
    records = big_epochs * 5_000 * 2
    print(f"machine: {machine()}")
    worst = []
    with sandbox() as (repo, home):
        hot = run_child(repo, home, HOT_LOOP, str(epochs), str(steps), str(repeat))
        per = {k: [t / calls * 1e6 for t in hot[k]] for k in ("log", "call", "append", "loop")}
        log_us = statistics.median(per["log"])
        floor_us = statistics.median(per["append"])
        ratio = log_us / floor_us
        print(f"\nhot loop: {calls:,} calls x {repeat} repeats, median (min) per call")
        print(f"  flor.log(name, float)      {log_us:6.3f} us  ({min(per['log']):.3f}), "
              "with the writer's work for it")
        print(f"    the call alone           {statistics.median(per['call']):6.3f} us  "
              f"({min(per['call']):.3f})")
        print(f"  list.append((name, value)) {floor_us:6.3f} us  ({min(per['append']):.3f})")
        print(f"  ratio                      {ratio:6.1f}x  (min/min "
              f"{min(per['log']) / min(per['append']):.1f}x)")
        print(f"  inner flor.loop iteration  {statistics.median(per['loop']):6.3f} us  "
              f"({min(per['loop']):.3f}), empty body")
        worst.append(("flor.log per call", log_us, TARGET_US, "us"))
        worst.append(("flor.log / list.append", ratio, TARGET_RATIO, "x"))

        commits, cpus = [], []
        for _ in range(runs):
            result = run_child(repo, home, INGEST, str(big_epochs), "5000")
            commits.append(result["commit"])
            cpus.append(result["cpu"])
        print(f"\nend of run: {records:,} records, flor.commit() (flush, imports, ingest), "
              f"{runs} runs: median {statistics.median(commits):.2f} s, min {min(commits):.2f} s"
              f"  ({statistics.median(commits) / records * 1e5:.2f} s per 100k); "
              f"process CPU min {min(cpus):.2f} s")
        worst.append(("commit of the run", statistics.median(commits), TARGET_INGEST_S
                      * records / 1_000_000, "s"))

    print("\nreferences (published figures, not measured here):")
    for name, figure in REFERENCES:
        print(f"  {name:32s} {figure}")
    print()
    for label, value, target, unit in worst:
        verdict = "meets" if value <= target else "MISSES"
        print(f"{label:24s} {value:8.3f} {unit:2s} target <= {target:g} {unit}: {verdict}")


if __name__ == "__main__":
    main()
