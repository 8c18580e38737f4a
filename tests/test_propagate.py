"""Tests for flordb.hindsight.propagate: placing flor.log statements in older code."""
from __future__ import annotations

import ast
import doctest
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flordb.errors import PropagateError
from flordb.hindsight import astmatch
from flordb.hindsight import propagate as prop_module
from flordb.hindsight.propagate import (
    Propagation,
    Refusal,
    log_sites,
    logged_names,
    main,
    propagate,
    propagate_detailed,
)

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[2] / "shared/corpus/propagation"
OWN_FAMILIES = Path(__file__).resolve().parent / "data/propagate"


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def without(result: str, *inserted: str) -> str:
    """``result`` minus the lines that hold the given statements (any indentation)."""
    keep = [line for line in result.splitlines(keepends=True)
            if line.strip().rstrip("\r\n") not in inserted]
    return "".join(keep)


def line_of(result: str, text: str) -> int:
    for k, line in enumerate(result.splitlines(), 1):
        if line.strip() == text:
            return k
    raise AssertionError(f"{text!r} not in result:\n{result}")


def indent_of(result: str, text: str) -> str:
    line = result.splitlines()[line_of(result, text) - 1]
    return line[: len(line) - len(line.lstrip())]


# ---------------------------------------------------------------------------
# placement
# ---------------------------------------------------------------------------

NEW_MLP = src('''
    import torch
    import flordb as flor

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    for epoch in flor.loop("epoch", range(3)):
        for step, (x, y) in flor.loop("step", enumerate(loader)):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            flor.log("batch_loss", loss.item())
            optimizer.step()
        flor.log("weight_norm", model.weight.norm().item())
''')

OLD_MLP = src('''
    import torch
    import flordb as flor

    # the first version: the network was called `net`
    net = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    for epoch in flor.loop("epoch", range(3)):
        for x, y in flor.loop("step", loader):   # no enumerate yet
            optimizer.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
''')


def test_places_after_the_matched_predecessor_and_renames():
    out = propagate(NEW_MLP, OLD_MLP)
    assert line_of(out, 'flor.log("batch_loss", loss.item())') == line_of(out, "loss.backward()") + 1
    assert indent_of(out, 'flor.log("batch_loss", loss.item())') == " " * 8
    # `model` is `net` in the old version; the end of the epoch body is after the step loop.
    assert 'flor.log("weight_norm", net.weight.norm().item())' in out.splitlines()[-1]
    assert indent_of(out, 'flor.log("weight_norm", net.weight.norm().item())') == " " * 4


def test_everything_else_is_unchanged_byte_for_byte():
    out = propagate(NEW_MLP, OLD_MLP)
    assert without(out, 'flor.log("batch_loss", loss.item())',
                   'flor.log("weight_norm", net.weight.norm().item())') == OLD_MLP


def test_idempotent():
    once = propagate(NEW_MLP, OLD_MLP)
    result = propagate_detailed(NEW_MLP, once)
    assert result.source == once
    assert result.inserted == [] and result.refused == []


def test_detailed_reports_lines_in_the_result():
    result = propagate_detailed(NEW_MLP, OLD_MLP)
    assert isinstance(result, Propagation)
    lines = result.source.splitlines()
    assert len(result.inserted) == 2
    for text, line in result.inserted:
        assert lines[line - 1].strip() == text


def test_names_filter():
    result = propagate_detailed(NEW_MLP, OLD_MLP, names=["weight_norm"])
    assert [t for t, _ in result.inserted] == ['flor.log("weight_norm", net.weight.norm().item())']


def test_statement_moved_into_a_helper_function():
    new = src('''
        import flordb as flor

        def d_step(real, fake):
            opt_d.zero_grad()
            d_loss = bce(disc(real), ones) + bce(disc(fake), zeros)
            d_loss.backward()
            flor.log("d_loss", d_loss.item())
            opt_d.step()
            return d_loss

        for epoch in flor.loop("epoch", range(10)):
            for real in flor.loop("step", data):
                fake = gen(noise())
                d_step(real, fake)
    ''')
    old = src('''
        import flordb as flor

        for epoch in flor.loop("epoch", range(10)):
            for real in flor.loop("step", data):
                fake = gen(noise())
                opt_d.zero_grad()
                d_loss = bce(disc(real), ones) + bce(disc(fake), zeros)
                d_loss.backward()
                opt_d.step()
    ''')
    out = propagate(new, old)
    assert line_of(out, 'flor.log("d_loss", d_loss.item())') == line_of(out, "d_loss.backward()") + 1


