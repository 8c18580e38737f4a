"""``flordb plot``: a PNG of the right size with one visible line per run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flordb.errors import FlorError
from flordb.interfaces import plot as plotting

TRAIN = """\
import flordb as flor
lr = flor.arg("lr", 0.1)
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(5)):
        flor.log("loss", 2.0 / (1 + lr * 10 * (5 * epoch + step)))
    flor.log("val_acc", 0.5 + lr * epoch)
flor.log("final", 1.0 - lr)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("plot")
    repo, home = root / "curves", root / "home"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "train.py").write_text(TRAIN)
    env = dict(os.environ, FLORDB_HOME=str(home))
    for lr in (0.3, 0.1, 0.03):
        subprocess.run([sys.executable, "train.py", "--kwargs", f"lr={lr}"], cwd=repo, env=env,
                       check=True, capture_output=True)
    return repo, home


@pytest.fixture(autouse=True)
def _env(project, monkeypatch):
    monkeypatch.setenv("FLORDB_HOME", str(project[1]))
    monkeypatch.chdir(project[0])


def _pixels(path: Path) -> tuple[tuple[int, int], float, int]:
    """(size, fraction of non-white pixels, number of distinct saturated colours)."""
    import numpy as np
    from PIL import Image

    im = Image.open(path).convert("RGB")
    px = np.asarray(im).reshape(-1, 3).astype(int)
    inked = float((px != 255).any(axis=1).mean())
    saturated = px[(px.max(axis=1) - px.min(axis=1)) > 80]  # line colours, not greys
    hues = {tuple(p) for p in (saturated // 64).tolist()}
    return im.size, inked, len(hues)


def test_loss_per_step_one_line_per_run(tmp_path):
    out = plotting.plot("loss", out=tmp_path / "loss.png", backfill=False)
    size, inked, hues = _pixels(Path(out))
    assert size == (800, 450)
    assert 0.02 < inked < 0.6  # drawn, and not a solid block
    assert hues >= 3  # three runs, three colours


def test_by_arg_and_where(tmp_path):
    out = plotting.plot("val_acc", by="lr", where="lr > 0.05", out=tmp_path / "v.png",
                        backfill=False)
    size, inked, hues = _pixels(Path(out))
    assert size == (800, 450) and inked > 0.02 and hues >= 2


def test_labels_name_the_args_that_differ():
    import pandas as pd

    df = pd.DataFrame({"run_id": ["a", "b"], "lr": [0.1, 0.01], "seed": [1, 1]})
    assert plotting._labels(df, "run_id", ["lr", "seed"]) == {"a": "lr=0.1", "b": "lr=0.01"}


def test_global_step_for_nested_loops(tmp_path, monkeypatch):
    seen = {}
    real = plotting.draw

    def spy(frame, y, **kw):
        seen.update(kw, rows=len(frame))
        return real(frame, y, **kw)

    monkeypatch.setattr(plotting, "draw", spy)
    plotting.plot("loss", out=tmp_path / "g.png", backfill=False)
    assert seen["levels"] == ["epoch", "step"] and seen["x"] is None and seen["rows"] == 45


@pytest.mark.parametrize(
    "kwargs, message",
    [({"y": "nope"}, "no column 'nope'"),
     ({"y": "final"}, "logged once per run"),
     ({"y": "loss", "project": "elsewhere"}, "no project 'elsewhere'"),
     ({"y": "loss", "where": "lr > 5"}, "no numeric values")],
)
def test_errors_name_the_fix(tmp_path, kwargs, message):
    with pytest.raises(FlorError, match=message):
        plotting.plot(out=tmp_path / "x.png", backfill=False, **kwargs)


def test_run_level_metric_against_an_arg(tmp_path):
    out = plotting.plot("final", x="lr", out=tmp_path / "f.png", backfill=False)
    assert _pixels(Path(out))[1] > 0.02


def test_cli(tmp_path):
    out = tmp_path / "cli.png"
    proc = subprocess.run([str(Path(sys.executable).parent / "flordb"), "plot", "loss", "-o",
                           str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stderr and _pixels(out)[0] == (800, 450)
