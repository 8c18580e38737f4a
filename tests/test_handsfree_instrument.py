"""Hands-free mode: which loops get instrumented, and that the script still behaves.

The record API is replaced by ``FakeFlor`` (identity loops, records kept in lists),
so these tests need no database; they pin the transform, the explain text, output
capture per loop context, argparse recording and bit-identical training results.
"""
from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flordb
from flordb.handsfree import runner
from flordb.handsfree.capture import Capture
from flordb.handsfree.instrument import LoopInfo, explain, flor_source, instrument, loop_name

DATA = Path(__file__).parent / "data" / "handsfree"
ROOT = Path(__file__).resolve().parent.parent


def load(name: str) -> tuple[str, str]:
    path = DATA / name
    return str(path), path.read_text()


class FakeFlor:
    """The record API's public names, recording calls instead of writing a database."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, int]] = []
        self.loops: list[tuple[tuple[tuple[str, int], ...], str]] = []
        self.logs: list[tuple[tuple[tuple[str, int], ...], str, Any]] = []
        self.args: dict[str, Any] = {}
        self.checkpointed: list[dict[str, Any]] = []
        self.commits = 0
        self.frames: list[tuple[str, str]] = []  # (file, function) resuming each flor.loop

    def loop(self, name: str, iterable: Iterable[Any]) -> Iterator[Any]:
        self.loops.append((tuple(self.stack), name))
        for i, item in enumerate(iterable):
            if i == 0:
                caller = sys._getframe(1).f_code
                self.frames.append((caller.co_filename, caller.co_name))
            self.stack.append((name, i))
            try:
                yield item
            finally:
                self.stack.pop()

    def log(self, name: str, value: Any) -> Any:
        self.logs.append((tuple(self.stack), name, value))
        return value

    def arg(self, name: str, default: Any) -> Any:
        self.args[name] = default
        return default

    @contextlib.contextmanager
    def checkpointing(self, **objects: Any) -> Iterator[None]:
        self.checkpointed.append(objects)
        yield

    def commit(self) -> None:
        self.commits += 1

    def texts(self, name: str) -> dict[tuple[tuple[str, int], ...], str]:
        out: dict[tuple[tuple[str, int], ...], str] = {}
        for ctx, log_name, value in self.logs:
            if log_name == name:
                assert ctx not in out, f"two {name} records in context {ctx}"
                out[ctx] = value
        return out


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeFlor:
    fake = FakeFlor()
    for name in ("loop", "log", "arg", "checkpointing", "commit"):
        monkeypatch.setattr(flordb, name, getattr(fake, name), raising=False)
    return fake


@contextlib.contextmanager
def fresh_logging() -> Iterator[None]:
    """A root logger with no handlers, as in a fresh interpreter, so basicConfig works."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def run_plain(path: str, argv: list[str], capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch) -> str:
    capsys.readouterr()
    with monkeypatch.context() as m, fresh_logging():
        m.setattr(sys, "argv", [path, *argv])
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exc:
            assert exc.code in (None, 0)
    return capsys.readouterr().out