def test_loop_moved_into_a_helper_with_renamed_batch_variables():
    new = src('''
        import flordb as flor

        def train(model, loader, optimizer):
            for i, (x, y) in flor.loop("step", enumerate(loader)):
                optimizer.zero_grad()
                flor.log("input_mean", x.mean().item())
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()

        for epoch in flor.loop("epoch", range(3)):
            train(model, train_loader, optimizer)
    ''')
    old = src('''
        import flordb as flor

        for epoch in flor.loop("epoch", range(3)):
            for batch in flor.loop("step", train_loader):
                inputs, targets = batch
                optimizer.zero_grad()
                outputs = model(inputs)
                loss = F.cross_entropy(outputs, targets)
                loss.backward()
                optimizer.step()
    ''')
    out = propagate(new, old)
    stmt = 'flor.log("input_mean", inputs.mean().item())'
    assert line_of(out, stmt) == line_of(out, "optimizer.zero_grad()") + 1


def test_wrapped_in_no_grad_and_if_in_new():
    new = src('''
        import flordb as flor
        import torch

        def evaluate(model, loader):
            total = n = 0
            with torch.no_grad():
                for x, y in loader:
                    total += loss_fn(model(x), y).item()
                    n += 1
                    if n % 10 == 0:
                        flor.log("running", total / n)
            return total / n
    ''')
    old = src('''
        import flordb as flor

        def evaluate(model, loader):
            total = n = 0
            for x, y in loader:
                total += loss_fn(model(x), y).item()
                n += 1
            return total / n
    ''')
    out = propagate(new, old)
    assert line_of(out, 'flor.log("running", total / n)') == line_of(out, "n += 1") + 1
    assert indent_of(out, 'flor.log("running", total / n)') == " " * 8


def test_moved_inside_a_new_with_block():
    new = src('''
        import flordb as flor
        import torch

        for i in flor.loop("step", range(0, n, seq_len)):
            inp, tgt = get_batch(data, i)
            with torch.autocast("cpu"):
                out, state = model(inp, state)
                state = state.detach()
                flor.log("state_norm", state.norm().item())
                loss = criterion(out, tgt)
            loss.backward()
    ''')
    old = src('''
        import flordb as flor

        for i in flor.loop("step", range(0, n, bptt)):
            inp, tgt = get_batch(data, i)
            out, hidden = model(inp, hidden)
            hidden = hidden.detach()
            loss = criterion(out, tgt)
            loss.backward()
    ''')
    out = propagate(new, old)
    stmt = 'flor.log("state_norm", hidden.norm().item())'
    assert line_of(out, stmt) == line_of(out, "hidden = hidden.detach()") + 1
    assert indent_of(out, stmt) == " " * 4


def test_first_statement_of_a_block_goes_first():
    new = src('''
        import flordb as flor
        optimizer = make_optimizer()
        for epoch in flor.loop("epoch", range(3)):
            flor.log("lr", optimizer.param_groups[0]["lr"])
            train_one_epoch()
            evaluate()
    ''')
    old = src('''
        import flordb as flor
        optimizer = make_optimizer()
        for epoch in flor.loop("epoch", range(3)):
            train_one_epoch()
    ''')
    out = propagate(new, old)
    assert line_of(out, 'flor.log("lr", optimizer.param_groups[0]["lr"])') == 4


def test_comment_stays_with_the_statement_it_describes():
    new = src('''
        import flordb as flor
        for x in flor.loop("step", data):
            flor.log("x", x)
            # the update
            update(x)
    ''')
    old = src('''
        import flordb as flor
        for x in flor.loop("step", data):
            prepare()
            # the update
            update(x)
    ''')
    out = propagate(new, old)
    assert out.splitlines()[3:6] == ['    flor.log("x", x)', "    # the update", "    update(x)"]


# ---------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------

