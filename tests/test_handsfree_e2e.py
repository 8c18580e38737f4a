"""Hands-free mode end to end: unmodified scripts under ``flordb run``, then hindsight.

Everything is real: a temporary git repository, a private ``FLORDB_HOME``, the
scripts and the CLI as subprocesses of this interpreter, tiny CPU torch models.
The scripts are written the way people write them (a module-level loop, the
PyTorch MNIST example's ``main()``/``train()``/``test()`` with argparse, a
per-batch LR schedule with ``logging``), with no flordb in them.

Ground truth is always the plain script: ``python SCRIPT`` prints the same text
as ``flordb run SCRIPT`` (the losses are ``repr()``s, so equal text is equal
bits), and a hindsight-logged value equals what a from-scratch ``flordb run`` of
the edited script logs, compared as floats with ``==``.
"""
from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import Repo

pytest.importorskip("torch")

# Quiet: no "recorded run" line on stderr, so stderr compares with the plain script's.
ENV = {"FLORDB_QUIET": "1"}
# Hindsight tests checkpoint every epoch (an epoch here costs milliseconds, so the
# default ε would space checkpoints out): replay then restores instead of re-running.
EVERY_EPOCH = {**ENV, "FLORDB_EPSILON": "0.9"}

# ------------------------------------------------------------------ the scripts
MODULE_LOOP = '''
"""Linear regression; the training loop is at module level."""
import logging
import time

import torch

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("train")

torch.set_num_threads(1)
torch.manual_seed(0)
X = torch.randn(96, 4)
y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(96)
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loss_fn = torch.nn.MSELoss()

print("training on", len(X), "examples")
for epoch in range(4):
    t0 = time.perf_counter()
    perm = torch.randperm(len(X))
    for step in range(len(X) // 32):
        idx = perm[step * 32:(step + 1) * 32]
        optimizer.zero_grad()
        loss = loss_fn(model(X[idx]).squeeze(-1), y[idx])
        loss.backward()
        optimizer.step()
        print("loss", repr(loss.item()))
    log.info("epoch %d took %.6f s", epoch, time.perf_counter() - t0)
print("weights", model.weight.tolist())
'''

# The PyTorch MNIST example's shape, on synthetic data and a tiny model.
MNIST_STYLE = '''
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.fc1 = nn.Linear(4 * 3 * 3, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        return F.log_softmax(self.fc1(x), dim=1)


def train(args, model, device, train_loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print('Train Epoch: {} [{}/{}]\\tLoss: {!r}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset), loss.item()))


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    print('Test set: Average loss: {!r}, Accuracy: {}/{}'.format(
        test_loss, correct, len(test_loader.dataset)))


def main():
    parser = argparse.ArgumentParser(description='PyTorch MNIST Example')
    parser.add_argument('--batch-size', type=int, default=16, metavar='N')
    parser.add_argument('--epochs', type=int, default=3, metavar='N')
    parser.add_argument('--lr', type=float, default=1.0, metavar='LR')
    parser.add_argument('--gamma', type=float, default=0.7, metavar='M')
    parser.add_argument('--seed', type=int, default=1, metavar='S')
    parser.add_argument('--log-interval', type=int, default=1, metavar='N')
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    images = torch.randn(96, 1, 8, 8)
    labels = torch.randint(0, 10, (96,))
    train_loader = DataLoader(TensorDataset(images[:64], labels[:64]),
                              batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(images[64:], labels[64:]),
                             batch_size=args.batch_size)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)

    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        test(model, device, test_loader)
        scheduler.step()


if __name__ == '__main__':
    main()
'''

# A per-batch OneCycle schedule, progress through `logging` (to stderr).
SCHEDULER = '''
import argparse
import logging

import torch
from torch import nn

logger = logging.getLogger("train")


def train_one_epoch(model, loader, optimizer, scheduler, epoch):
    model.train()
    for i, (xb, yb) in enumerate(loader):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        scheduler.step()
        logger.info("epoch %d batch %d loss %r", epoch, i, loss.item())


def evaluate(model, x, y):
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-lr", type=float, default=0.2)
    parser.add_argument("--hidden", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    model = nn.Sequential(nn.Linear(6, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.max_lr / 10)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.max_lr, epochs=args.epochs, steps_per_epoch=len(loader))
    for epoch in range(args.epochs):
        train_one_epoch(model, loader, optimizer, scheduler, epoch)
        print(f"epoch {epoch} acc {evaluate(model, x, y)!r} lr {scheduler.get_last_lr()[0]!r}")


if __name__ == "__main__":
    main()
'''

