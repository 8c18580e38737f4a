"""Checkpointing benchmark: record overhead, foreground stall, stored bytes, lc accuracy.

    python bench/checkpoint.py [--repeat 5] [--quick] [--json OUT.json]

Prints one table per figure, each figure's variants measured side by side in
this one invocation:

(a) record overhead of a small real training workload (scikit-learn's bundled
    digits, one torch thread) recorded by flordb with adaptive checkpointing
    vs the same script without flordb. Two cases: checkpoints that are cheap
    next to an outer iteration (a small CNN, one checkpoint per epoch), and
    checkpoints that are expensive (a 4.3 M-parameter MLP whose outer loop is
    4 steps long). Each variant runs ``--repeat`` times as a fresh process,
    interleaved; the minimum is reported (the least disturbed run; medians in
    ``--json``). Targets: overhead <= epsilon (1/15), < 3 % when checkpoints
    are cheap.
(b) foreground stall per checkpoint of the same 4.3 M-parameter model with
    Adam (52 MB of state), inside a real recorded run, vs a plain in-memory
    copy of the same tensors (``{k: v.clone()}``) and vs ``torch.save`` to a
    file. Targets: <= 1.5x the copy, >= 5x smaller than torch.save.
(c) stored bytes per checkpoint over consecutive training checkpoints:
    raw, zstd of the raw bytes, lossless (delta chain), and lc with b=2 and
    b=3; then the accuracy of training continued from an lc-restored state vs
    from the exact state. Target: lossless >= 1.3x smaller than raw.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PYTHON = sys.executable

# The workload of (a) and (b). BENCH_MODE=plain replaces flordb by a do-nothing
# shim with the same calls, so both variants run the same lines.
WORKLOAD = r'''
import atexit, json, os, sys, time
T0 = time.perf_counter()
OUT = {}
atexit.register(lambda: print(json.dumps({**OUT, "exit_s": time.perf_counter() - T0}), flush=True))
import numpy as np
import torch
from sklearn.datasets import load_digits

MODE = os.environ["BENCH_MODE"]
if MODE == "plain":
    import contextlib

    class flor:
        loop = staticmethod(lambda name, it: it)
        log = staticmethod(lambda name, v: v)
        checkpointing = staticmethod(lambda **kw: contextlib.nullcontext())
else:
    import flordb as flor
    from flordb.checkpoint import policy

    COSTS = []
    _record = policy.AdaptivePolicy.record_cost

    def record_cost(self, seconds):  # every checkpoint's foreground stall
        COSTS.append(seconds)
        _record(self, seconds)

    policy.AdaptivePolicy.record_cost = record_cost

WIDTH = int(os.environ.get("BENCH_WIDTH", 256))
STEPS = int(os.environ.get("BENCH_STEPS", 0))  # steps per outer iteration (0: an epoch)
OUTER = int(os.environ.get("BENCH_OUTER", 30))
SLEEP = float(os.environ.get("BENCH_SLEEP", 0))  # idle seconds per outer iteration
CKPT = MODE == "flordb"
STALL = os.environ.get("BENCH_STALL") == "1"  # also time clone() and torch.save per iteration
torch.set_num_threads(1)
torch.manual_seed(0)
d = load_digits()
x = torch.tensor(d.data / 16.0, dtype=torch.float32)
y = torch.tensor(d.target)
xtr, ytr, xva, yva = x[:1500], y[:1500], x[1500:], y[1500:]
if os.environ.get("BENCH_ARCH") == "cnn":
    nn = torch.nn
    net = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, WIDTH, 3, padding=1), nn.ReLU(),
        nn.Conv2d(WIDTH, 2 * WIDTH, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(2 * WIDTH * 16, 128), nn.ReLU(), nn.Linear(128, 10),
    )
else:
    net = torch.nn.Sequential(
        torch.nn.Linear(64, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH),
        torch.nn.ReLU(), torch.nn.Linear(WIDTH, 10),
    )
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
batch = 32
nb = len(xtr) // batch
steps = STEPS or nb
clone_s, save_s = [], []


def state_tensors():
    yield from net.state_dict().values()
    for s in opt.state.values():
        yield from (v for v in s.values() if torch.is_tensor(v))


ckpt_objects = {"model": net, "optimizer": opt} if CKPT else {}
t0, cpu0, main0 = time.perf_counter(), time.process_time(), time.thread_time()
with flor.checkpointing(**ckpt_objects):
    pos = 0
    for it in flor.loop("epoch", range(OUTER)):
        if it == 1:  # run start, imports, first iteration and first checkpoint are behind
            t1, cpu1, main1 = time.perf_counter(), time.process_time(), time.thread_time()
        for s in flor.loop("step", range(steps)):
            if pos % nb == 0:
                perm = torch.randperm(len(xtr))
            b = pos % nb
            pos += 1
            idx = perm[b * batch:(b + 1) * batch]
            loss = torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            flor.log("loss", loss.item())
        with torch.no_grad():
            acc = (net(xva).argmax(1) == yva).float().mean().item()
        flor.log("val_acc", acc)
        if STALL:
            t = time.perf_counter()
            copy = [v.clone() for v in state_tensors()]
            clone_s.append(time.perf_counter() - t)
            del copy
            t = time.perf_counter()
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, "ckpt.pt")
            save_s.append(time.perf_counter() - t)
        if SLEEP:
            time.sleep(SLEEP)
OUT["loop_s"] = time.perf_counter() - t0
OUT["cpu_s"] = time.process_time() - cpu0  # every thread of the process
OUT["main_cpu_s"] = time.thread_time() - main0  # the training thread alone
OUT["steady_s"] = time.perf_counter() - t1  # iterations 1.. only
OUT["steady_cpu_s"] = time.process_time() - cpu1
OUT["steady_main_cpu_s"] = time.thread_time() - main1
OUT["acc"] = acc
OUT["outer"] = OUTER
OUT["state_bytes"] = sum(v.numel() * v.element_size() for v in state_tensors())
OUT["clone_s"], OUT["save_s"] = clone_s, save_s
if MODE != "plain":
    from flordb.record import run as run_mod

    mgr = run_mod.active().checkpoints
    OUT["costs"] = COSTS
    OUT["taken"] = mgr.taken if mgr else 0
    OUT["fg_overhead"] = mgr.policy.achieved_overhead if mgr else 0.0
'''

# Checkpoints cheap next to an outer iteration: a small CNN (150 k parameters,
# 1.8 MB of state with Adam), checkpointed once per epoch of about half a second.
CHEAP = {"BENCH_ARCH": "cnn", "BENCH_WIDTH": "32", "BENCH_STEPS": "0", "BENCH_OUTER": "10"}
# Expensive: a 4.3 M-parameter MLP (52 MB of state) whose outer loop is 4 steps.
EXPENSIVE = {"BENCH_WIDTH": "2048", "BENCH_STEPS": "4", "BENCH_OUTER": "40"}


def make_repo(root: Path) -> Path:
    repo = root / "bench-proj"
    repo.mkdir()
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "train.py").write_text(WORKLOAD)
    (repo / ".gitignore").write_text("*.pt\n")
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], cwd=repo, check=True)
    return repo


def run_workload(repo: Path, home: Path, mode: str, env: dict[str, str]) -> dict[str, Any]:
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLORDB_")},
        "FLORDB_HOME": str(home), "FLORDB_QUIET": "1", "BENCH_MODE": mode, **env,
    }
    start = time.perf_counter()
    proc = subprocess.run([PYTHON, "train.py"], cwd=repo, env=full, capture_output=True,
                          text=True, timeout=900, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"workload ({mode}) failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def bench_overhead(repo: Path, home: Path, repeat: int, quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for case, env in (("cheap", CHEAP), ("expensive", EXPENSIVE)):
        env = dict(env)
        if quick:
            env["BENCH_OUTER"] = str(max(4, int(env["BENCH_OUTER"]) // 4))
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "flordb": []}
        for _ in range(repeat):
            for mode, got in runs.items():  # interleaved: drifting load hits both alike
                got.append(run_workload(repo, home, mode, env))
        results[case] = runs
    return results


def bench_stall(repo: Path, home: Path, quick: bool) -> dict[str, Any]:
    # Idle time per outer iteration lets the background writer drain, so each
    # stall is the snapshot alone (no backpressure), as in steady training.
    env = {**EXPENSIVE, "BENCH_OUTER": "6" if quick else "12", "BENCH_SLEEP": "1.0",
           "BENCH_STALL": "1", "FLORDB_EPSILON": "0.99"}
    return run_workload(repo, home, "flordb", env)


# ------------------------------------------------------------------ (c) bytes
def bench_bytes(quick: bool) -> dict[str, Any]:
    import numpy as np
    import torch
    import zstandard
    from sklearn.datasets import load_digits

    from flordb.checkpoint.codecs import ChainEncoder, decode_chain
    from flordb.checkpoint.snapshot import restore_snapshot, take_snapshot

    torch.set_num_threads(1)
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    xtr, ytr, xva, yva = x[:1500], y[:1500], x[1500:], y[1500:]
    batch, nb = 32, 1500 // 32

    def model() -> tuple[Any, Any]:
        net = torch.nn.Sequential(
            torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
            torch.nn.ReLU(), torch.nn.Linear(512, 10),
        )
        return net, torch.optim.Adam(net.parameters(), lr=1e-3)

    def train(net: Any, opt: Any, steps: int, pos: int) -> int:
        for _ in range(steps):
            if pos % nb == 0:
                train.perm = torch.randperm(len(xtr))  # type: ignore[attr-defined]
            b = pos % nb
            idx = train.perm[b * batch:(b + 1) * batch]  # type: ignore[attr-defined]
            loss = torch.nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            pos += 1
        return pos

    def accuracy(net: Any) -> float:
        with torch.no_grad():
            return (net(xva).argmax(1) == yva).float().mean().item()

    torch.manual_seed(0)
    net, opt = model()
    pos = train(net, opt, nb, 0)  # one epoch in: past Adam's first steps
    n_ckpt = 8 if quick else 16
    spacings = {"10 steps": 10, "1 epoch": nb}
    zstd1 = zstandard.ZstdCompressor(level=1)
    zstd3 = zstandard.ZstdCompressor(level=3)
    table: dict[str, Any] = {}
    for label, spacing in spacings.items():
        snaps = []
        for _ in range(n_ckpt):
            pos = train(net, opt, spacing, pos)
            snaps.append(take_snapshot({"model": net, "optimizer": opt}, rng=False).split())
        for obj in ("model", "optimizer"):
            states = [s[obj][0] for s in snaps]
            raw = sum(sum(a.nbytes for a in st.values()) for st in states)
            row: dict[str, Any] = {"raw": raw}
            joined = [b"".join(a.tobytes() for a in st.values()) for st in states]
            row["zstd1"] = sum(len(zstd1.compress(b)) for b in joined)
            row["zstd3"] = sum(len(zstd3.compress(b)) for b in joined)
            codecs = [("lossless", 3, 8)]
            if obj == "model":
                codecs += [("lc", 3, 32), ("lc", 2, 32)]
            for codec, bits, every in codecs:
                enc = ChainEncoder(codec, keyframe_every=every, lc_bits=bits)
                blobs = [enc.encode(st) for st in states]
                name = codec if codec == "lossless" else f"lc{bits}"
                row[name] = sum(b.stored_bytes for b in blobs)
                row[name + "_delta"] = statistics.mean(
                    b.raw_bytes / b.stored_bytes for b in blobs if b.kind == "delta"
                )
                if codec == "lc":
                    got = decode_chain([b.data for b in blobs])
                    want = states[-1]
                    row[name + "_err"] = max(
                        float(np.linalg.norm(got[k] - want[k]) / max(np.linalg.norm(want[k]), 1e-30))
                        for k in want if want[k].dtype.kind == "f"
                    )
            table[f"{label} / {obj}"] = row

    # lc accuracy: train, checkpoint every epoch with lc (and exactly), restore
    # the last checkpoint, continue training from both, compare val accuracy.
    epochs_before, epochs_after = (3, 3) if quick else (8, 8)
    torch.manual_seed(1)
    net, opt = model()
    encoders = {b: ChainEncoder("lc", keyframe_every=32, lc_bits=b) for b in (2, 3)}
    chains: dict[int, list[bytes]] = {2: [], 3: []}
    pos = 0
    for _ in range(epochs_before):
        pos = train(net, opt, nb, pos)
        parts = take_snapshot({"model": net}, rng=False).split()
        for bits, enc in encoders.items():
            chains[bits].append(enc.encode(parts["model"][0]).data)
    exact = take_snapshot({"model": net, "optimizer": opt})  # with the RNG: same batches
    acc: dict[str, Any] = {"at checkpoint": {}, "after": {}}
    for label in ("exact", "lc3", "lc2"):
        net2, opt2 = model()
        restore_snapshot({"model": net2, "optimizer": opt2}, exact.tensors, exact.skeleton)
        if label != "exact":
            tensors = decode_chain(chains[int(label[-1])])
            skeleton = exact.split()["model"][1]
            restore_snapshot({"model": net2}, tensors, skeleton, rng=False)
        acc["at checkpoint"][label] = accuracy(net2)
        train(net2, opt2, epochs_after * nb, pos)
        acc["after"][label] = accuracy(net2)
    return {"bytes": table, "accuracy": acc, "checkpoints": n_ckpt,
            "epochs": [epochs_before, epochs_after]}


# ------------------------------------------------------------------ report
def pct(a: float, b: float) -> str:
    return f"{100 * (a / b - 1):+.1f} %"


def report_overhead(over: dict[str, Any]) -> None:
    eps = 1 / 15
    print("\n(a) record overhead, flordb vs plain, minimum over runs (medians in --json).\n"
          "    whole loop: from before the first flor.loop to its end (run start, imports,\n"
          "    first checkpoint included); steady: outer iterations 1.. only. wall = elapsed,\n"
          "    cpu = CPU time of every thread of the process, main = the training thread's")
    print(f"{'case':<10} {'plain s':>8} {'whole':>8} {'steady':>8} {'cpu':>8} {'main':>8} "
          f"{'target':>8} {'ckpts':>7} {'charged':>8} {'start +s':>9} {'exit +s':>8}")
    for case, runs in over.items():
        def best(mode: str, key: str, runs: dict[str, Any] = runs) -> float:
            return min(r[key] for r in runs[mode])

        def med(mode: str, key: str, runs: dict[str, Any] = runs) -> float:
            return statistics.median(r[key] for r in runs[mode])

        plain = best("plain", "loop_s")
        whole = pct(best("flordb", "loop_s"), plain)
        steady = pct(best("flordb", "steady_s"), best("plain", "steady_s"))
        cpu = pct(best("flordb", "steady_cpu_s"), best("plain", "steady_cpu_s"))
        main = pct(best("flordb", "steady_main_cpu_s"), best("plain", "steady_main_cpu_s"))
        start = (best("flordb", "loop_s") - best("flordb", "steady_s")) - \
            (best("plain", "loop_s") - best("plain", "steady_s"))
        fastest = min(runs["flordb"], key=lambda r: r["loop_s"])
        tail = med("flordb", "exit_s") - med("flordb", "loop_s") - \
            (med("plain", "exit_s") - med("plain", "loop_s"))
        target = "< 3 %" if case == "cheap" else f"<= {100 * eps:.1f} %"
        print(f"{case:<10} {plain:8.2f} {whole:>8} {steady:>8} {cpu:>8} {main:>8} "
              f"{target:>8} {fastest['taken']:>3}/{fastest['outer']:<3} "
              f"{100 * fastest['fg_overhead']:7.1f}% {start:9.2f} {tail:8.2f}")
    print("   charged: checkpoint cost / compute as the policy counts it (foreground stall +\n"
          "   contended background CPU); start +s: extra seconds before iteration 1 (run\n"
          "   start: git snapshot, imports; first checkpoint); exit +s: extra seconds from\n"
          "   loop end to process exit (last writes, ingest into DuckDB)")


def report_stall(stall: dict[str, Any]) -> None:
    print("\n(b) foreground stall per checkpoint, "
          f"{stall['state_bytes'] / 1e6:.0f} MB of model + Adam state (median)")
    costs = stall["costs"][1:]  # the first includes one-time warm-up
    flo, clone, save = (statistics.median(v) for v in (costs, stall["clone_s"], stall["save_s"]))
    print(f"{'flordb':>10} {'clone':>10} {'torch.save':>11}  {'vs clone':>9} {'target':>7}  "
          f"{'save/flordb':>11} {'target':>7}")
    print(f"{1e3 * flo:8.1f}ms {1e3 * clone:8.1f}ms {1e3 * save:9.1f}ms  {flo / clone:8.2f}x "
          f"{'<=1.5x':>7}  {save / flo:10.1f}x {'>=5x':>7}")
    print(f"   first flordb checkpoint (warm-up): {1e3 * stall['costs'][0]:.1f} ms")


def report_bytes(size: dict[str, Any]) -> None:
    print(f"\n(c) stored bytes over {size['checkpoints']} consecutive checkpoints "
          "(ratio = raw / stored, keyframes included; lc delta-only ratio in brackets)")
    print(f"{'spacing / object':<22} {'raw MB':>7} {'zstd-1':>7} {'zstd-3':>7} {'lossless':>9} "
          f"{'lc b=3':>15} {'lc b=2':>15} {'lc err b=3/b=2':>15}")
    for label, row in size["bytes"].items():
        def r(name: str, row: dict[str, Any] = row) -> str:
            return f"{row['raw'] / row[name]:.2f}x" if name in row else "-"

        lc = {b: (f"{r(f'lc{b}')} [{row[f'lc{b}_delta']:.0f}x]" if f"lc{b}" in row else "-")
              for b in (3, 2)}
        err = (f"{row['lc3_err']:.3f}/{row['lc2_err']:.3f}" if "lc3_err" in row else "-")
        print(f"{label:<22} {row['raw'] / 1e6:7.2f} {r('zstd1'):>7} {r('zstd3'):>7} "
              f"{r('lossless'):>9} {lc[3]:>15} {lc[2]:>15} {err:>15}")
    before, after = size["epochs"]
    print(f"\n    val accuracy: lc-restored model after {before} epochs, then {after} more epochs")
    print(f"{'':>22} {'exact':>8} {'lc b=3':>8} {'lc b=2':>8}")
    for when, accs in size["accuracy"].items():
        print(f"{when:>22} {accs['exact']:8.4f} {accs['lc3']:8.4f} {accs['lc2']:8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant in (a)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (smoke test)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--only", choices=["a", "b", "c"], action="append",
                        help="run only these figures")
    args = parser.parse_args()
    only = set(args.only or "abc")
    with tempfile.TemporaryDirectory(prefix="flordb-bench-") as tmp:
        root = Path(tmp)
        repo = make_repo(root)
        home = root / "home"
        print(f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
        over = bench_overhead(repo, home, args.repeat, args.quick) if "a" in only else {}
        stall = bench_stall(repo, home, args.quick) if "b" in only else {}
        size = bench_bytes(args.quick) if "c" in only else {}
    if over:
        report_overhead(over)
    if stall:
        report_stall(stall)
    if size:
        report_bytes(size)
    print(f"# load {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"overhead": over, "stall": stall, "bytes": size},
                                        indent=1))


if __name__ == "__main__":
    main()