def test_refuses_a_statement_whose_name_is_undefined_and_keeps_the_others():
    new = src('''
        import flordb as flor
        for x in flor.loop("step", data):
            grad_norm = clip(model)
            flor.log("grad_norm", grad_norm)
            step(x)
            flor.log("x", x)
    ''')
    old = src('''
        import flordb as flor
        for x in flor.loop("step", data):
            step(x)
    ''')
    result = propagate_detailed(new, old)
    assert [t for t, _ in result.inserted] == ['flor.log("x", x)']
    assert result.refused == [Refusal('flor.log("grad_norm", grad_norm)', "grad_norm",
                                      "reads `grad_norm`, which the old version does not define there")]


def test_refuses_when_the_enclosing_loop_is_gone(capsys):
    new = src('''
        import flordb as flor

        def evaluate(source):
            total, n = 0.0, 0
            for i in range(0, len(source), 20):
                total += score(source[i:i + 20])
                n += 1
                flor.log("eval_running", total / n)
            return total / n

        for epoch in flor.loop("epoch", range(2)):
            train()
            evaluate(val)
    ''')
    old = src('''
        import flordb as flor

        for epoch in flor.loop("epoch", range(2)):
            train()
    ''')
    out = propagate(new, old)
    assert out == old
    err = capsys.readouterr().err
    assert err.startswith('flordb: warning: not propagated: flor.log("eval_running", total / n) (')
    assert "its enclosing loop `for i in range(0, len(source), 20)` has no match" in err


def test_refuses_when_the_enclosing_function_is_gone():
    new = src('''
        import flordb as flor

        def report(metrics):
            flor.log("f1", metrics["f1"])

        for epoch in flor.loop("epoch", range(2)):
            report(train())
    ''')
    old = src('''
        import flordb as flor

        for epoch in flor.loop("epoch", range(2)):
            train()
    ''')
    result = propagate_detailed(new, old)
    assert result.source == old
    assert "its enclosing function `def report(metrics)` has no match" in result.refused[0].reason


def test_refuses_a_name_the_old_version_binds_only_further_down():
    new = 'import flordb as flor\nflor.log("v", version)\n\n@dec\ndef f():\n    pass\n'
    old = 'import flordb as flor\nversion = 1\n\n@dec\ndef f():\n    pass\n'
    # Placed after the import (its predecessor), `version` would not exist yet.
    result = propagate_detailed(new, old)
    assert result.source == old
    assert result.refused[0].reason == "reads `version`, which the old version only defines further down"


def test_empty_old_version():
    result = propagate_detailed('import flordb as flor\nflor.log("a", 1)\n', "")
    assert result.source == "" and result.refused[0].reason == "the old version has no statements"


def test_a_large_rewritten_block_stays_fast():
    import time

    body = "\n".join(f"    v{i} = f{i}(x, v{i - 1})" for i in range(1, 600))
    new = "import flordb as flor\nfor x in flor.loop('s', d):\n    v0 = x\n" + body + "\n    flor.log('v', v300)\n"
    old = "import flordb as flor\nfor y in flor.loop('s', d):\n    v0 = y\n" + body.replace("(x,", "(y,") + "\n"
    start = time.perf_counter()
    result = propagate_detailed(new, old)
    assert time.perf_counter() - start < 20
    assert result.inserted == [("flor.log('v', v300)", 603)]


def test_refuses_a_block_the_old_version_lacks():
    new = src('''
        import flordb as flor
        for x in flor.loop("s", d):
            step(x)
        else:
            flor.log("finished", True)
    ''')
    old = 'import flordb as flor\nfor x in flor.loop("s", d):\n    step(x)\n'
    result = propagate_detailed(new, old)
    assert result.refused[0].reason == (
        'its block `else of for x in flor.loop("s", d)` has no counterpart in the old version')


def test_already_logged_name_is_not_inserted_again():
    new = 'import flordb as flor\nfor x in flor.loop("s", d):\n    flor.log("loss", f(x) + 1)\n'
    old = 'import flordb as flor\nfor x in flor.loop("s", d):\n    flor.log("loss", f(x))\n'
    result = propagate_detailed(new, old)
    assert result.source == old and result.inserted == [] and result.refused == []


