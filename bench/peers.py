"""flordb next to the tools users know, on one logging workload, in one run.

    python bench/peers.py                       # all tools, default workload
    python bench/peers.py --runs 3 --epochs 10 --steps 1000 --only flordb,mlflow-batch

Each tool records the same runs: ``--runs`` training runs (separate processes),
each logging ``loss`` at every step of ``--epochs`` x ``--steps`` and ``val_acc``
at every epoch, plus two hyper-parameters. No model is trained: the loop only
looks values up, so what is measured is the logging itself. Per tool:

* **run start**: the first calls of a run (``flor.arg`` x2; ``mlflow.set_experiment``
  + ``start_run`` + ``log_params``);
* **per value**: the in-loop cost of one logged value, i.e. (time of the logging
  loop - time of the same loop without logging) / values logged; it includes the
  ``flor.loop`` bookkeeping, and for ``log_batch`` the per-epoch batch writes;
* **end of run**: ``flor.commit()`` / ``mlflow.end_run()`` (what a script pays
  when it finishes, before the data is queryable). A pause (``--pause``, 2 s) before
  it stands in for the rest of training, so that work a tool does in the background
  while a real run trains is not billed to the end of a run that lasted milliseconds;
* **import for query**: in a fresh process, importing what the pivot below needs;
* **pivot all runs**: in that process, after the imports, the time to get one
  table of every run x epoch x step with ``lr``, ``loss`` and ``val_acc``
  (``flor.dataframe``; for MLflow ``search_runs`` + ``get_metric_history`` per run
  and metric, merged with pandas, which is how its API yields full histories).

Tools:

* ``flordb``: this checkout (the interpreter running this script);
* ``mlflow`` / ``mlflow-batch``: MLflow's local tracking (its default SQLite store
  in the run's directory), ``mlflow.log_metric`` per value / ``MlflowClient.log_batch``
  once per epoch;
* ``flordb-4.0.1``: the original FlorDB from PyPI.

Peers live in virtual environments that this script creates under a cache
directory (``--cache``, default ``$FLORDB_BENCH_CACHE`` or ``~/.cache/flordb-bench``)
with ``python -m venv`` and ``pip install``; they are never project
dependencies. A peer that cannot be installed is reported and skipped. Every
tool runs in its own fresh git repository under a temporary directory.

The same file is the per-run worker: the driver copies it into each repository as
``train.py`` and runs it with ``PEERS_WORKER`` set, so the top level imports only
the standard library.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO_ROOT = HERE.parents[1]
PEERS = {
    # tool: (venv name, pip requirements)
    "mlflow": ("mlflow", ["mlflow"]),
    "mlflow-batch": ("mlflow", ["mlflow"]),
    "flordb-4.0.1": ("flordb-4.0.1", ["flordb==4.0.1"]),
}
TOOLS = ["flordb", "mlflow", "mlflow-batch", "flordb-4.0.1"]
LABELS = {
    "flordb": "flordb (this repo)",
    "mlflow": "MLflow `log_metric`",
    "mlflow-batch": "MLflow `log_batch` per epoch",
    "flordb-4.0.1": "FlorDB 4.0.1 (PyPI)",
}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
}


# ====================================================================== worker
def _values(spec: dict) -> tuple[list[float], list[float]]:
    rnd = random.Random(spec["seed"])
    n = spec["epochs"] * spec["steps"]
    return [rnd.random() for _ in range(n)], [rnd.random() for _ in range(spec["epochs"])]


def _baseline(epochs: int, steps: int, losses: list[float], accs: list[float]) -> float:
    """The workload's loop without logging (best of three)."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        x = 0.0
        for e in range(epochs):
            for s in range(steps):
                x = losses[e * steps + s]
            x = accs[e]
        best = min(best, time.perf_counter() - t)
    return best + 0.0 * x


def _record_flordb(spec: dict, losses: list[float], accs: list[float]) -> dict:
    """flordb, this repository's and 4.0.1 alike: the same four calls."""
    import flordb as flor

    E, S = spec["epochs"], spec["steps"]
    t = time.perf_counter()
    flor.arg("lr", spec["lr"])
    flor.arg("epochs", E)
    start = time.perf_counter() - t
    t = time.perf_counter()
    for e in flor.loop("epoch", range(E)):
        for s in flor.loop("step", range(S)):
            flor.log("loss", losses[e * S + s])
        flor.log("val_acc", accs[e])
    loop = time.perf_counter() - t
    time.sleep(spec["pause"])  # the rest of training
    t = time.perf_counter()
    flor.commit()
    end = time.perf_counter() - t
    return {"start": start, "loop": loop, "end": end}