def run_handsfree(path: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with fresh_logging():
        assert runner.run_script(path, argv) == 0
    return capsys.readouterr().out


def write_script(tmp_path: Path, source: str, name: str = "script.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


# ------------------------------------------------------------------ the transform
def test_module_level_loops() -> None:
    path, source = load("module_loop.py")
    inst = instrument(source, path)
    assert inst.reason is None
    assert inst.loops == [
        LoopInfo(20, "epoch", 0, "for epoch in range(3)", None),
        LoopInfo(21, "step", 1, "for step, (xb, yb) in enumerate(batches)", None),
    ]


def test_mnist_style_finds_loop_in_called_helper() -> None:
    path, source = load("mnist_style.py")
    inst = instrument(source, path)
    assert inst.loops == [
        LoopInfo(96, "epoch", 0, "for epoch in range(1, args.epochs + 1)", "main"),
        LoopInfo(27, "batch_idx", 1,
                 "for batch_idx, (data, target) in enumerate(train_loader)", "train"),
    ]
    # test()'s evaluation loop has no backward/step: it runs untouched.
    eval_loop = next(n for n in ast.walk(inst.tree) if isinstance(n, ast.For) and n.lineno == 48)
    assert ast.unparse(eval_loop.iter) == "test_loader"


def test_scheduler_and_class_styles() -> None:
    path, source = load("scheduler_amp.py")
    assert [(x.lineno, x.name, x.level, x.function) for x in instrument(source, path).loops] == [
        (47, "epoch", 0, "main"), (17, "step", 1, "train_one_epoch"),
    ]
    path, source = load("trainer_class.py")
    assert [(x.lineno, x.name, x.level, x.function) for x in instrument(source, path).loops] == [
        (22, "epoch", 0, "Trainer.fit"), (14, "step", 1, "Trainer.train_epoch"),
    ]


def test_explain_output() -> None:
    path, source = load("mnist_style.py")
    text = explain(instrument(source, path), display_name="mnist_style.py")
    assert text.splitlines()[:3] == [
        "mnist_style.py: 2 loops instrumented",
        (
            'line 96: for epoch in range(1, args.epochs + 1)  ->  flor.loop("epoch", ...)'
            "  [outer, checkpointed, in main()]"
        ),
        (
            "line 27: for batch_idx, (data, target) in enumerate(train_loader)  ->  "
            'flor.loop("batch_idx", ...)  [inner, in train()]'
        ),
    ]
    path, source = load("module_loop.py")
    assert (
        'line 20: for epoch in range(3)  ->  flor.loop("epoch", ...)  [outer, checkpointed]'
        in explain(instrument(source, path))
    )


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("while_true.py", "the loop at line 6 is `while True`; only `for` loops"),
        ("no_loop.py", "no loop: the script has no `for` loop"),
        ("keras_fit.py", "library call at line 7 (`model.fit(x_train, y_train, epochs=5)`)"),
    ],
)
def test_reason_when_nothing_is_instrumented(script: str, expected: str) -> None:
    path, source = load(script)
    inst = instrument(source, path)
    assert inst.loops == []
    assert inst.reason is not None and expected in inst.reason
    assert "nothing instrumented: " + inst.reason in explain(inst)
    assert "__flor_hf__" not in ast.unparse(inst.tree)


def test_reason_for_loops_that_do_not_train_and_for_flordb_scripts() -> None:
    inst = instrument("data = []\nfor i in range(3):\n    data.append(i)\n", "s.py")
    assert inst.reason is not None and "loops at line 2 contain no nested loop" in inst.reason
    source = "import flordb as flor\nfor e in flor.loop('e', range(2)):\n    pass\n"
    inst = instrument(source, "s.py")
    assert inst.reason is not None
    assert "already calls flor.loop (line 2: `flor.loop('e', range(2))`)" in inst.reason
    # flor.log statements (added for hindsight logging) do not stop instrumentation.
    source = "import flordb as flor\nfor e in range(2):\n    flor.log('x', opt.step())\n"
    assert [loop.name for loop in instrument(source, "s.py").loops] == ["e"]


def test_comprehensions_and_other_code_untouched() -> None:
    path, source = load("module_loop.py")
    original = ast.parse(source)
    inst = instrument(source, path)
    kinds = (ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)

    def dumps(tree: ast.AST) -> list[str]:
        nodes = [n for n in ast.walk(tree) if isinstance(n, kinds)]
        return [ast.dump(n, include_attributes=True) for n in nodes]

    before, after = dumps(original), dumps(inst.tree)
    assert before and before == after
    # Statements outside the two loops are the original ones, unchanged.
    body = inst.tree.body
    assert ast.unparse(body[1]) == "import flordb.handsfree.runner as __flor_hf__"
    kept = [ast.dump(n, include_attributes=True) for n in body[2:] if not isinstance(n, ast.With)]
    assert kept == [
        ast.dump(n, include_attributes=True) for n in original.body[1:]
        if not isinstance(n, ast.For)
    ]


def test_instrumented_shape() -> None:
    source = textwrap.dedent("""\
        for epoch in range(3):
            for i, batch in enumerate(data):
                opt.step()
                if i:
                    continue
            else:
                done = True
    """)
    assert ast.unparse(instrument(source, "s.py").tree) == textwrap.dedent("""\
        import flordb.handsfree.runner as __flor_hf__
        with __flor_hf__.outer_loop('epoch', locals()) as __flor_hf_outer__:
            for epoch in __flor_hf_outer__.items(range(3)):
                try:
                    with __flor_hf__.loop('i') as __flor_hf_inner__:
                        for i, batch in __flor_hf_inner__.items(enumerate(data)):
                            try:
                                opt.step()
                                if i:
                                    continue
                            finally:
                                __flor_hf_inner__.end_iteration()
                        else:
                            done = True
                finally:
                    __flor_hf_outer__.end_iteration()""")


