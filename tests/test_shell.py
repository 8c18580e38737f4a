"""The shell: its loop over prompt_toolkit pipe input, dot-commands, batch mode, Ctrl-C,
display, docs; and one real session in a pseudo-terminal."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from flordb.interfaces.shell import commands, display, keys, session
from flordb.interfaces.shell.session import Shell

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAIN = """\
import flordb as flor
lr = flor.arg("lr", 0.1)
flor.arg("batch_size", 32)
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(4)):
        flor.log("loss", 1.0 / (1 + 4 * epoch + step) + lr)
    flor.log("val_acc", 0.5 + 0.1 * epoch - lr)
"""
HEAVY = "SELECT count(*) FROM range(10000000000) t(i) WHERE i % 7 = 3;"


def make_project(root: Path, lrs: tuple[float, ...] = (0.1, 0.01)) -> tuple[Path, Path]:
    """A git repository ``demo`` with one run per learning rate; (repo, FLORDB_HOME)."""
    repo, home = root / "demo", root / "home"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "train.py").write_text(TRAIN)
    env = dict(os.environ, FLORDB_HOME=str(home))
    for lr in lrs:
        subprocess.run([sys.executable, "train.py", "--kwargs", f"lr={lr}"], cwd=repo, env=env,
                       check=True, capture_output=True)
    return repo, home


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    return make_project(tmp_path_factory.mktemp("shell"))


@pytest.fixture(autouse=True)
def _env(project, monkeypatch):
    repo, home = project
    monkeypatch.setenv("FLORDB_HOME", str(home))
    monkeypatch.delenv("FLORDB_DEBUG", raising=False)
    monkeypatch.chdir(repo)


def pipe_session(keys: str, **opts) -> tuple[int, str, Shell]:
    """Run the interactive loop on typed ``keys``; (status, everything printed, shell)."""
    out = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text(keys)
        shell = Shell(interactive=True, backfill=False, out=out, err=out, width=80, height=500,
                      pt_input=inp, pt_output=DummyOutput(), **opts)
        status = shell.interact()
    return status, out.getvalue(), shell


# ---------------------------------------------------------------- the loop
def test_multiline_query_ends_at_semicolon(project):
    status, out, _ = pipe_session(
        "SELECT run_id, lr, loss\rFROM demo\rWHERE step = 3 AND epoch = 2\rORDER BY lr;\r\x04")
    assert status == 0
    table = out[out.index("run_id"):]
    lines = table.splitlines()
    assert re.match(r"run_id\s+\|\s+lr \|\s+loss", lines[0])
    assert "0.01 |" in lines[2] and "0.1 |" in lines[3]
    assert "(2 rows)" in out


def test_dot_commands_settings_and_quit(project):
    keys = (".mode csv\r.timer on\rSELECT lr FROM demo WHERE epoch = 0 AND step = 0 "
            "ORDER BY lr;\r.mode\r.bogus\r.quit\rSELECT 'not run';\r")
    status, out, shell = pipe_session(keys)
    assert status == 0 and not shell.running
    assert "mode: csv" in out and "timer: on" in out
    assert "lr\n0.01\n0.1\n" in out
    assert re.search(r"Time: \d+\.\d{3}s", out)
    assert "flordb: error: unknown command .bogus; type .help for the list" in out
    assert "not run" not in out.split(".quit")[-1] if ".quit" in out else "not run" not in out


def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_leaves(project):
    status, out, _ = pipe_session("SELECT 'half typed\x03SELECT 42 AS answer;\r\x04")
    assert status == 0
    assert "answer" in out and "42" in out and "half typed" not in out


def test_history_is_kept_under_flordb_home(project):
    pipe_session("SELECT 7 AS seven;\r\x04")
    history = (project[1] / session.HISTORY_FILE).read_text()
    assert "SELECT 7 AS seven;" in history


def test_help_lists_every_registered_command():
    shell = Shell(backfill=False, out=io.StringIO())
    result = commands.dispatch(shell, ".help")
    names = [row[0].split()[0] for row in result.rows]
    assert names == list(commands.COMMANDS)
    assert commands.dispatch(shell, ".help mode").rows == [
        (".mode [table|csv|json|markdown]", "Output format of results.")]
    text = display.render("table", result.columns, result.rows)
    assert max(map(len, text.splitlines())) <= 80  # readable on an 80-column terminal
    plot_help = commands.dispatch(shell, ".help .plot").rows
    assert ("  --where PRED", "SQL predicate choosing the rows") in plot_help


def test_tables_schema_projects_runs(project):
    shell = Shell(backfill=False, out=io.StringIO())
    tables = {r[0]: r[1] for r in commands.dispatch(shell, ".tables").rows}
    assert tables["demo"] == "project" and tables["runs"] == "table"
    schema = {r[0]: (r[1], r[2]) for r in commands.dispatch(shell, ".schema demo").rows}
    assert schema["loss"] == ("log", "DOUBLE") and schema["lr"] == ("arg", "DOUBLE")
    assert schema["batch_size"] == ("arg", "BIGINT") and schema["step"] == ("loop", "INTEGER")
    assert [r[0] for r in commands.dispatch(shell, ".projects").rows] == ["demo"]
    runs = commands.dispatch(shell, ".runs demo")
    assert runs.columns == ["run_id", "status", "vid", "filename", "mode"]
    assert len(runs.rows) == 2 and runs.rows[0][1] == "finished"
    assert commands.dispatch(shell, ".runs").columns[:2] == ["run_id", "projid"]
    assert commands.dispatch(shell, ".runs nope").rows == []
    with pytest.raises(Exception, match="no table or project 'nope'"):
        commands.dispatch(shell, ".schema nope")
    # .tables refreshed the completer too
    assert "loss" in [c.name for c in shell.metadata.tables["demo"]]


def test_plot_command_writes_a_png(project, tmp_path):
    out = io.StringIO()
    shell = Shell(backfill=False, out=out)
    assert shell.run_text(f".plot loss --by lr -o {tmp_path / 'l.png'}")
    assert (tmp_path / "l.png").stat().st_size > 1000
    assert f"wrote {tmp_path / 'l.png'}" in out.getvalue()


def test_plot_command_has_the_options_of_flordb_plot():
    from flordb.interfaces.cli import build_parser

    sub = next(a for a in build_parser()._subparsers._group_actions)
    cli = {s for a in sub.choices["plot"]._actions for s in a.option_strings} - {"-h", "--help"}
    shell = {s for a in commands.plot_parser()._actions for s in a.option_strings}
    assert shell == cli
    documented = {o.split()[0] for o, _ in commands.PLOT_OPTIONS} - {"Y"}
    assert documented | {"--output"} == shell


def test_read_only_unless_write(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORDB_HOME", str(tmp_path / "fresh"))
    err = io.StringIO()
    shell = Shell(backfill=False, out=io.StringIO(), err=err)
    assert not shell.run_text("CREATE TABLE notes AS SELECT 1 AS x;")
    assert "modifies data" in err.getvalue()
    shell = Shell(backfill=False, write=True, out=io.StringIO())
    assert shell.run_text("CREATE TABLE notes AS SELECT 1 AS x; SELECT x FROM notes;")


# ---------------------------------------------------------------- Ctrl-C, confirm
def test_sigint_cancels_the_running_statement(project):
    err = io.StringIO()
    shell = Shell(backfill=False, out=io.StringIO(), err=err)

    def press_ctrl_c() -> None:  # only while the statement runs, never at pytest itself
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(t.name == "flordb-statement" for t in threading.enumerate()):
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    start = time.perf_counter()
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    ok = shell.run_text(HEAVY)
    assert not ok and time.perf_counter() - start < 10
    assert "flordb: error: cancelled (Ctrl-C)" in err.getvalue()
    assert shell.run_text("SELECT 1;")  # the shell goes on


def test_confirm_from_the_worker_is_asked_at_the_prompt(monkeypatch):
    from flordb.query import engine

    answers = []

    def fake_execute(sql, **kw):
        assert kw["interactive"] is True
        answers.append(kw["confirm"]("backfill takes about 2 min; go ahead?"))
        return engine.execute("SELECT 1 AS x", backfill=False, con=kw["con"])

    monkeypatch.setattr(engine, "execute", fake_execute)
    status, _, _ = pipe_session("SELECT x;\ry\rSELECT x;\r\r\x04")
    assert status == 0 and answers == [True, False]
    assert session._active is None
    assert session.confirm("anyone?") is False  # no shell, no terminal: no


# ---------------------------------------------------------------- display
def test_wide_results_fit_80_columns_and_long_ones_are_elided():
    import pandas as pd

    from flordb.query.engine import Result

    cols = ["run_id", "comment", "loss"]
    rows = [(f"run-{i:04d}", "x" * 120, i / 3) for i in range(500)]
    for result in (commands.Rows(cols, rows), Result(cols, pd.DataFrame(rows, columns=cols))):
        shown, total = display.sample(result, display.MAX_ROWS)
        assert total == 500 and len(shown) == display.MAX_ROWS
    text = display.render("table", cols, shown, width=80, total=total)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert "... 400 more rows ..." in text and len(lines) == 2 + 100 + 1
    assert "run-0000" in text and "run-0499" in text


def test_too_many_columns_keep_their_width_for_the_pager():
    cols = [f"column_{i}" for i in range(12)]
    text = display.render("table", cols, [tuple(range(12))], width=80)
    assert "column_11" in text  # not squeezed to stubs
    assert display.needs_pager(text, 80, 24)


def test_pager_gets_long_output(tmp_path, monkeypatch):
    paged = tmp_path / "paged.txt"
    monkeypatch.setenv("PAGER", f"sh -c 'cat > {paged}'")
    monkeypatch.setattr(display, "is_tty", lambda stream: True)
    shell = Shell(interactive=True, backfill=False, out=io.StringIO(), width=80, height=24)
    assert shell.run_text("SELECT range AS i FROM range(60);")
    assert "(60 rows)" in paged.read_text() and shell.out.getvalue() == ""


# ---------------------------------------------------------------- batch mode
def run_batch(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "flordb"), "shell", *args], input=script, text=True,
                          capture_output=True, timeout=60, check=False)


def test_batch_mode_runs_stdin_and_stops_at_the_first_error(project):
    script = (".backfill off\n.mode csv\nSELECT lr, count(*) AS n FROM demo\nGROUP BY lr "
              "ORDER BY lr;\nSELECT nope FROM demo;\nSELECT 'never' AS x;\n")
    proc = run_batch(script)
    assert proc.returncode == 1
    assert "lr,n\n0.01,12\n0.1,12\n" in proc.stdout and "never" not in proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("flordb: error:")]
    assert len(errors) == 1 and "nope" in errors[0]


def test_batch_mode_success(project):
    proc = run_batch(".backfill off\nSELECT 1 AS one;\n.timer on\nSELECT 2 AS two;")
    assert proc.returncode == 0, proc.stderr
    assert "one" in proc.stdout and "two" in proc.stdout and "Time:" in proc.stderr


# ---------------------------------------------------------------- startup
def test_heavy_modules_stay_out_of_the_startup_path():
    code = ("import sys, flordb.interfaces.cli, flordb.interfaces.shell.session as s; "
            "s.Shell(interactive=True).session(); "
            "print(sorted(m for m in ('matplotlib', 'pandas', 'torch', 'duckdb') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert proc.stdout.strip() == "[]", proc.stderr


# ---------------------------------------------------------------- docs
@pytest.mark.parametrize("section, generate", [("commands", commands.reference),
                                               ("keys", keys.reference)])
def test_docs_are_generated_from_the_registry(section, generate):
    doc = (ROOT / "docs" / "shell.md").read_text()
    start, end = f"<!-- {section}:start -->\n", f"\n<!-- {section}:end -->"
    listed = doc[doc.index(start) + len(start):doc.index(end)]
    assert listed.strip() == generate(), (
        f"docs/shell.md is stale; paste {generate.__module__}.reference() between the markers")


# ---------------------------------------------------------------- a real terminal
def test_real_terminal_session(project):
    pexpect = pytest.importorskip("pexpect")
    repo, home = project
    log = io.StringIO()
    env = dict(os.environ, FLORDB_HOME=str(home), TERM="xterm", PAGER="cat",
               PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(str(BIN / "flordb"), ["shell"], cwd=str(repo), env=env,
                          dimensions=(24, 80), encoding="utf-8", timeout=20)
    child.logfile_read = log
    try:
        child.expect("flordb> ")
        child.send("SELECT run_id, lr, loss\r")
        child.expect(r"\.\.\.> ")
        child.send("FROM demo WHERE step = 3 AND epoch = 2;\r")
        child.expect(r"\(2 rows\)")
        child.send(".schema demo\r")
        child.expect("val_acc +\\| log")
        child.send(HEAVY + "\r")
        time.sleep(1.0)
        child.sendintr()
        child.expect("cancelled")
        child.send("SELECT 41 + 1 AS answer;\r")
        child.expect("42")
        child.sendeof()
        child.expect(pexpect.EOF)
        status = child.wait()
        assert status == 0, f"exit status {status}; log:\n{log.getvalue()}"
    except (pexpect.TIMEOUT, pexpect.EOF) as exc:
        child.close(force=True)
        pytest.fail(f"{type(exc).__name__} in the terminal session; full log:\n{log.getvalue()}")
