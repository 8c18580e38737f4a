"""Tiny training scripts and ground-truth helpers for the replay and backfill tests.

A script here is text with two marker comments, ``# @STEP`` (last line of the
inner loop body) and ``# @EPOCH`` (last line of the outer loop body). Hand-
inserting a statement means replacing a marker with it, indented like the
marker; recording without it means dropping the marker line. The ground truth
for a hindsight-logged value is always a from-scratch run of the hand-
instrumented script with the same arguments, in a separate FLORDB_HOME.

Everything is deterministic and single-threaded (``torch.set_num_threads(1)``):
the same script with the same arguments logs the same bits every time.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PYTHON = sys.executable
GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]

# Test runs checkpoint every epoch: the adaptive policy's budget is large and
# every step sleeps a little (standing in for data loading), so an epoch always
# costs more than its checkpoint.
RECORD_ENV = {"FLORDB_EPSILON": "0.9"}


# ------------------------------------------------------------------ scripts
TORCH_SCRIPT = '''
import time
import torch
import flordb as flor

torch.set_num_threads(1)
torch.manual_seed(0)
lr = flor.arg("lr", 0.05)
epochs = flor.arg("epochs", 4)
delay = flor.arg("delay", 0.003)
true_w = torch.randn(8, 1)
x = torch.randn(128, 8)
y = x @ true_w + 0.1 * torch.randn(128, 1)
xv = torch.randn(64, 8)
yv = xv @ true_w
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(epochs)):
        perm = torch.randperm(len(x))
        for step in flor.loop("step", range(len(x) // 32)):
            idx = perm[step * 32:(step + 1) * 32]
            loss = torch.nn.functional.mse_loss(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(delay)
            flor.log("loss", loss.item())
            # @STEP
        with torch.no_grad():
            val_loss = torch.nn.functional.mse_loss(net(xv), yv).item()
        flor.log("val_loss", val_loss)
        # @EPOCH
'''

# The hindsight statements of the replay tests, for TORCH_SCRIPT.
WNORM = 'flor.log("wnorm", net[0].weight.norm().item())'  # per epoch, after the inner loop
GNORM = 'flor.log("gnorm", net[0].weight.grad.norm().item())'  # per step

NUMPY_SCRIPT = '''
import time
import numpy as np
import flordb as flor

np.random.seed(0)
lr = flor.arg("lr", 0.1)
epochs = flor.arg("epochs", 4)
data = flor.arg("data", "")
dim = flor.arg("dim", 4)
x = np.random.randn(64, dim)
if data:
    x = x + np.load(data)
y = x @ np.linspace(-2.0, 3.0, dim)
w = np.zeros(dim)
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(epochs)):
        perm = np.random.permutation(64)
        for step in flor.loop("step", range(4)):
            idx = perm[step * 16:(step + 1) * 16]
            g = 2 * x[idx].T @ (x[idx] @ w - y[idx]) / 16
            w -= lr * g
            time.sleep(0.003)
            flor.log("loss", float(np.mean((x[idx] @ w - y[idx]) ** 2)))
            # @STEP
        flor.log("mse", float(np.mean((x @ w - y) ** 2)))
        # @EPOCH
'''


def script(template: str, *, step: str | list[str] = (), epoch: str | list[str] = ()) -> str:
    """``template`` with statements hand-inserted at its markers (others dropped)."""
    out = []
    inserts = {"# @STEP": _listed(step), "# @EPOCH": _listed(epoch)}
    for line in textwrap.dedent(template).lstrip("\n").splitlines():
        marker = line.strip()
        if marker in inserts:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + s for s in inserts[marker])
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _listed(value: str | list[str] | tuple[str, ...]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# ------------------------------------------------------------------ git
def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text("*.log\n")
    git(path, "add", ".gitignore")
    git(path, *GIT_ID, "commit", "-q", "-m", "initial")
    return path


def commit(repo: Path, text: str, message: str, name: str = "train.py") -> str:
    """Write ``name`` and commit it; returns the commit id."""
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, *GIT_ID, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def repo_state(repo: Path) -> dict[str, Any]:
    """What a user can see of a repository, byte for byte (refs/flor excluded)."""
    files = {}
    for p in sorted(repo.rglob("*")):
        rel = p.relative_to(repo)
        if rel.parts[0] == ".git" or not p.is_file():
            continue
        files[rel.as_posix()] = p.read_bytes()
    dot = repo / ".git"
    refs = [line for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
            .splitlines() if not line.startswith("refs/flor/")]
    return {
        "files": files,
        "index": (dot / "index").read_bytes() if (dot / "index").exists() else None,
        "HEAD": (dot / "HEAD").read_bytes(),
        "head_commit": git(repo, "rev-parse", "HEAD"),
        "refs": refs,
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "config": (dot / "config").read_bytes(),
        "stash": git(repo, "stash", "list"),
    }


# ------------------------------------------------------------------ running
def run_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLORDB_")}
    return {**env, **RECORD_ENV, "FLORDB_HOME": str(home), "FLORDB_QUIET": "1", **(extra or {})}


def run_script(repo: Path, home: Path, *kwargs: str, name: str = "train.py",
               env: dict[str, str] | None = None, timeout: float = 180) -> str:
    """``python NAME --kwargs ...`` in ``repo`` recording into ``home``; returns stderr."""
    args = [PYTHON, name] + (["--kwargs", *kwargs] if kwargs else [])
    proc = subprocess.run(args, cwd=repo, env=run_env(home, env), capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{name} {kwargs} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stderr


def run_many(jobs: list[tuple], parallel: int = 2) -> None:
    """Run ``(repo, home, kwargs[, script name])`` jobs, ``parallel`` at a time."""
    with ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(run_script, job[0], job[1], *job[2],
                               name=job[3] if len(job) > 3 else "train.py") for job in jobs]
        for f in futures:
            f.result()


def copy_home(src: Path, dest: Path) -> Path:
    """A private copy of a recorded FLORDB_HOME (database and checkpoint blobs)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("replay", "*.lock", "*.wal"))
    return dest