def test_flor_source_is_the_script_with_explicit_flor_loops() -> None:
    _, source = load("mnist_style.py")
    view = flor_source(source)
    lines, original = view.splitlines(), source.splitlines()
    assert lines[95] == '    for epoch in flor.loop("epoch", range(1, args.epochs + 1)):'
    assert lines[26] == (
        '    for batch_idx, (data, target) in flor.loop("batch_idx", enumerate(train_loader)):'
    )
    changed = [i for i, (a, b) in enumerate(zip(lines, original, strict=False)) if a != b]
    assert changed == [26, 95] and lines[len(original):] == ["import flordb as flor"]
    # What replay's static analysis reads: the loops under the names they were recorded.
    from flordb.hindsight.statements import shape

    assert (shape(view).outer, shape(view).outer_line) == ("epoch", 96)
    assert flor_source("for a in x, y:\n    opt.step()\n").startswith(
        'for a in flor.loop("a", (x, y)):'
    )
    assert flor_source("print('no loop')\n") == "print('no loop')\n"


def test_import_goes_after_docstring_and_future_imports() -> None:
    path, source = load("scheduler_amp.py")
    body = instrument(source, path).tree.body
    assert isinstance(body[1], ast.ImportFrom) and body[1].module == "__future__"
    assert isinstance(body[2], ast.Import) and body[2].names[0].asname == "__flor_hf__"


def test_rewritten_header_keeps_its_line_numbers() -> None:
    path, source = load("mnist_style.py")
    inst = instrument(source, path)
    outer = next(n for n in ast.walk(inst.tree) if isinstance(n, ast.With) and n.lineno == 96)
    loop = outer.body[0]
    assert isinstance(loop, ast.For) and isinstance(loop.body[0], ast.Try)
    new_nodes = [outer, outer.items[0].context_expr, loop, loop.iter, loop.body[0],
                 *loop.body[0].finalbody]
    assert {n.lineno for n in new_nodes} == {96}
    assert [n.lineno for n in loop.body[0].body] == [97, 98, 99]  # the user's statements


@pytest.mark.parametrize(
    ("header", "level", "expected"),
    [
        ("for epoch in range(3)", 0, "epoch"),
        ("for batch_idx, (data, target) in enumerate(train_loader)", 1, "batch_idx"),
        ("for i, batch in tqdm(enumerate(loader))", 1, "i"),
        ("for data, target in loader", 1, "step"),
        ("for _ in range(3)", 0, "epoch"),
        ("for vid in videos", 1, "step"),  # `vid` is a column of the view already
    ],
)
def test_naming_rule(header: str, level: int, expected: str) -> None:
    loop = ast.parse(header + ": pass").body[0]
    assert isinstance(loop, ast.For)
    assert loop_name(loop, level, set()) == expected


def test_inner_name_never_repeats_the_outer_one() -> None:
    inst = instrument("for i in range(2):\n    for i in range(3):\n        opt.step()\n", "s.py")
    assert [loop.name for loop in inst.loops] == ["i", "step"]


def test_definitions_in_loop_bodies_are_not_followed() -> None:
    source = (
        "for epoch in range(2):\n    def helper():\n        loss.backward()\n    print(epoch)\n"
    )
    assert instrument(source, "s.py").loops == []


def test_syntax_error_keeps_the_users_line() -> None:
    with pytest.raises(SyntaxError) as info:
        instrument("x = 1\nfor in range(3):\n", "s.py")
    assert info.value.lineno == 2