def test_unparseable_input_raises_propagate_error():
    with pytest.raises(PropagateError, match=r"does not parse: line 2: "):
        propagate("import flordb as flor\nfor x in\n", "x = 1\n")
    with pytest.raises(PropagateError, match=r"old version does not parse: line 1"):
        propagate("import flordb as flor\n", "def (:\n")


# ---------------------------------------------------------------------------
# text details: imports, aliases, line endings, indentation, multi-line
# ---------------------------------------------------------------------------

def test_adds_the_import_after_the_last_top_level_import():
    new = 'import torch\nimport flordb as flor\nx = torch.ones(1)\nflor.log("x", x)\n'
    old = '"""Doc."""\nimport torch\nimport numpy as np\n\nx = torch.ones(1)\n'
    out = propagate(new, old)
    assert out == '"""Doc."""\nimport torch\nimport numpy as np\nimport flordb as flor\n\nx = torch.ones(1)\nflor.log("x", x)\n'


def test_uses_the_old_versions_alias():
    new = 'import flordb as flor\nx = 1\nflor.log("x", x)\n'
    old = 'import flordb as fdb\nx = 1\n'
    assert propagate(new, old) == 'import flordb as fdb\nx = 1\nfdb.log("x", x)\n'


def test_crlf_line_endings_are_kept():
    new = NEW_MLP.replace("\n", "\r\n")
    old = OLD_MLP.replace("\n", "\r\n")
    out = propagate(new, old)
    assert "\n" not in out.replace("\r\n", "")
    assert out.replace("\r\n", "\n") == propagate(NEW_MLP, OLD_MLP)


def test_tab_indentation_is_kept():
    new = 'import flordb as flor\nfor x in flor.loop("s", d):\n    y = f(x)\n    flor.log("y", y)\n'
    old = 'import flordb as flor\nfor x in flor.loop("s", d):\n\tif x:\n\t\tpass\n\ty = f(x)\n'
    out = propagate(new, old)
    assert out.endswith('\ty = f(x)\n\tflor.log("y", y)\n')


def test_old_file_without_final_newline():
    new = 'import flordb as flor\nx = 1\nflor.log("x", x)\n'
    old = 'import flordb as flor\nx = 1'
    assert propagate(new, old) == 'import flordb as flor\nx = 1\nflor.log("x", x)\n'


def test_multi_line_statement_is_reindented_and_renamed():
    new = src('''
        import flordb as flor
        def train(model):
            for x in flor.loop("step", data):
                out = model(x)
                flor.log(
                    "out_mean",
                    out.mean().item(),  # a comment inside
                )
    ''')
    old = src('''
        import flordb as flor
        for x in flor.loop("step", data):
            y = net(x)
    ''')
    out = propagate(new, old)
    assert out.endswith('    y = net(x)\n    flor.log(\n        "out_mean",\n'
                        '        y.mean().item(),  # a comment inside\n    )\n')
    ast.parse(out)


def test_assignment_form_wraps_the_old_assignment():
    new = src('''
        import flordb as flor
        for x in flor.loop("step", data):
            loss = flor.log("loss", criterion(model(x), x))
            loss.backward()
    ''')
    old = src('''
        import flordb as flor
        for x in flor.loop("step", data):
            loss = criterion(model(x), x)  # reconstruction
            loss.backward()
    ''')
    result = propagate_detailed(new, old)
    assert result.source == old.replace("loss = criterion(model(x), x)",
                                        'loss = flor.log("loss", criterion(model(x), x))')
    assert result.inserted == [('loss = flor.log("loss", criterion(model(x), x))', 3)]


def test_assignment_form_without_counterpart_is_refused():
    new = 'import flordb as flor\nfor x in flor.loop("s", d):\n    acc = flor.log("acc", evaluate(x))\n'
    old = 'import flordb as flor\nfor x in flor.loop("s", d):\n    step(x)\n'
    result = propagate_detailed(new, old)
    assert result.source == old
    assert "the assignment it wraps has no counterpart" in result.refused[0].reason


# ---------------------------------------------------------------------------
# logged_names (backfill needs the loop level of each name)
# ---------------------------------------------------------------------------

