"""Hindsight replay: compute ``flor.log`` statements of today's script for past runs.

For each selected run: take the script as the run recorded it, insert the
requested statements (``propagate``), check the recorded code version out into
a private directory (``git archive``: the user's working tree, branch and
index are never touched), plan which outer iterations to execute and which to
restore from checkpoints (``plan``), run the workers (``executors``) and merge
their pending segments into DuckDB through the same single-writer ingest as
recording. Re-running completes only what is still missing.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import FlorError, ReplayError
from ..record import versions
from ..store.store import Store
from . import plan as planner
from .executors import Task, make_executor
from .session import ctx_key
from .statements import outer_mode_hazard, shape


@dataclass
class ReplayReport:
    """What a replay did, for the summary line and for callers."""

    runs: int = 0
    executed: int = 0
    restored: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    approximate: list[str] = field(default_factory=list)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def replay(
    names: list[str] | str,
    where: str | None = None,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
) -> ReplayReport:
    """``flor.replay``: hindsight-log ``names`` for past runs of the current project.

    >>> flor.replay(["grad_norm"], where="epoch IN (2, 3) AND lr > 0.01")
    """
    from ..query import analyze

    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ReplayError("name at least one flor.log statement to replay")
    root = versions.repo_root()
    projid = versions.projid_of(root)
    selection = None
    if where:
        from ..query.sqltext import ident

        stmt = analyze.parse(f"SELECT * FROM {ident(projid)} WHERE {where}")[0]
        selection = stmt
    return hindsight(
        projid, names, where_statement=selection, workers=workers, source="replay",
        executor=executor, address=address, root=root,
    )


# ---------------------------------------------------------------- the engine
def hindsight(
    projid: str,
    names: Iterable[str],
    *,
    where_statement: Any = None,
    relation: str | None = None,
    workers: int | None = None,
    source: str = "replay",
    executor: str = "local",
    address: str | None = None,
    root: Path | None = None,
    confirm: Callable[[str], bool] | None = None,
    strict_names: bool = True,
) -> ReplayReport:
    """Compute ``names`` for the runs and iterations the WHERE of ``where_statement``
    selects (every run and iteration when None)."""
    from ..query import analyze, engine

    start = time.perf_counter()
    names = list(dict.fromkeys(names))
    workers = workers or settings.get("workers")
    store = Store()
    store.ingest_pending(timeout=10.0, quiet=False)
    report = ReplayReport()
    with store.connect() as con:
        runs = _runs(con, projid)
        if not runs:
            raise ReplayError(f"project {projid!r} has no recorded runs to replay")
        latest = runs[-1]
        root = root or Path(latest["repo_path"] or ".")
        scripts = current_scripts(root, {r["filename"] for r in runs})
        logged: set[str] = set()
        outers: set[str] = set()
        for text in scripts.values():
            sh_cur = shape(text)
            logged.update(sh_cur.sites)
            if sh_cur.outer:
                outers.add(sh_cur.outer)
        unknown = [n for n in names if n not in logged]
        if unknown and strict_names:
            files = ", ".join(sorted(scripts)) or latest["filename"]
            raise ReplayError(
                f"{unknown[0]!r} is not logged by {files}; add "
                f"flor.log({unknown[0]!r}, ...) to the script, then replay"
            )
        names = [n for n in names if n in logged]
        if not names:
            return report
        selection = analyze.Selection()
        if where_statement is not None:
            cat = engine.catalog(con, projid)
            loop_cols = set(cat.loops) | outers
            run_cols = set(engine.relation.BUILTINS) | set(cat.args)
            selection = analyze.pushdown(where_statement, relation or projid, loop_cols, run_cols)
            if selection.run_sql:
                chosen = _runs_matching(con, projid, selection.run_sql, cat)
                runs = [r for r in runs if r["run_id"] in chosen]
        facts = {r["run_id"]: _facts(con, r) for r in runs}
        coverage = _coverage(con, [r["run_id"] for r in runs], names)
    plans, texts = _plan_all(runs, facts, coverage, names, scripts, selection, workers, report)
    if not plans:
        if report.skipped:
            for run_id, why in report.skipped:
                say(f"flordb: warning: run {run_id} not replayed: {why}")
        return report
    _print_plan(plans, source)
    total = sum(p.estimate for p in plans) / max(1, min(workers, sum(len(p.segments) for p in plans)))
    if confirm is not None and total > 30 and not confirm(
        f"backfill will take about {total:.0f} s; start it?"
    ):
        say("flordb: backfill cancelled; answering with what is stored")
        return report
    _execute(plans, texts, names, source, workers, executor, address, root, store, report)
    report.seconds = time.perf_counter() - start
    _summary(report, source)
    return report


def current_scripts(root: Path, filenames: Iterable[str]) -> dict[str, str]:
    """The working-tree text of each script the runs ran (those that parse)."""
    out: dict[str, str] = {}
    for filename in sorted(filenames):
        if not filename or filename.startswith("<"):
            continue
        try:
            text = (root / filename).read_text()
            shape(text)
        except (OSError, SyntaxError, ValueError):
            continue
        out[filename] = text
    return out


def _runs(con: Any, projid: str) -> list[dict[str, Any]]:
    cur = con.execute(
        "SELECT r.run_id, r.projid, r.vid, r.filename, r.argv, r.cwd, r.mode, r.status, p.repo_path "
        "FROM runs r JOIN projects p USING (projid) WHERE r.projid = ? ORDER BY r.tstamp",
        [projid],
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def _runs_matching(con: Any, projid: str, run_sql: str, cat: Any) -> set[str]:
    from ..query import relation
    from ..query.sqltext import ident

    cols = list(relation.BUILTINS) + sorted(cat.args)
    view = relation.build(cat, cols)
    try:
        rows = con.execute(f"SELECT DISTINCT {ident('run_id')} FROM ({view}) WHERE {run_sql}")
    except Exception as exc:  # a predicate DuckDB rejects: select every run
        say(f"flordb: warning: cannot narrow runs by {run_sql!r} ({exc}); using all runs")
        return {r[0] for r in con.execute("SELECT run_id FROM runs WHERE projid = ?", [projid]).fetchall()}
    return {r[0] for r in rows.fetchall()}


def _facts(con: Any, run: dict[str, Any]) -> dict[str, Any]:
    run_id = run["run_id"]
    iters = con.execute(
        "SELECT loop_name, iteration, seconds FROM iterations WHERE run_id = ? ORDER BY iteration",
        [run_id],
    ).fetchall()
    cur = con.execute("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY iteration", [run_id])
    cols = [d[0] for d in cur.description]
    manifest = [dict(zip(cols, row)) for row in cur.fetchall()]
    args = {}
    for name, vtype, num, txt in con.execute(
        "SELECT name, vtype, num, txt FROM args WHERE run_id = ?", [run_id]
    ).fetchall():
        args[name] = _typed(vtype, num, txt)
    return {"iters": iters, "manifest": manifest, "args": args}


def _typed(vtype: str, num: float | None, txt: str | None) -> Any:
    if vtype == "int":
        return int(num) if num is not None else None
    if vtype == "float":
        return num
    if vtype == "bool":
        return bool(num)
    if vtype == "json" and txt is not None:
        return json.loads(txt)
    return txt


def _coverage(con: Any, run_ids: list[str], names: list[str]) -> dict[tuple[str, str], set]:
    """(run, name) -> outer iterations (or {None} for run level) that have values."""
    out: dict[tuple[str, str], set] = {}
    if not run_ids:
        return out
    rows = con.execute(
        "SELECT DISTINCT run_id, name, CASE WHEN path = '' THEN NULL ELSE i1 END "
        "FROM logs WHERE run_id IN (SELECT unnest(?)) AND name IN (SELECT unnest(?))",
        [run_ids, names],
    ).fetchall()
    for run_id, name, i in rows:
        out.setdefault((run_id, name), set()).add(i)
    return out


def _source_at(root: Path, vid: str, filename: str, cache: dict[str, str]) -> str:
    key = f"{vid}:{filename}"
    if key not in cache:
        cache[key] = versions.read_file_at(root, vid, filename)
    return cache[key]


def _plan_all(
    runs: list[dict[str, Any]], facts: dict[str, dict[str, Any]],
    coverage: dict[tuple[str, str], set], names: list[str], scripts: dict[str, str],
    selection: Any, workers: int, report: ReplayReport,
) -> tuple[list[planner.RunPlan], dict[str, tuple[str, list[str]]]]:
    from ..checkpoint.manager import complete_iterations, uncaptured_locals
    from .propagate import propagate_detailed

    plans: list[planner.RunPlan] = []
    texts: dict[str, tuple[str, list[str]]] = {}
    cache: dict[str, str] = {}
    for run in runs:
        run_id = run["run_id"]
        root = Path(run["repo_path"])
        try:
            old = _source_at(root, run["vid"], run["filename"], cache)
        except FlorError as exc:
            report.skipped.append((run_id, f"its code version is unreadable: {exc}"))
            continue
        current = scripts.get(run["filename"])
        if current is None:
            report.skipped.append((run_id, f"its script {run['filename']} is gone from the "
                                           "working tree"))
            continue
        own = [n for n in names if n in shape(current).sites]  # what this script logs
        if not own:
            continue
        try:
            prop = propagate_detailed(current, old, names=own)
        except FlorError as exc:
            report.skipped.append((run_id, str(exc)))
            continue
        refused = {r.name: r.reason for r in prop.refused}
        run_names = [n for n in own if n not in refused]
        for name, why in refused.items():
            report.skipped.append((run_id, f"{name}: {why}"))
        if not run_names:
            continue
        text = prop.source
        try:
            sh = shape(_analysable(text, run))
        except SyntaxError as exc:
            report.skipped.append((run_id, f"propagated script does not parse: {exc.msg}"))
            continue
        f = facts[run_id]
        iters = f["iters"]
        n_iter = (max(i for _, i, _ in iters) + 1) if iters else 0
        seconds = [0.0] * n_iter
        for _, i, secs in iters:
            seconds[i] = secs or 0.0
        loop = iters[0][0] if iters else sh.outer
        levels = set()
        for name in run_names:
            for site in sh.sites.get(name, []):
                if not site.loops:
                    levels.add("post" if site.after_outer else "pre")
                elif len(site.loops) == 1:
                    levels.add("outer")
                else:
                    levels.add("inner")
        needed: set[int] = set()
        if levels & {"outer", "inner"}:
            for i in range(n_iter):
                if loop and not selection.allows(loop, i):
                    continue
                if all(i in coverage.get((run_id, n), set()) for n in run_names):
                    continue
                needed.add(i)
        post = "post" in levels and not all(
            None in coverage.get((run_id, n), set()) for n in run_names
        )
        pre = "pre" in levels and not all(
            None in coverage.get((run_id, n), set()) for n in run_names
        )
        if not needed and not post and not pre:
            continue
        manifest = f["manifest"]
        outer_ok = (
            levels <= {"outer", "pre", "post"} and sh.inner_lexical
            and outer_mode_hazard(_analysable(text, run), tuple(run_names)) is None
            and not uncaptured_locals(settings.home(), manifest)
        )
        facts_obj = planner.RunFacts(
            run_id, run["vid"], run["filename"], n_iter, seconds, complete_iterations(manifest),
            loop, manifest=manifest, args=f["args"], run=run,
        )
        p = planner.plan_run(facts_obj, needed, outer_ok=outer_ok, post=post, workers=workers)
        if pre and not p.segments:
            p.segments.append(planner.Segment({}, -1, False, None))
        plans.append(p)
        texts[run_id] = (text, run_names)
    return plans, texts


def _analysable(text: str, run: dict[str, Any]) -> str:
    """The script as static analysis should read it: hands-free runs get the
    ``flor.loop`` calls their instrumentation adds written out."""
    if run.get("mode") == "handsfree":
        from ..handsfree.instrument import flor_source

        return flor_source(text)
    return text


def _print_plan(plans: list[planner.RunPlan], source: str) -> None:
    from ..interfaces.format import table

    rows = planner.describe(plans)
    say(f"flordb: {source} plan for {len(plans)} run(s):")
    say(table(["run_id", "version", "needed", "execute", "restore", "workers", "estimate"], rows))


def _checkout(root: Path, vid: str, dest: Path) -> None:
    """Extract code version ``vid`` into ``dest`` without touching the user's repo."""
    import subprocess

    proc = subprocess.run(["git", "archive", "--format=tar", vid], cwd=root, capture_output=True)
    if proc.returncode != 0:
        raise ReplayError(
            f"cannot check out version {vid[:10]}: {proc.stderr.decode(errors='replace').strip()}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    # Ignored files (data sets, downloads) are not in the commit: link them in.
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
        cwd=root, capture_output=True, text=True,
    ).stdout.splitlines()
    for entry in {p.strip("/").split("/")[0] for p in listed if p.strip()}:
        target = dest / entry
        if not target.exists() and (root / entry).exists():
            target.symlink_to(root / entry)