# ------------------------------------------------------------------ reading
def connect(home: Path):  # type: ignore[no-untyped-def]
    from flordb.store.store import Store

    store = Store(home)
    store.ingest_pending(timeout=30.0)
    return store.connect()


def values(home: Path, name: str, key: str = "lr", source: str | None = None
           ) -> dict[tuple, float]:
    """``(run's arg `key`, i1, i2, ...) -> value`` of every record of ``name`` in ``home``."""
    sql = (
        "SELECT a.num, l.i1, l.i2, l.num, l.txt FROM logs l JOIN args a "
        "ON a.run_id = l.run_id AND a.name = ? WHERE l.name = ?"
    )
    params: list[Any] = [key, name]
    if source is not None:
        sql += " AND l.source = ?"
        params.append(source)
    with connect(home) as con:
        found = con.execute(sql, params).fetchall()
    out: dict[tuple, float] = {}
    for arg, i1, i2, num, txt in found:
        k = tuple(v for v in (arg, i1, i2) if v is not None)
        assert k not in out, f"{name} logged twice at {k}"
        out[k] = num if num is not None else txt
    return out


def rows_of(home: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    with connect(home) as con:
        return con.execute(sql, params or []).fetchall()


def checkpointed_epochs(home: Path) -> dict[str, list[int]]:
    """run_id -> outer iterations with a complete checkpoint."""
    from flordb.checkpoint.manager import complete_iterations

    out: dict[str, list[int]] = {}
    with connect(home) as con:
        cur = con.execute("SELECT * FROM checkpoints ORDER BY run_id, iteration")
        cols = [d[0] for d in cur.description]
        manifest = [dict(zip(cols, r)) for r in cur.fetchall()]
    for run_id in {r["run_id"] for r in manifest}:
        out[run_id] = complete_iterations([r for r in manifest if r["run_id"] == run_id])
    return out


# ------------------------------------------------------------------ four versions
# The history of one training script, for the backfill tests. Each version has
# the markers where a hand-instrumented per-step and per-epoch statement go.
_V1 = TORCH_SCRIPT  # the first version is the single-version tests' script

# v2: `net` renamed `model`.
_V2 = _V1.replace("net", "model")

# v3: the training step extracted into a helper function.
_V3 = _V2.replace(
    '''with flor.checkpointing(model=model, optimizer=opt):''',
    '''

def train_step(model, opt, xb, yb):
    loss = torch.nn.functional.mse_loss(model(xb), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


with flor.checkpointing(model=model, optimizer=opt):''',
).replace(
    '''            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
''',
    '''            loss = train_step(model, opt, x[idx], y[idx])
''',
)

# v4: the evaluation moved into its own function, defined before training.
_V4 = _V3.replace(
    '''

def train_step(''',
    '''

def evaluate(model):
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(xv), yv).item()


def train_step(''',
).replace(
    '''        with torch.no_grad():
            val_loss = torch.nn.functional.mse_loss(model(xv), yv).item()
        flor.log("val_loss", val_loss)
''',
    '''        flor.log("val_loss", evaluate(model))
''',
)

VERSIONS = [_V1, _V2, _V3, _V4]

# The hindsight statements, as each version spells them.
def per_step(version: int) -> str:
    """Per-step: the first layer's gradient norm (in the training loop)."""
    model = "net" if version == 1 else "model"
    return f'flor.log("grad_norm", {model}[0].weight.grad.norm().item())'


def per_epoch(version: int) -> str:
    """Per-epoch: the validation mean absolute error, after the evaluation."""
    model = "net" if version == 1 else "model"
    return f'flor.log("val_mae", ({model}(xv) - yv).abs().mean().item())'
