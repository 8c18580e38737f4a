"""Shared fixtures: a private FLORDB_HOME per test and a tiny real git repository.

Everything is real: scripts run as ``python script.py`` subprocesses with this
interpreter, their code versions are git commits, their records land in a
DuckDB file under the test's own ``FLORDB_HOME``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PYTHON = sys.executable
REPO_ROOT = Path(__file__).resolve().parents[1]

# A tiny real torch training loop (CPU, well under a second of compute).
TORCH_SCRIPT = """
import torch
import flordb as flor

torch.manual_seed(0)
lr = flor.arg("lr", 0.05)
epochs = flor.arg("epochs", 3)
batch = flor.arg("batch", 8)
x = torch.randn(64, 4)
y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
net = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(net.parameters(), lr=lr)
for epoch in flor.loop("epoch", range(epochs)):
    for step in flor.loop("step", range(len(x) // batch)):
        xb, yb = x[step * batch:(step + 1) * batch], y[step * batch:(step + 1) * batch]
        loss = torch.nn.functional.mse_loss(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        flor.log("loss", loss.detach())
    with torch.no_grad():
        flor.log("val_loss", torch.nn.functional.mse_loss(net(x), y).item())
"""


@pytest.fixture(autouse=True)
def flordb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own FLORDB_HOME and a clean flordb environment."""
    home = tmp_path / "flordb-home"
    for name in list(os.environ):
        if name.startswith("FLORDB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLORDB_HOME", str(home))
    # Hermetic git: no user or system config can change what the fixture or flordb does.
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    from flordb import settings

    monkeypatch.setattr(settings, "_overrides", {})
    return home


def git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


@dataclass
class Repo:
    """A tiny git repository with helpers to write and run scripts in it."""

    path: Path
    home: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def projid(self) -> str:
        return self.path.name

    def git(self, *args: str, check: bool = True) -> str:
        return git(self.path, *args, check=check)

    def write(self, name: str, text: str) -> Path:
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def write_script(self, text: str, name: str = "train.py") -> Path:
        return self.write(name, text)

    def env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "FLORDB_HOME": str(self.home), **(env or {})}

    def run_script(
        self, *args: str, script: str = "train.py", env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        """``python script.py ARGS`` in the repository; fails the test on a non-zero exit
        unless ``check=False``."""
        proc = subprocess.run(
            [PYTHON, script, *args], cwd=self.path, env=self.env(env),
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def start_script(
        self, *args: str, script: str = "train.py", env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start ``python script.py ARGS`` without waiting; killed at teardown if still alive."""
        proc = subprocess.Popen(
            [PYTHON, script, *args], cwd=self.path, env=self.env(env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.procs.append(proc)
        return proc

    def flordb(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        """``python -m flordb ARGS`` as a separate process (exit code and output as given)."""
        return subprocess.run(
            [PYTHON, "-m", "flordb", *args], cwd=cwd or self.path, env=self.env(env),
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def snapshot(self) -> dict[str, object]:
        """Everything a user could see of the repository's state, byte for byte."""
        files = {}
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path)
            if rel.parts[0] == ".git" or not p.is_file():
                continue
            files[rel.as_posix()] = p.read_bytes()
        git_dir = self.path / ".git"
        index = git_dir / "index"
        return {
            "files": files,
            "index": index.read_bytes() if index.exists() else None,
            "HEAD": (git_dir / "HEAD").read_bytes(),
            "heads": self.git("for-each-ref", "refs/heads", "refs/tags", "refs/remotes",
                              "refs/stash"),
            "status": self.git("status", "--porcelain", "--untracked-files=all"),
            "config": (git_dir / "config").read_bytes(),
        }


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """Read the process's stdout until a line containing ``needle`` (or fail)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"never printed {needle!r}; stderr: {proc.stderr.read() if proc.stderr else ''}")


wait_for_line = _wait_for_line


def make_repo(parent: Path, home: Path, name: str = "proj", commit: bool = True) -> Repo:
    path = parent / name
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "commit.gpgsign", "false")
    (path / "README.md").write_text("# a tiny project\n")
    (path / ".gitignore").write_text("*.log\n")
    if commit:
        git(path, "add", "README.md", ".gitignore")
        git(path, "commit", "-q", "-m", "initial")
    return Repo(path, home)


@pytest.fixture
def repo(tmp_path: Path, flordb_home: Path, monkeypatch: pytest.MonkeyPatch):
    """A git repository named ``proj`` with one commit; the working directory is inside it."""
    r = make_repo(tmp_path, flordb_home)
    monkeypatch.chdir(r.path)
    yield r
    for proc in r.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate()


def run_sql(sql: str, **kwargs):
    """Run SQL in-process without backfill; returns the DataFrame."""
    from flordb.query.engine import execute

    return execute(sql, backfill=False, **kwargs).frame


def rows(sql: str, **kwargs) -> list[tuple]:
    """Run SQL in-process without backfill; rows as tuples, missing values as None."""
    frame = run_sql(sql, **kwargs)
    frame = frame.astype(object).where(frame.notna(), None)
    return list(frame.itertuples(index=False, name=None))


def fake_run(
    home: Path,
    projid: str = "proj",
    *,
    run_id: str | None = None,
    args: dict | None = None,
    logs: list[tuple] = (),
    status: str | None = "finished",
    tstamp: float | None = None,
    vid: str = "0" * 40,
    source: str = "record",
    segment: str | None = None,
    ingest: bool = True,
) -> Path:
    """Write a segment laid out exactly as a real run writes it, and ingest it.

    ``logs`` holds ``(name, value, path, ctx)`` tuples, e.g. ``("loss", 0.5,
    "epoch/step", (0, 3))``. ``status=None`` leaves out the end frame (a killed run).
    """
    from flordb.store.segments import SegmentWriter, pending_dir
    from flordb.store.store import Store

    fake_run.counter += 1
    run_id = run_id or f"run-{fake_run.counter:04d}"
    tstamp = tstamp if tstamp is not None else 1_700_000_000.0 + fake_run.counter
    path = pending_dir(home) / f"{segment or run_id}.seg"
    seg = SegmentWriter(path)
    seg.append({
        "t": "run", "source": source, "run_id": run_id, "projid": projid,
        "repo_path": f"/repos/{projid}", "tstamp": tstamp, "vid": vid, "branch": "main",
        "head": None, "filename": "train.py", "host": "test", "pid": 1, "argv": ["train.py"],
        "mode": "record",
    })
    if args:
        seg.append({"t": "args", "items": list(args.items())})
    if logs:
        seg.append({
            "t": "logs",
            "names": [r[0] for r in logs],
            "values": [r[1] for r in logs],
            "paths": [r[2] for r in logs],
            "ctxs": [tuple(r[3]) for r in logs],
        })
    if status is not None:
        seg.append({"t": "end", "status": status, "end_time": tstamp + 1, "error": None,
                    "ckpt_overhead": None})
    seg.close()
    if ingest:
        Store(home).ingest_pending()
    return path


fake_run.counter = 0


def epoch_step_logs(epochs: int, steps: int, *, scale: float = 1.0) -> list[tuple]:
    """loss at every (epoch, step), acc at every epoch: the shape of a typical run."""
    out = []
    for e in range(epochs):
        for s in range(steps):
            out.append(("loss", scale * (e * 100 + s), "epoch/step", (e, s)))
        out.append(("acc", scale * e / 10, "epoch", (e,)))
    return out