def _recorded_values(con: Any, run_id: str, exclude: list[str], iterations: set[int]) -> dict:
    """Recorded values of the other statements in the iterations a worker executes."""
    out: dict[str, dict[str, Any]] = {}
    if not iterations:
        its = [-1]
    else:
        its = sorted(iterations)
    rows = con.execute(
        "SELECT name, path, i1, i2, i3, i4, i5, i6, vtype, num, txt FROM logs "
        "WHERE run_id = ? AND source = 'record' AND name NOT IN (SELECT unnest(?)) "
        "AND (path = '' OR i1 IN (SELECT unnest(?))) LIMIT 200000",
        [run_id, exclude or [""], its],
    ).fetchall()
    for name, path, *rest in rows:
        idx = tuple(i for i in rest[:6] if i is not None)
        vtype, num, txt = rest[6:]
        value = _typed(vtype, num, txt) if vtype != "json" else txt
        out.setdefault(name, {})[ctx_key(path, idx)] = value
    return out


def _execute(
    plans: list[planner.RunPlan], texts: dict[str, tuple[str, list[str]]], names: list[str],
    source: str, workers: int, executor_name: str, address: str | None, root: Path | None,
    store: Store, report: ReplayReport,
) -> None:
    from tqdm import tqdm

    work = store.home / "replay" / f"{os.getpid()}-{int(time.time() * 1000)}"
    work.mkdir(parents=True, exist_ok=True)
    tasks: list[Task] = []
    bars: dict[str, Any] = {}
    try:
        with store.connect() as con:
            checkouts: dict[str, Path] = {}
            for p in plans:
                run = p.facts.run
                run_id = run["run_id"]
                text, run_names = texts[run_id]
                repo = Path(run["repo_path"])
                key = f"{run['vid']}-{abs(hash(text)) % 10**8}"
                if key not in checkouts:
                    dest = work / key
                    _checkout(repo, run["vid"], dest)
                    (dest / run["filename"]).write_text(text)
                    checkouts[key] = dest
                dest = checkouts[key]
                argv = json.loads(run["argv"] or "[]")[1:]
                cwd = dest / (run["cwd"] or str(Path(run["filename"]).parent))
                if not cwd.is_dir():
                    cwd = (dest / run["filename"]).parent
                executes = {i for s in p.segments for i, m in s.plan.items() if m != "outer"}
                outer_its = {i for s in p.segments for i, m in s.plan.items() if m == "outer"}
                # Captured output of hands-free runs holds timings: not a fidelity signal.
                skip = run_names + (["stdout", "log"] if run.get("mode") == "handsfree" else [])
                recorded = _recorded_values(con, run_id, skip, executes | outer_its)
                final = max(p.facts.checkpoints) if p.facts.checkpoints else None
                total = sum(len(s.plan) for s in p.segments)
                bars[run_id] = tqdm(total=max(total, 1), desc=run_id[-17:], unit="it",
                                    file=sys.stderr, leave=True, dynamic_ncols=True,
                                    disable=None)
                for k, seg in enumerate(p.segments):
                    seg_id = f"{run_id}.{source}-{os.getpid()}-{k}-{int(time.time() * 1000)}"
                    spec = {
                        "run_id": run_id, "projid": run.get("projid") or p.facts.run_id,
                        "vid": run["vid"], "filename": run["filename"], "source": source,
                        "segment_id": seg_id, "args": p.facts.args,
                        "names": run_names, "loop": p.facts.loop, "depth": 0,
                        "plan": {str(i): m for i, m in seg.plan.items()},
                        "stop_after": seg.stop_after, "post": seg.post,
                        "final_checkpoint": final,
                        "manifest": p.facts.manifest,
                        "recorded": recorded,
                        "result_path": str(work / f"{seg_id}.result.json"),
                        "progress_path": str(work / f"{seg_id}.progress.json"),
                    }
                    spec_path = work / f"{seg_id}.spec.json"
                    spec_path.write_text(json.dumps(spec, default=str))
                    env = {**os.environ, "FLORDB_HOME": str(store.home),
                           "FLORDB_REPLAY_SPEC": str(spec_path), "FLORDB_QUIET": "1",
                           "PYTHONUNBUFFERED": "1"}
                    script_path = dest / run["filename"]
                    if run.get("mode") == "handsfree":
                        cmd = [sys.executable, "-m", "flordb", "run", str(script_path), *argv]
                    else:
                        cmd = [sys.executable, str(script_path), *argv]
                    tasks.append(Task(run_id, cmd, cwd, env, len(seg.plan),
                                      Path(spec["progress_path"]), work / f"{seg_id}.log"))
        done: dict[str, dict[str, int]] = {}

        def on_progress(task: Task, n: int) -> None:
            per = done.setdefault(task.label, {})
            per[str(task.progress_path)] = n
            bar = bars[task.label]
            value = min(sum(per.values()), bar.total)
            if value != bar.n:
                bar.n = value
                bar.refresh()

        executor = make_executor(executor_name, address)
        results = executor.run(tasks, workers, on_progress)
        for bar in bars.values():
            bar.n = bar.total
            bar.close()
        _collect(results, report)
        store.ingest_pending(timeout=60.0, quiet=False)
        _flag(store, plans, texts, source, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _collect(results: list[Any], report: ReplayReport) -> None:
    seen_runs = set()
    for res in results:
        task = res.task
        result_path = Path(str(task.progress_path).replace(".progress.json", ".result.json"))
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            result = {"status": "crashed", "error": None, "executed": 0, "restored": 0}
        seen_runs.add(task.label)
        report.executed += int(result.get("executed", 0))
        report.restored += int(result.get("restored", 0))
        if res.returncode != 0 or result.get("status") not in ("finished",):
            why = result.get("error") or res.log_tail(3) or f"exit status {res.returncode}"
            report.failures.append((task.label, why.strip().splitlines()[-1] if why else "?"))
        for m in result.get("mismatches", []):
            report.mismatches.append({"run_id": task.label, **m})
    report.runs = len(seen_runs)


def _flag(
    store: Store, plans: list[planner.RunPlan], texts: dict[str, tuple[str, list[str]]],
    source: str, report: ReplayReport,
) -> None:
    """Mark replayed rows of runs with fidelity mismatches, or restored from lossy checkpoints."""
    lossy = [p.facts.run_id for p in plans
             if any(r.get("approximate") for r in p.facts.manifest)]
    report.approximate = lossy
    first: dict[str, int] = {}
    for m in report.mismatches:
        if m["run_id"] in lossy:
            continue  # restored from lossy state: recorded values differ by design
        it = m.get("iteration")
        it = -1 if it is None else int(it)
        first[m["run_id"]] = min(first.get(m["run_id"], it), it)
    if not first and not lossy:
        return
    with store.connect(write=True) as con:
        for run_id, it in first.items():
            names = texts[run_id][1]
            con.execute(
                "UPDATE logs SET flag = 'mismatch' WHERE run_id = ? AND source = ? "
                "AND name IN (SELECT unnest(?)) AND (i1 IS NULL OR i1 >= ?)",
                [run_id, source, names, it],
            )
        for run_id in lossy:
            con.execute(
                "UPDATE logs SET flag = 'approximate' WHERE run_id = ? AND source = ? "
                "AND flag IS NULL AND name IN (SELECT unnest(?))",
                [run_id, source, texts[run_id][1]],
            )


def _summary(report: ReplayReport, source: str) -> None:
    say(
        f"flordb: {source} done: {report.runs} run(s), {report.executed} iteration(s) executed, "
        f"{report.restored} restored from checkpoints, {report.seconds:.1f} s"
    )
    for run_id, why in report.skipped:
        say(f"flordb: warning: run {run_id} not replayed: {why}")
    for run_id, why in report.failures:
        say(f"flordb: warning: replay of run {run_id} failed: {why}")
    lossy = set(report.approximate)
    exact = [m for m in report.mismatches if m["run_id"] not in lossy]
    if exact:
        say(f"flordb: warning: fidelity check: {len(exact)} recorded value(s) "
            "differ on replay; the replayed rows are flagged 'mismatch':")
        for m in exact[:5]:
            say(f"  run {m['run_id']} {m['name']} at {m['context']}: recorded "
                f"{m['recorded']!r}, replayed {m['replayed']!r}")
    if report.approximate:
        near = len(report.mismatches) - len(exact)
        differ = f" ({near} recorded value(s) differ slightly, as expected)" if near else ""
        say(f"flordb: note: {len(report.approximate)} run(s) restored from lossy (lc) "
            f"checkpoints; their values are flagged 'approximate'{differ}")