# Scripts hands-free mode cannot instrument.
NO_LOOP = '''
import logging
import torch

torch.manual_seed(0)
w = torch.randn(3)
print("norm", repr(w.norm().item()))
logging.warning("nothing to train")
'''

WHILE_TRUE = '''
import torch

torch.manual_seed(0)
w = torch.zeros(2, requires_grad=True)
opt = torch.optim.SGD([w], lr=0.1)
step = 0
while True:
    loss = ((w - torch.tensor([1.0, -1.0])) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    print("step", step, repr(loss.item()))
    step += 1
    if step == 5:
        break
'''

LIBRARY = '''
import torch
from trainer_lib import Trainer

torch.manual_seed(0)
trainer = Trainer(torch.nn.Linear(2, 1))
trainer.fit(epochs=2)
print("final", repr(trainer.model.weight.sum().item()))
'''

# The "library": another module of the project, which hands-free mode does not read.
TRAINER_LIB = '''
import torch


class Trainer:
    def __init__(self, model):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def fit(self, epochs):
        x = torch.randn(8, 2)
        for epoch in range(epochs):
            for i in range(2):
                loss = self.model(x).pow(2).mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                print("lib epoch", epoch, "batch", i, repr(loss.item()))
'''


# ------------------------------------------------------------------ helpers
def commit(repo: Repo, name: str, text: str) -> None:
    repo.write(name, text)
    repo.git("add", name)
    repo.git("commit", "-q", "-m", f"add {name}")


def edit(repo: Repo, name: str, *replacements: tuple[str, str]) -> None:
    """Insert statements into the working copy of ``name`` (left uncommitted)."""
    path = repo.path / name
    text = path.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def query(repo: Repo, sql: str, *flags: str, env: dict[str, str] | None = None
          ) -> list[dict[str, Any]]:
    """``flordb query SQL --format json``, as the user runs it."""
    done = ok(repo.flordb("query", sql, "--format", "json", *flags, env={**ENV, **(env or {})}))
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def listing(repo: Repo, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(repo.flordb(*args, "--format", "json")).stdout)
    return rows


def sql(text: str, home: Path | None = None) -> list[dict[str, Any]]:
    """The same without backfill, in this process (a CLI call costs a second of imports)."""
    from flordb.query.engine import execute
    from flordb.store.store import Store

    frame = execute(text, backfill=False, store=Store(home) if home else None).frame
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")