def _record_mlflow(spec: dict, losses: list[float], accs: list[float], batch: bool) -> dict:
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    E, S = spec["epochs"], spec["steps"]
    mlflow.set_tracking_uri(spec["mlflow_uri"])
    t = time.perf_counter()
    mlflow.set_experiment("peers")
    run = mlflow.start_run()
    mlflow.log_params({"lr": spec["lr"], "epochs": E})
    start = time.perf_counter() - t
    t = time.perf_counter()
    if batch:
        client = MlflowClient()
        run_id = run.info.run_id
        pending: list = []
        for e in range(E):
            for s in range(S):
                pending.append(Metric("loss", losses[e * S + s], int(time.time() * 1000), e * S + s))
            pending.append(Metric("val_acc", accs[e], int(time.time() * 1000), e))
            for i in range(0, len(pending), 1000):  # MLflow takes at most 1000 metrics a call
                client.log_batch(run_id, metrics=pending[i:i + 1000])
            pending.clear()
    else:
        for e in range(E):
            for s in range(S):
                mlflow.log_metric("loss", losses[e * S + s], step=e * S + s)
            mlflow.log_metric("val_acc", accs[e], step=e)
    loop = time.perf_counter() - t
    time.sleep(spec["pause"])  # the rest of training
    t = time.perf_counter()
    mlflow.end_run()
    end = time.perf_counter() - t
    return {"start": start, "loop": loop, "end": end}


