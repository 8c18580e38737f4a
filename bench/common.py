"""Helpers shared by the benchmarks: a throwaway git repo and FLORDB_HOME, child
runs, timing, and a description of the machine for the report."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PYTHON = sys.executable


@contextlib.contextmanager
def sandbox(name: str = "benchproj") -> Iterator[tuple[Path, Path]]:
    """(repo, home): a fresh git repository named ``name`` and a fresh FLORDB_HOME."""
    root = Path(tempfile.mkdtemp(prefix="flordb-bench-"))
    repo = root / name
    repo.mkdir()
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (["init", "-q"], ["config", "user.name", "bench"],
                 ["config", "user.email", "bench@localhost"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    (repo / "README.md").write_text("benchmark\n")
    subprocess.run(["git", "add", "README.md"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=repo, check=True, env=env)
    try:
        yield repo, root / "home"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_child(repo: Path, home: Path, script: str, *args: str) -> dict:
    """Run ``script`` as train.py in ``repo``; its last stdout line is JSON."""
    (repo / "train.py").write_text(textwrap.dedent(script).lstrip())
    env = {**os.environ, "FLORDB_HOME": str(home), "FLORDB_QUIET": "1"}
    proc = subprocess.run([PYTHON, "train.py", *args], cwd=repo, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timings(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    return {"min": min(seconds), "median": statistics.median(seconds)}


def machine() -> str:
    """CPU, cores, load, versions and date: what a reader needs to compare numbers."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import duckdb

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, load average {load}; Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}; "
        f"{_dt.date.today().isoformat()}"
    )