def both(repo: Repo, script: str, *args: str, env: dict[str, str] | None = None
         ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """``python SCRIPT ARGS`` and ``flordb run SCRIPT ARGS``, side by side."""
    with ThreadPoolExecutor(2) as pool:
        plain = pool.submit(repo.run_script, *args, script=script, env=ENV)
        recorded = pool.submit(repo.flordb, "run", script, *args, env=env or ENV)
        return plain.result(), ok(recorded.result())


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def stored_lines(name: str) -> list[str]:
    """Every line of every ``name`` record."""
    rows = sql(f"SELECT txt FROM logs WHERE name = '{name}'")
    return [line for row in rows for line in lines(row["txt"])]


def line_of(script: str, text: str) -> int:
    """The line number of ``text`` in ``script`` as the repository holds it."""
    found = [n for n, line in enumerate(script.lstrip("\n").splitlines(), 1) if text in line]
    assert len(found) == 1, text
    return found[0]


# ------------------------------------------------------------------ recording
def test_module_level_loop(repo: Repo) -> None:
    commit(repo, "train.py", MODULE_LOOP)
    plain, recorded = both(repo, "train.py")
    # The terminal shows what it shows without flordb, the losses bit for bit (the
    # stderr lines carry timings, so only their shape is compared).
    assert recorded.stdout == plain.stdout and plain.stdout.count("loss ") == 12
    shape = [line.split(" took ")[0] for line in lines(plain.stderr)]
    assert [line.split(" took ")[0] for line in lines(recorded.stderr)] == shape

    rows = query(repo, "SELECT epoch, step, stdout, log FROM proj ORDER BY epoch, step")
    assert [(r["epoch"], r["step"]) for r in rows] == [(e, s) for e in range(4) for s in range(3)]
    printed = [line for line in lines(plain.stdout) if line.startswith("loss ")]
    assert [r["stdout"] for r in rows] == printed  # each batch's line in its own context
    # logging records are `log`, per epoch (repeated on the epoch's step rows).
    for r in rows:
        assert r["log"].startswith(f"INFO:train:epoch {r['epoch']} took ")
    # Text printed outside the loops is one run-level record.
    assert sorted(stored_lines("stdout")) == sorted(lines(plain.stdout))
    [outside] = sql("SELECT txt FROM logs WHERE name = 'stdout' AND path = ''")
    assert outside["txt"].splitlines()[0] == "training on 96 examples"
    assert outside["txt"].splitlines()[1].startswith("weights [[")

    [run] = sql("SELECT mode, status FROM runs")
    assert run == {"mode": "handsfree", "status": "finished"}
    objects = {(r["iteration"], r["object"]) for r in sql("SELECT * FROM checkpoints")}
    assert {"model", "optimizer"} <= {obj for _, obj in objects}
    assert {(0, "model"), (3, "model")} <= objects  # the first and last epoch always
    assert "loss_fn" not in {obj for _, obj in objects}  # it has no state to save


def test_mnist_style_main_with_helpers_and_argparse(repo: Repo) -> None:
    commit(repo, "mnist.py", MNIST_STYLE)
    plain, recorded = both(repo, "mnist.py", "--epochs", "2", "--lr", "0.5")
    assert recorded.stdout == plain.stdout and plain.stdout.count("Loss: ") == 8
    assert recorded.stderr == plain.stderr == ""

    rows = query(repo, "SELECT epoch, batch_idx, lr, epochs, gamma, batch_size, stdout "
                       "FROM proj WHERE batch_idx IS NOT NULL ORDER BY epoch, batch_idx")
    assert [(r["epoch"], r["batch_idx"]) for r in rows] == [(e, b) for e in (0, 1) for b in range(4)]
    # argparse's values are args columns: as given on the command line, or the defaults.
    assert {(r["lr"], r["epochs"], r["gamma"], r["batch_size"]) for r in rows} == {(0.5, 2, 0.7, 16)}
    train_lines = [line for line in lines(plain.stdout) if line.startswith("Train")]
    assert [r["stdout"] for r in rows] == train_lines
    for r in rows:
        assert r["stdout"].startswith(f"Train Epoch: {r['epoch'] + 1} [{16 * r['batch_idx']}/64]")
    # test()'s line is printed in the epoch, outside the batch loop: an epoch-level record.
    epoch_text = sql("SELECT epoch, stdout FROM proj ORDER BY epoch")
    test_lines = [line for line in lines(plain.stdout) if line.startswith("Test set")]
    assert [(r["epoch"], r["stdout"]) for r in epoch_text] == list(enumerate(test_lines))
    assert sorted(stored_lines("stdout")) == sorted(lines(plain.stdout))

    objects = {r["object"] for r in listing(repo, "checkpoints")}
    assert {"model", "optimizer", "scheduler"} <= objects
    explained = ok(repo.flordb("run", "--explain", "mnist.py")).stdout
    outer, inner = line_of(MNIST_STYLE, "for epoch in"), line_of(MNIST_STYLE, "for batch_idx")
    assert explained.splitlines()[:3] == [
        "mnist.py: 2 loops instrumented",
        (f'line {outer}: for epoch in range(1, args.epochs + 1)  ->  flor.loop("epoch", ...)'
         "  [outer, checkpointed, in main()]"),
        (f"line {inner}: for batch_idx, (data, target) in enumerate(train_loader)  ->  "
         'flor.loop("batch_idx", ...)  [inner, in train()]'),
    ]


def test_lr_scheduler_and_logging(repo: Repo) -> None:
    commit(repo, "sched.py", SCHEDULER)
    plain, recorded = both(repo, "sched.py", "--max-lr", "0.3")
    # Losses go through logging to stderr, accuracies and LRs to stdout: both identical.
    assert recorded.stdout == plain.stdout and recorded.stderr == plain.stderr
    assert plain.stderr.count(" loss ") == 12

    rows = query(repo, "SELECT epoch, i, max_lr, hidden, log FROM proj "
                       "WHERE i IS NOT NULL ORDER BY epoch, i")
    assert [(r["epoch"], r["i"]) for r in rows] == [(e, i) for e in range(3) for i in range(4)]
    assert {(r["max_lr"], r["hidden"]) for r in rows} == {(0.3, 16)}
    # Stored in logging's basic format, whatever format the script's handler uses.
    assert [r["log"] for r in rows] == [
        line.replace("INFO ", "INFO:train:", 1) for line in lines(plain.stderr)
    ]
    epochs = sql("SELECT i1, txt FROM logs WHERE name = 'stdout' ORDER BY i1")
    assert [(r["i1"], r["txt"]) for r in epochs] == list(enumerate(lines(plain.stdout)))
    objects = {r["object"] for r in sql("SELECT DISTINCT object FROM checkpoints")}
    assert {"model", "optimizer", "scheduler"} <= objects


# ------------------------------------------------------------------ hindsight
def values(name: str, *levels: str, home: Path | None = None) -> dict[tuple[Any, ...], float]:
    """``(lr, *loop indices) -> value`` of ``name`` as stored."""
    cols = ", ".join(levels)
    rows = sql(f"SELECT DISTINCT lr, {cols}, {name} FROM proj WHERE {name} IS NOT NULL", home)
    out = {tuple(r[c] for c in ("lr", *levels)): r[name] for r in rows}
    assert len(out) == len(rows), f"{name} stored twice in one context"
    return out


def no_mismatch(stderr: str) -> None:
    """The fidelity check found nothing, no run was left out, no row is flagged."""
    for bad in ("fidelity check", "not replayed", "failed", "warning"):
        assert bad not in stderr, stderr
    assert sql("SELECT count(*) AS n FROM logs WHERE flag IS NOT NULL") == [{"n": 0}]


def test_hindsight_on_handsfree_runs_of_a_main_function(repo: Repo, tmp_path: Path) -> None:
    commit(repo, "mnist.py", MNIST_STYLE)
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(repo.flordb, "run", "mnist.py", "--lr", lr, env=EVERY_EPOCH)
                     for lr in ("1.0", "0.5")]:
            ok(done.result())
    # Hindsight logging: the user adds flor.log statements to today's script, in the
    # outer loop of main() and in the inner loop of train().
    edit(
        repo, "mnist.py",
        ("import argparse\n", "import argparse\n\nimport flordb as flor\n"),
        ("        optimizer.step()\n",
         "        optimizer.step()\n        flor.log('gnorm', model.fc1.weight.grad.norm().item())\n"),
        ("        scheduler.step()\n",
         "        scheduler.step()\n        flor.log('wnorm', model.fc1.weight.norm().item())\n"),
    )
    # Ground truth: the edited script recorded from scratch, in a home of its own.
    scratch = tmp_path / "scratch"
    with ThreadPoolExecutor(3) as pool:
        truth_runs = [pool.submit(repo.flordb, "run", "mnist.py", "--lr", lr,
                                  env={**ENV, "FLORDB_HOME": str(scratch)})
                      for lr in ("1.0", "0.5")]
        backfill = pool.submit(repo.flordb, "query", "SELECT lr, epoch, wnorm FROM proj",
                               "--format", "json", env=ENV)
        for done in truth_runs:
            ok(done.result())
        answer = ok(backfill.result())
    assert "backfill done: 2 run(s)" in answer.stderr
    no_mismatch(answer.stderr)
    wnorm = values("wnorm", "epoch")
    assert {(r["lr"], r["epoch"]): r["wnorm"] for r in json.loads(answer.stdout)} == wnorm
    assert sorted(wnorm) == [(lr, e) for lr in (0.5, 1.0) for e in range(3)]
    assert wnorm == values("wnorm", "epoch", home=scratch)  # bit for bit

    replayed = ok(repo.flordb("replay", "gnorm", "--where", "epoch = 1", env=ENV))
    assert "replay done: 2 run(s)" in replayed.stderr
    no_mismatch(replayed.stderr)
    gnorm = values("gnorm", "epoch", "batch_idx")
    assert sorted(gnorm) == [(lr, 1, b) for lr in (0.5, 1.0) for b in range(4)]
    truth = values("gnorm", "epoch", "batch_idx", home=scratch)
    assert gnorm == {key: v for key, v in truth.items() if key[1] == 1}


