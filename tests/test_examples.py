"""Every example's demo runs end to end, as a user would run it.

Each ``examples/*/demo.py`` builds its own git repository and ``FLORDB_HOME``
under a temporary directory (here: this test's ``tmp_path``, through ``TMPDIR``),
records runs, queries them and backfills a metric in hindsight.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMOS = sorted(p.parent.name for p in (REPO_ROOT / "examples").glob("*/demo.py"))

# Lines each demo must print (besides exiting 0), e.g. a replay that checked
# every value it recomputed and flagged none.
EXPECTED: dict[str, list[str]] = {
    "mlp_digits": ["val_loss", "backfill done: 2 run(s)"],
    "cnn_sweep": ["best_epoch", "wrote ", "grad_norm", "backfill done: 3 run(s)"],
    "sklearn_sgd": ["coef", "val_loss", "backfill done: 2 run(s)"],
}


def test_every_example_has_a_demo_and_a_readme() -> None:
    assert {"mlp_digits", "cnn_sweep", "sklearn_sgd"} <= set(DEMOS)
    listed = (REPO_ROOT / "examples" / "README.md").read_text()
    for name in DEMOS:
        assert f"{name}/" in listed, f"examples/README.md does not list {name}"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", DEMOS)
def test_demo_runs(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLORDB_")}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / name / "demo.py")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=580, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name}/demo.py exited {proc.returncode}:\n{output[-6000:]}"
    assert "Done." in proc.stdout
    assert "Traceback" not in output, output[-6000:]
    assert "mismatch" not in output, output[-6000:]
    for needle in EXPECTED.get(name, []):
        assert needle in output, f"{name}/demo.py never printed {needle!r}:\n{output[-6000:]}"
    # The replayed rows were checked against the recorded ones: none is flagged.
    flagged = [line for line in proc.stdout.splitlines() if line.startswith("backfill ")]
    if flagged:
        assert flagged[-1].split("|")[-1].strip() == "0", flagged[-1]