# ------------------------------------------------------------------ running it
@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("module_loop.py", []),
        ("mnist_style.py", ["--epochs", "2"]),
        ("scheduler_amp.py", ["--epochs", "3"]),
        ("trainer_class.py", []),
        ("while_true.py", []),
        ("no_loop.py", []),
    ],
)
def test_same_output_and_losses_as_the_plain_script(
    script: str, argv: list[str], fake: FakeFlor, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("torch")
    path = str(DATA / script)
    plain = run_plain(path, argv, capsys, monkeypatch)
    handsfree = run_handsfree(path, argv, capsys)
    # The printed losses are repr()s of Python floats: equal text is equal bits.
    assert plain and handsfree == plain
    # Every printed line was recorded once (log records the script's handler wrote
    # to stdout are stored under `log` instead).
    texts = list(fake.texts("stdout").values())
    if script == "scheduler_amp.py":
        # stored in logging's basic format, whatever format the script's handler uses
        texts += [text.replace("INFO:train:", "") for text in fake.texts("log").values()]
    recorded = sorted(line for text in texts for line in text.splitlines() if line)
    assert recorded == sorted(line for line in plain.splitlines() if line)


def test_mnist_records_output_per_loop_context_and_args(
    fake: FakeFlor, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(DATA / "mnist_style.py")
    out = run_handsfree(path, ["--epochs", "2", "--lr", "0.5"], capsys)
    assert "Train Epoch: 2 [48/64" in out
    assert fake.args == {
        "batch_size": 16, "epochs": 2, "lr": 0.5, "gamma": 0.7, "dry_run": False,
        "seed": 1, "log_interval": 1, "save_model": False,
    }
    assert [sorted(objects) for objects in fake.checkpointed] == [
        ["model", "optimizer", "scheduler"]
    ]
    assert fake.loops == [((), "epoch"), ((("epoch", 0),), "batch_idx"),
                          ((("epoch", 1),), "batch_idx")]
    # The record and replay code capture and restore locals in the frame that resumes
    # flor.loop's generator: it must be the script's own, not a wrapper's.
    assert fake.frames == [(path, "main"), (path, "train"), (path, "train")]
    stdout = fake.texts("stdout")
    first = stdout[(("epoch", 0), ("batch_idx", 0))]
    assert first.startswith("Train Epoch: 1 [0/64 (0%)]\tLoss: ")
    assert first.splitlines()[1].startswith("exact loss ")
    assert stdout[(("epoch", 1),)].startswith("\nTest set: Average loss: ")
    assert len(stdout) == 2 + 2 * 4  # two epochs' test lines, four batches each
    assert () not in stdout  # nothing printed outside the loops
    assert fake.commits == 1


def test_module_loop_records_logging_and_run_level_text(
    fake: FakeFlor, capsys: pytest.CaptureFixture[str]
) -> None:
    run_handsfree(str(DATA / "module_loop.py"), [], capsys)
    assert [sorted(objects) for objects in fake.checkpointed] == [["model", "optimizer"]]
    stdout, log = fake.texts("stdout"), fake.texts("log")
    # Run-level lines from before and after the loop form one record.
    assert stdout[()].splitlines()[0] == "training 4 batches"
    assert stdout[()].splitlines()[1].startswith("weights [[")
    assert stdout[(("epoch", 2), ("step", 3))].startswith("2 3 ")
    assert log == {(("epoch", e),): f"INFO:train:epoch {e} done" for e in range(3)}


def test_log_records_written_to_stdout_are_stored_once_as_log(
    fake: FakeFlor, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_handsfree(str(DATA / "scheduler_amp.py"), [], capsys)
    assert "Train: 0 [0/4] loss " in out  # the user's handler still writes them
    assert [sorted(objects) for objects in fake.checkpointed] == [
        ["model", "optimizer", "scaler", "scheduler"]  # loss_fn has no state
    ]
    log, stdout = fake.texts("log"), fake.texts("stdout")
    assert log[(("epoch", 0), ("step", 2))].startswith("INFO:train:Train: 0 [2/4] loss ")
    assert (("epoch", 0), ("step", 1)) not in log
    assert all("Train:" not in text for text in stdout.values())
    assert stdout[(("epoch", 1),)].startswith("epoch 1 train_loss ")


def test_methods_checkpoint_what_self_holds(
    fake: FakeFlor, capsys: pytest.CaptureFixture[str]
) -> None:
    run_handsfree(str(DATA / "trainer_class.py"), [], capsys)
    assert [sorted(objects) for objects in fake.checkpointed] == [["model", "optimizer"]]
    assert fake.loops[:2] == [((), "epoch"), ((("epoch", 0),), "step")]


def test_uninstrumented_script_is_recorded_at_run_level(
    fake: FakeFlor, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_handsfree(str(DATA / "while_true.py"), [], capsys)
    assert fake.loops == [] and fake.checkpointed == []
    assert fake.texts("stdout") == {(): out.rstrip("\n")}


def test_argv_passes_through_and_is_restored(
    fake: FakeFlor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_script(tmp_path, """\
        import sys, os
        print(sys.argv, __name__, __file__ == os.path.abspath(sys.argv[0]))
        print(sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
    """)
    argv_before, path_before = sys.argv[:], sys.path[:]
    out = run_handsfree(path, ["--epochs", "3", "--kwargs-like", "x=1"], capsys)
    assert out.splitlines() == [
        f"[{path!r}, '--epochs', '3', '--kwargs-like', 'x=1'] __main__ True",
        "True",
    ]
    assert sys.argv == argv_before and sys.path == path_before


def test_exit_status_and_usage_errors(
    fake: FakeFlor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.run_script(write_script(tmp_path, "import sys\nsys.exit(3)\n"), []) == 3
    assert runner.run_script(write_script(tmp_path, "raise SystemExit('bye')\n"), []) == 1
    assert "bye" in capsys.readouterr().err
    bad_args = write_script(tmp_path, """\
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--epochs", type=int, default=1)
        parser.parse_args()
    """)
    assert runner.run_script(bad_args, ["--bogus"]) == 2
    assert fake.args == {}  # a usage error records no args


def test_traceback_points_at_the_users_file(
    fake: FakeFlor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_script(tmp_path, """\
        import torch
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        for epoch in range(3):
            opt.step()
            if epoch == 1:
                1 / 0
    """)
    assert runner.run_script(path, []) == 1
    err = capsys.readouterr().err
    assert f'File "{path}", line 6, in <module>' in err
    assert "ZeroDivisionError" in err and "runner.py" not in err


def test_helper_loop_outside_the_training_loop_is_not_recorded(
    fake: FakeFlor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_script(tmp_path, """\
        class Opt:
            def step(self): pass
        def train(opt, n):
            for i in range(n):
                opt.step()
        opt = Opt()
        train(opt, 2)          # a warm-up before the training loop
        for epoch in range(2):
            train(opt, 3)
        for i in range(3):      # a plain loop after it, nested or not
            [j for j in range(2)]
    """)
    run_handsfree(path, [], capsys)
    assert fake.loops == [((), "epoch"), ((("epoch", 0),), "i"), ((("epoch", 1),), "i")]


def test_break_out_of_the_outer_loop_records_that_iteration(
    fake: FakeFlor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_script(tmp_path, """\
        class Opt:
            def step(self): pass
        opt = Opt()
        for epoch in range(5):
            opt.step()
            print("epoch", epoch)
            if epoch == 1:
                break
        print("after")
    """)
    run_handsfree(path, [], capsys)
    assert fake.texts("stdout") == {
        (("epoch", 0),): "epoch 0", (("epoch", 1),): "epoch 1", (): "after",
    }


def test_explain_runs_nothing(fake: FakeFlor, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(DATA / "mnist_style.py")
    assert runner.run_script(path, [], explain=True) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: 2 loops instrumented\nline 96: ")
    assert fake.logs == [] and fake.args == {} and fake.loops == [] and fake.commits == 0


def test_logging_setup_is_left_alone(fake: FakeFlor, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_script(tmp_path, """\
        import logging
        logging.warning("no handler configured")   # logging's own last-resort/basicConfig
        logging.getLogger("quiet").info("below the level: neither shown nor stored")
    """)
    call_handlers = logging.Logger.callHandlers
    with fresh_logging():
        assert runner.run_script(path, []) == 0
        root = logging.getLogger()
        assert len(root.handlers) == 1 and root.level == logging.WARNING  # basicConfig's
    assert logging.Logger.callHandlers is call_handlers
    assert "WARNING:root:no handler configured" in capsys.readouterr().err
    assert fake.texts("log") == {(): "WARNING:root:no handler configured"}


# ------------------------------------------------------------------ pieces
def test_stateful_picks_torch_objects_by_variable_name() -> None:
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scope = {
        "net": net, "also_net": net, "first": net[0], "relu": net[1], "opt": opt,
        "sched": torch.optim.lr_scheduler.StepLR(opt, 1),
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
        "off": torch.amp.GradScaler("cpu", enabled=False),
        "Linear": torch.nn.Linear, "lr": 0.1, "__builtins__": {},
    }
    assert sorted(runner.stateful(scope)) == ["net", "opt", "plateau", "sched"]


def test_capture_keeps_one_text_per_context() -> None:
    records: list[tuple[str, str]] = []
    cap = Capture(lambda name, text: records.append((name, text)))
    cap.add("stdout", "before\n")
    cap.enter_loop()
    cap.add("stdout", "a")
    cap.add("stdout", "b\nc\n")
    cap.end_iteration()
    cap.add("stdout", "\n")  # an empty line alone records nothing
    cap.end_iteration()
    cap.exit_loop()
    cap.add("stdout", "after\n")
    cap.add("log", "INFO:x:done\n")
    assert records == [("stdout", "ab\nc")]
    cap.close()
    assert records[1:] == [("stdout", "before\nafter"), ("log", "INFO:x:done")]


# ------------------------------------------------------------------ end to end
@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository ``hfproj`` holding the example scripts; data under tmp_path/home."""
    repo = tmp_path / "hfproj"
    repo.mkdir()
    for name in ("mnist_style.py", "while_true.py"):
        shutil.copy(DATA / name, repo / name)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "scripts"]):
        subprocess.run([*git, *args], cwd=repo, check=True)
    return repo


def command(repo: Path, *args: str, flordb_cli: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ, "FLORDB_HOME": str(repo.parent / "home"), "FLORDB_QUIET": "1",
        "PYTHONPATH": str(ROOT),
    }
    prefix = [sys.executable, "-m", "flordb"] if flordb_cli else [sys.executable]
    return subprocess.run([*prefix, *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=240, check=False)


def query(repo: Path, sql: str) -> list[dict[str, Any]]:
    done = command(repo, "query", sql, "--no-backfill", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


@pytest.mark.slow
def test_flordb_run_records_an_unmodified_script(project: Path) -> None:
    pytest.importorskip("torch")
    plain = command(project, "mnist_style.py", "--epochs", "2", flordb_cli=False)
    recorded = command(project, "run", "mnist_style.py", "--epochs", "2")
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == plain.stdout  # same printed losses, bit for bit
    rows = query(project, "SELECT epoch, batch_idx, epochs, lr, stdout FROM hfproj "
                          "WHERE batch_idx IS NOT NULL ORDER BY epoch, batch_idx")
    expected = [(epoch, batch) for epoch in (0, 1) for batch in range(4)]
    assert [(r["epoch"], r["batch_idx"]) for r in rows] == expected
    assert {(r["epochs"], r["lr"]) for r in rows} == {(2, 1.0)}
    for r in rows:
        assert r["stdout"].startswith(f"Train Epoch: {r['epoch'] + 1} [{16 * r['batch_idx']}/64")
        assert r["stdout"] in plain.stdout
    runs = json.loads(command(project, "runs", "--format", "json").stdout)
    assert [run["mode"] for run in runs] == ["handsfree"]  # replay re-runs it via flordb run
    checkpoints = command(project, "checkpoints", "--format", "json")
    objects = {row["object"] for row in json.loads(checkpoints.stdout)}
    assert {"model", "optimizer", "scheduler"} <= objects


@pytest.mark.slow
def test_flordb_run_kwargs_override_the_scripts_argparse_default(project: Path) -> None:
    pytest.importorskip("torch")
    done = command(project, "run", "mnist_style.py", "--epochs", "1", "--kwargs", "gamma=0.5")
    assert done.returncode == 0, done.stderr
    assert {r["gamma"] for r in query(project, "SELECT gamma FROM hfproj")} == {0.5}


@pytest.mark.slow
def test_flordb_run_without_instrumentable_loop_and_explain(project: Path) -> None:
    explained = command(project, "run", "--explain", "while_true.py")
    assert explained.returncode == 0
    assert explained.stdout.startswith("while_true.py: nothing instrumented: the loop at line 6")
    assert json.loads(command(project, "runs", "--format", "json").stdout) == []
    done = command(project, "run", "while_true.py")
    assert done.returncode == 0, done.stderr
    assert query(project, "SELECT stdout FROM hfproj") == [{"stdout": done.stdout.rstrip("\n")}]