def test_hindsight_on_a_module_level_loop_ignores_captured_timings(
    repo: Repo, tmp_path: Path
) -> None:
    commit(repo, "train.py", MODULE_LOOP)
    ok(repo.flordb("run", "train.py", env=EVERY_EPOCH))
    edit(
        repo, "train.py",
        ("import time\n", "import time\n\nimport flordb as flor\n"),
        ("        optimizer.step()\n",
         "        optimizer.step()\n        flor.log('gnorm', model.weight.grad.norm().item())\n"),
        ("    log.info(", "    flor.log('wnorm', model.weight.norm().item())\n    log.info("),
    )
    scratch = tmp_path / "scratch"
    with ThreadPoolExecutor(2) as pool:
        truth_run = pool.submit(repo.flordb, "run", "train.py",
                                env={**ENV, "FLORDB_HOME": str(scratch)})
        backfill = pool.submit(repo.flordb, "query", "SELECT epoch, wnorm FROM proj",
                               "--format", "json", env=ENV)
        ok(truth_run.result())
        answer = ok(backfill.result())
    # wnorm sits after the inner loop: replay restores each epoch's end state from its
    # checkpoint and skips the batches.
    assert "0 iteration(s) executed, 4 restored" in answer.stderr
    no_mismatch(answer.stderr)
    truth = sql("SELECT epoch, wnorm FROM proj ORDER BY epoch", scratch)
    assert sorted(json.loads(answer.stdout), key=lambda r: r["epoch"]) == truth

    # Epoch 1 runs in full: its printed losses and its logged timing are captured
    # again, and the timing differs; the fidelity check leaves captured output alone.
    replayed = ok(repo.flordb("replay", "gnorm", "--where", "epoch = 1", env=ENV))
    assert "1 iteration(s) executed" in replayed.stderr
    no_mismatch(replayed.stderr)
    query_ = "SELECT epoch, step, gnorm FROM proj WHERE gnorm IS NOT NULL ORDER BY epoch, step"
    truth = sql(query_, scratch)
    assert sql(query_) == [r for r in truth if r["epoch"] == 1] and len(truth) == 12