def _pivot(spec: dict) -> dict:
    tool = spec["tool"]
    t = time.perf_counter()
    if tool.startswith("mlflow"):
        import mlflow
        import pandas as pd
        from mlflow.tracking import MlflowClient

        imported = time.perf_counter() - t
        mlflow.set_tracking_uri(spec["mlflow_uri"])
        S = spec["steps"]
        t = time.perf_counter()
        client = MlflowClient()
        experiment = client.get_experiment_by_name("peers")
        frames = []
        for run in client.search_runs([experiment.experiment_id]):
            run_id = run.info.run_id
            loss = pd.DataFrame(
                [(m.step // S, m.step % S, m.value) for m in client.get_metric_history(run_id, "loss")],
                columns=["epoch", "step", "loss"],
            )
            acc = pd.DataFrame(
                [(m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")],
                columns=["epoch", "val_acc"],
            )
            frame = loss.merge(acc, on="epoch", how="left")
            frame.insert(0, "lr", float(run.data.params["lr"]))
            frame.insert(0, "run_id", run_id)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        seconds = time.perf_counter() - t
    else:
        import flordb as flor

        try:  # this repository's flordb imports its query engine on first use
            import flordb.query.engine
        except ImportError:  # 4.0.1 imported everything with the package
            pass
        imported = time.perf_counter() - t
        t = time.perf_counter()
        table = flor.dataframe("lr", "loss", "val_acc")
        seconds = time.perf_counter() - t
    return {
        "pivot": seconds, "import": imported, "rows": int(table["loss"].notna().sum()),
        "columns": [str(c) for c in table.columns], "module": _module_file(tool),
    }


def _module_file(tool: str) -> str:
    return sys.modules["mlflow" if tool.startswith("mlflow") else "flordb"].__file__ or "?"


def worker(spec: dict) -> None:
    result: dict = {"tool": spec["tool"]}
    if spec["action"] == "pivot":
        result.update(_pivot(spec))
    else:
        losses, accs = _values(spec)
        result["baseline"] = _baseline(spec["epochs"], spec["steps"], losses, accs)
        if spec["tool"].startswith("mlflow"):
            result.update(_record_mlflow(spec, losses, accs, batch=spec["tool"] == "mlflow-batch"))
        else:
            result.update(_record_flordb(spec, losses, accs))
        result["values"] = spec["epochs"] * spec["steps"] + spec["epochs"]
        result["module"] = _module_file(spec["tool"])
    Path(spec["result"]).write_text(json.dumps(result))


# ====================================================================== driver
def peer_python(venv_name: str, requirements: list[str], cache: Path) -> Path | None:
    """The interpreter of a peer's own venv, created (once) under ``cache``."""
    venv = cache / venv_name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text() == " ".join(requirements):
        return python
    print(f"setting up {venv} (pip install {' '.join(requirements)}) ...", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3") or sys.executable
    steps = [[base, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", *requirements]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"skipping {venv_name}: `{' '.join(cmd[-3:])}` failed: {' / '.join(tail)}",
                  file=sys.stderr)
            return None
    marker.write_text(" ".join(requirements))
    return python


def version_of(python: Path, module: str) -> str:
    code = ("import importlib.metadata as m, sys; "
            f"print(m.version({module!r}))")
    # -I and a neutral directory: a checkout's egg-info must not answer for the peer.
    proc = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), check=False)
    return proc.stdout.strip() or "?"


def make_repo(work: Path, tool: str) -> Path:
    repo = work / tool / "peers-bench"
    repo.mkdir(parents=True)
    shutil.copy(HERE, repo / "train.py")
    (repo / ".gitignore").write_text("mlflow.db\nmlruns/\n.flor/\n")
    env = {**os.environ, **GIT_IDENTITY}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    return repo


def run_worker(python: Path, repo: Path, spec: dict, log: Path) -> dict:
    result = repo.parent / f"result-{spec['action']}-{spec.get('index', 0)}.json"
    spec = {**spec, "result": str(result)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLORDB_")}
    env.update(GIT_IDENTITY, PEERS_WORKER=json.dumps(spec), FLORDB_HOME=str(repo.parent / "home"),
               FLORDB_QUIET="1", PYTHONWARNINGS="ignore", MLFLOW_ENABLE_ASYNC_LOGGING="false")
    with log.open("a") as out:
        proc = subprocess.run([str(python), "train.py"], cwd=repo, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=1800, check=False)
    if proc.returncode != 0 or not result.exists():
        tail = log.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{spec['tool']} {spec['action']} failed: " + " / ".join(tail))
    return json.loads(result.read_text())


def bench_tool(tool: str, python: Path, args: argparse.Namespace, work: Path) -> dict:
    repo = make_repo(work, tool)
    log = repo.parent / "output.log"
    base = {"tool": tool, "epochs": args.epochs, "steps": args.steps, "pause": args.pause,
            "mlflow_uri": f"sqlite:///{repo.parent / 'mlflow.db'}"}
    records = []
    for i in range(args.runs):
        lr = [0.01, 0.03, 0.1, 0.3][i % 4]
        spec = {**base, "action": "record", "index": i, "lr": lr, "seed": i}
        records.append(run_worker(python, repo, spec, log))
        print(f"  {tool}: run {i + 1}/{args.runs} recorded", file=sys.stderr)
    pivots = [run_worker(python, repo, {**base, "action": "pivot", "index": i}, log)
              for i in range(3)]  # three fresh processes; the median is reported
    expected = python.parent.parent if tool != "flordb" else REPO_ROOT
    for r in (*records, *pivots):  # the tool under test, not another install of it
        if not Path(r["module"]).resolve().is_relative_to(expected.resolve()):
            raise RuntimeError(f"{tool} imported {r['module']}, not the one in {expected}")
    per_value = [max(r["loop"] - r["baseline"], 0.0) / r["values"] for r in records]
    return {
        "tool": tool,
        "start_ms": statistics.median(r["start"] for r in records) * 1e3,
        "per_value_us": statistics.median(per_value) * 1e6,
        "end_ms": statistics.median(r["end"] for r in records) * 1e3,
        "import_ms": statistics.median(p["import"] for p in pivots) * 1e3,
        "pivot_ms": statistics.median(p["pivot"] for p in pivots) * 1e3,
        "rows": pivots[0]["rows"],
    }


def table(results: list[dict]) -> str:
    lines = [
        ("| tool | run start (ms) | per logged value (µs) | end of run (ms) "
        "| import for query (ms) | pivot all runs (ms) | rows |"),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {LABELS[r['tool']]} | {r['start_ms']:.1f} | {r['per_value_us']:.2f} | "
            f"{r['end_ms']:.1f} | {r['import_ms']:.0f} | {r['pivot_ms']:.1f} | {r['rows']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="training runs per tool (default 5)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch (default 200)")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds between the last logged value and the end of the run")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(TOOLS)}")
    cache_default = os.environ.get("FLORDB_BENCH_CACHE") or Path.home() / ".cache" / "flordb-bench"
    parser.add_argument("--cache", type=Path, default=Path(cache_default),
                        help="where the peers' virtual environments live")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    args = parser.parse_args(argv)
    tools = args.only.split(",") if args.only else TOOLS
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tool(s) {unknown}; choose from {TOOLS}")

    pythons: dict[str, Path] = {}
    versions: dict[str, str] = {}
    for tool in tools:
        if tool == "flordb":
            pythons[tool] = Path(sys.executable)
            versions[tool] = version_of(pythons[tool], "flordb")
            continue
        venv_name, requirements = PEERS[tool]
        python = peer_python(venv_name, requirements, args.cache)
        if python is None:
            continue
        pythons[tool] = python
        versions[tool] = version_of(python, requirements[0].split("==")[0])

    work = Path(tempfile.mkdtemp(prefix="flordb-peers-"))
    results = []
    try:
        for tool in tools:
            if tool not in pythons:
                print(f"{tool}: not installed, skipped", file=sys.stderr)
                continue
            print(f"{tool} {versions[tool]} ...", file=sys.stderr)
            try:
                results.append(bench_tool(tool, pythons[tool], args, work))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"{tool}: skipped: {exc}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    values = args.epochs * args.steps + args.epochs
    print(f"Workload: {args.runs} runs x {args.epochs} epochs x {args.steps} steps "
          f"({values} values per run: `loss` per step, `val_acc` per epoch, 2 args); "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}.")
    print("Versions: " + ", ".join(f"{t} {versions[t]}" for t in tools if t in versions) + ".\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    spec_text = os.environ.get("PEERS_WORKER")
    if spec_text:
        worker(json.loads(spec_text))
    else:
        sys.exit(main())
