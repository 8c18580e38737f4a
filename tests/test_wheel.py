"""A non-editable install works: the wheel ships sql/schema.sql as flordb/sql.

The wheel is built from a copy of the source tree (so the checkout's build/
stays untouched), installed with ``pip --target`` into a fresh directory and
used through ``PYTHONPATH`` from outside the repository; the dependencies come
from this interpreter's site-packages.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import PYTHON, REPO_ROOT, make_repo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "flordb-src"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(out), str(src)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    [whl] = out.glob("flordb-*.whl")
    return whl


def test_wheel_contains_the_schema_and_the_packages(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "flordb/sql/schema.sql" in names
    assert "flordb/py.typed" in names
    for module in ("flordb/__init__.py", "flordb/record/run.py", "flordb/store/store.py",
                   "flordb/query/engine.py", "flordb/interfaces/cli.py"):
        assert module in names
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_records_and_queries(wheel, tmp_path, flordb_home):
    target = tmp_path / "site"
    proc = subprocess.run(
        [PYTHON, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
         str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    repo = make_repo(tmp_path, flordb_home, name="wheelproj")
    repo.write_script(
        """
        import flordb as flor
        print(flor.__file__)
        for epoch in flor.loop("epoch", range(3)):
            flor.log("acc", epoch / 2)
        """
    )
    env = {"PYTHONPATH": str(target)}
    run = repo.run_script(env=env)
    assert run.stdout.strip().startswith(str(target)), run.stdout
    outside = tmp_path / "outside"
    outside.mkdir()
    check = subprocess.run(
        [PYTHON, "-c", "import flordb.store.schema as s; print(s.sql_dir())"],
        cwd=outside, env={**os.environ, **env}, capture_output=True, text=True, check=False,
    )
    assert check.stdout.strip() == str(target / "flordb" / "sql"), check.stderr
    query = repo.flordb("query", "--format", "csv", "SELECT epoch, acc FROM wheelproj",
                        cwd=outside, env=env)
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["epoch,acc", "0,0.0", "1,0.5", "2,1.0"]