# ------------------------------------------------------------------ not instrumentable
@pytest.mark.parametrize(
    ("script", "why"),
    [
        (NO_LOOP, "nothing instrumented: no loop: the script has no `for` loop"),
        (WHILE_TRUE, "nothing instrumented: the loop at line 7 is `while True`"),
        (LIBRARY, "inside a library call at line 6 (`trainer.fit(epochs=2)`)"),
    ],
    ids=["no-loop", "while-true", "library-call"],
)
def test_scripts_it_cannot_instrument_still_run_and_are_recorded(
    repo: Repo, script: str, why: str
) -> None:
    commit(repo, "trainer_lib.py", TRAINER_LIB)
    commit(repo, "train.py", script)
    explained = ok(repo.flordb("run", "--explain", "train.py"))
    assert explained.stdout.startswith("train.py: nothing instrumented: ")
    assert why in explained.stdout
    assert sql("SELECT run_id FROM runs") == []  # --explain runs nothing

    plain, recorded = both(repo, "train.py")
    assert recorded.stdout == plain.stdout and recorded.stderr == plain.stderr
    assert sql("SELECT mode, status FROM runs") == [{"mode": "handsfree", "status": "finished"}]
    [row] = sql("SELECT * FROM proj")
    assert row["stdout"] == plain.stdout.rstrip("\n")  # at run level, every line
    assert row.get("log") == ("WARNING:root:nothing to train" if script is NO_LOOP else None)
    assert sql("SELECT * FROM checkpoints") == []