def test_logged_names_with_loop_chains_through_helpers():
    source = src('''
        import flordb as flor

        def train(loader):
            for x in flor.loop("step", loader):
                flor.log("loss", x)
            return 0

        class Runner:
            def evaluate(self):
                flor.log("val_acc", 1.0)

            def run(self):
                for epoch in flor.loop("epoch", range(3)):
                    train(data)
                    self.evaluate()

        flor.log("final", 1)
        for i, _ in flor.loop("outer", enumerate(range(2))):
            y = flor.log("inline", i)
    ''')
    assert logged_names(source) == {
        "loss": ["epoch", "step"], "val_acc": ["epoch"], "final": [], "inline": ["outer"],
    }
    assert [s.line for s in log_sites(source)] == [5, 10, 17, 19]


def test_logged_names_of_an_uncalled_helper_uses_its_own_loops():
    source = 'import flordb as flor\ndef f():\n    for s in flor.loop("step", d):\n        flor.log("a", s)\n'
    assert logged_names(source) == {"a": ["step"]}


# ---------------------------------------------------------------------------
# matcher internals that the placement relies on
# ---------------------------------------------------------------------------

def test_matcher_pairs_renamed_assignments_via_recovery():
    t1 = astmatch.Tree(ast.parse("for x in d:\n    h = h.detach()\n    loss = f(h)\n"))
    t2 = astmatch.Tree(ast.parse("for x in d:\n    state = state.detach()\n    loss = f(state)\n"))
    m = astmatch.Matcher(t1, t2).run()
    assert m.global_renames() == {"h": "state"}


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def test_cli_writes_out_and_prints_a_diff(tmp_path, capsys):
    (tmp_path / "new.py").write_text(NEW_MLP)
    (tmp_path / "old.py").write_text(OLD_MLP)
    rc = main(["--from", str(tmp_path / "new.py"), "--to", str(tmp_path / "old.py"),
               "--out", str(tmp_path / "out.py")])
    captured = capsys.readouterr()
    assert rc == 0
    assert (tmp_path / "out.py").read_text() == propagate(NEW_MLP, OLD_MLP)
    assert '+        flor.log("batch_loss", loss.item())\n' in captured.out
    assert (tmp_path / "old.py").read_text() == OLD_MLP


def test_cli_error_for_unparseable_input(tmp_path):
    (tmp_path / "new.py").write_text("for x in\n")
    (tmp_path / "old.py").write_text("x = 1\n")
    p = subprocess.run([sys.executable, "-m", "flordb.hindsight.propagate", "--from", str(tmp_path / "new.py"),
                        "--to", str(tmp_path / "old.py")], capture_output=True, text=True, cwd=REPO, check=False)
    assert p.returncode == 1
    assert p.stderr.startswith("flordb: error: ") and "new.py does not parse: line 1" in p.stderr
    assert "Traceback" not in p.stderr


def test_docstring_examples():
    failures, _ = doctest.testmod(prop_module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


# ---------------------------------------------------------------------------
# measured on case corpora (check.py judges; see docs/propagation.md)
# ---------------------------------------------------------------------------

def _score(cases_dir: Path) -> tuple[int, int, str]:
    checker = CORPUS / "check.py"
    p = subprocess.run([sys.executable, str(checker), str(cases_dir), "--api", "-q"],
                       capture_output=True, text=True, cwd=CORPUS, timeout=600, check=False,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    m = re.search(r"propagation: (\d+)/(\d+) correct", p.stdout)
    assert m, p.stdout + p.stderr
    return int(m.group(1)), int(m.group(2)), p.stdout


@pytest.mark.skipif(not (CORPUS / "check.py").exists(), reason=f"no propagation corpus at {CORPUS}")
def test_public_corpus_score():
    ok, total, report = _score(CORPUS)
    assert ok >= 0.95 * total, report


@pytest.mark.skipif(not (CORPUS / "check.py").exists(), reason=f"check.py not found at {CORPUS}")
@pytest.mark.parametrize("family", sorted(p.name for p in OWN_FAMILIES.iterdir() if (p / "cases.json").exists()))
def test_held_out_families(family):
    ok, total, report = _score(OWN_FAMILIES / family)
    assert ok == total, report
