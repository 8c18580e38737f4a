"""Hindsight replay versus re-training from scratch, measured in one run.

    python bench/replay.py [--epochs 6] [--n 160000] [--workers 2]

The workload is a CPU MLP (128-512-512-10, SGD with momentum, batch 128,
one torch thread) on ``n`` synthetic examples: an epoch takes a few seconds,
so a worker's start-up (``import torch``) does not dominate. One run is
recorded; today's script then adds a per-epoch ``val_acc`` (after the inner
loop) and a per-step ``grad_norm``. "Scratch" is the end-to-end wall time of
``python train.py`` of today's script, the only other way to get those values.
Each replay is ``flordb replay ...`` end to end (CLI start, planning, checkout,
workers, ingest), and its values must equal the scratch run's bit for bit.

Targets: outer-loop statement over E epochs >= 0.5 E x; inner-loop statement
restricted to one of E epochs >= 0.5 E x; all epochs with W workers on W
cores >= 0.7 W x.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

PYTHON = sys.executable

SCRIPT = '''
import torch
import flordb as flor

torch.set_num_threads(1)
torch.manual_seed(0)
epochs = flor.arg("epochs", 6)
n = flor.arg("n", 160000)
lr = flor.arg("lr", 0.05)
w_true = torch.randn(128, 10)
x = torch.randn(n, 128)
y = (x @ w_true).argmax(1)
xv = torch.randn(4000, 128)
yv = (xv @ w_true).argmax(1)
net = torch.nn.Sequential(
    torch.nn.Linear(128, 512), torch.nn.ReLU(),
    torch.nn.Linear(512, 512), torch.nn.ReLU(),
    torch.nn.Linear(512, 10),
)
opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(epochs)):
        net.train()
        perm = torch.randperm(n)
        for step in flor.loop("step", range(n // 128)):
            idx = perm[step * 128:(step + 1) * 128]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            flor.log("loss", loss.item())
            # @STEP
        net.eval()
        with torch.no_grad():
            val_loss = torch.nn.functional.cross_entropy(net(xv), yv).item()
        flor.log("val_loss", val_loss)
        # @EPOCH
'''
PER_STEP = 'flor.log("grad_norm", net[0].weight.grad.norm().item())'
PER_EPOCH = 'flor.log("val_acc", (net(xv).argmax(1) == yv).float().mean().item())'


def script(step: bool = False, epoch: bool = False) -> str:
    text = SCRIPT.lstrip("\n")
    text = text.replace("# @STEP", PER_STEP if step else "pass")
    return text.replace("# @EPOCH", PER_EPOCH if epoch else "pass")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   cwd=repo, check=True, capture_output=True)


CPU: dict[str, float] = {}  # CPU seconds of the last timed command and its descendants


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], cwd: Path, home: Path) -> tuple[float, str]:
    """Wall seconds and stderr of ``argv``; its CPU seconds in ``CPU["last"]``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLORDB_")}
    env.update(FLORDB_HOME=str(home), FLORDB_QUIET="1")
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    CPU["last"] = _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr}")
    return seconds, proc.stderr


def values(home: Path, name: str) -> dict[tuple, float]:
    import duckdb

    con = duckdb.connect(str(home / "flordb.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT i1, i2, num FROM logs WHERE name = ?", [name]).fetchall()
    finally:
        con.close()
    return {(i1, i2): num for i1, i2, num in rows}


def counts(err: str) -> str:
    """'executed/restored' from the replay's summary line."""
    for line in err.splitlines():
        if " done: " in line:
            parts = line.split(", ")
            return f"{parts[1].split()[0]} run / {parts[2].split()[0]} restored"
    return "?"


BURN = "import time\nt = time.perf_counter()\nfor i in range(10_000_000): pass\nprint(time.perf_counter() - t)"


def parallel_cores(w: int) -> float:
    """How many cores ``w`` CPU-bound processes actually get now (w on an idle machine)."""
    def burn(n: int) -> float:
        procs = [subprocess.Popen([PYTHON, "-c", BURN], stdout=subprocess.PIPE, text=True)
                 for _ in range(n)]
        return max(float(p.communicate()[0]) for p in procs)

    one = burn(1)
    return w * one / burn(w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n", type=int, default=160000, help="training examples (epoch length)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    E, W = args.epochs, args.workers
    kwargs = ["--kwargs", f"epochs={E}", f"n={args.n}"]
    root = Path(tempfile.mkdtemp(prefix="flordb-bench-replay-"))
    try:
        repo, home = root / "benchproj", root / "home"
        repo.mkdir()
        git(repo, "init", "-q")
        (repo / "train.py").write_text(script())
        git(repo, "add", "train.py")
        git(repo, "commit", "-q", "-m", "v1")
        print(f"machine: {machine()}", file=sys.stderr)
        t_record, _ = timed([PYTHON, "train.py", *kwargs], repo, home)
        shutil.copytree(home, root / "home-w")  # the same recorded run, for the W-worker replay

        (repo / "train.py").write_text(script(step=True, epoch=True))
        t_scratch, _ = timed([PYTHON, "train.py", *kwargs], repo, root / "scratch")
        cpu_scratch = CPU["last"]
        truth = {n: values(root / "scratch", n) for n in ("val_acc", "grad_norm")}

        flordb = [PYTHON, "-m", "flordb", "replay"]
        k = E // 2
        cases = [
            (f"outer-loop val_acc, {E} epochs", [*flordb, "val_acc", "--workers", "1"], home,
             "val_acc", None, 0.5 * E),
            (f"inner-loop grad_norm, epoch {k} of {E}",
             [*flordb, "grad_norm", "--where", f"epoch = {k}", "--workers", "1"], home,
             "grad_norm", k, 0.5 * E),
            (f"inner-loop grad_norm, all {E} epochs, {W} workers",
             [*flordb, "grad_norm", "--workers", str(W)], root / "home-w", "grad_norm", None,
             0.7 * W),
        ]
        rows = []
        for label, argv, h, name, only, target in cases:
            if "workers" in label:
                cores = parallel_cores(W)
            seconds, err = timed(argv, repo, h)
            want = {c: v for c, v in truth[name].items() if only is None or c[0] == only}
            same = values(h, name) == want
            rows.append((label, seconds, t_scratch / seconds, target, counts(err), same,
                         CPU["last"]))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"recorded run: {t_record:.1f} s; from scratch with the statements: {t_scratch:.1f} s "
          f"wall, {cpu_scratch:.1f} s CPU ({E} epochs, n={args.n})")
    print(f"{'replay':<44} {'seconds':>8} {'speedup':>8} {'target':>7} {'CPU s':>6} "
          f"{'CPU ratio':>9}  {'iterations':<22} values")
    ok = True
    for label, seconds, speedup, target, its, same, cpu in rows:
        good = speedup >= target and same
        ok = ok and good
        print(f"{label:<44} {seconds:8.1f} {speedup:7.1f}x {target:6.1f}x {cpu:6.1f} "
              f"{cpu_scratch / cpu:8.1f}x  {its:<22} "
              f"{'bit-identical' if same else 'DIFFERENT'}{'' if good else '  <- MISSED'}")
    print(f"machine after: load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{W} CPU-bound processes got {cores:.1f} cores just before the {W}-worker replay")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
