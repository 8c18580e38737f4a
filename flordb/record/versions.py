"""Code versions: a commit of the exact working tree, made without moving the
user's branch, index or working tree.

The tree is staged into a *copy* of the user's index (its stat cache makes
``git add -A`` cheap), written with ``write-tree`` and committed with
``commit-tree``. The commit is kept alive under ``refs/flor/trees/<tree>``, so
identical trees reuse one commit and ``git gc`` never drops it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import VersionError

REF_PREFIX = "refs/flor/trees/"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "flordb",
    "GIT_AUTHOR_EMAIL": "flordb@localhost",
    "GIT_COMMITTER_NAME": "flordb",
    "GIT_COMMITTER_EMAIL": "flordb@localhost",
}


@dataclass(frozen=True)
class CodeVersion:
    vid: str  # full 40-hex commit id
    branch: str | None
    head: str | None  # the user's HEAD commit, None in a repo with no commits


def git(
    repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
    strip: bool = True,
) -> str:
    """Run git in ``repo``; raise VersionError with git's own message on failure."""
    proc = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise VersionError(f"git {args[0]} failed in {repo}: {msg[-1] if msg else proc.returncode}")
    return proc.stdout.strip() if strip else proc.stdout


def repo_root(start: Path | None = None) -> Path:
    """The top of the git repository around ``start`` (default: the working directory)."""
    start = Path(start or Path.cwd()).resolve()
    if shutil.which("git") is None:
        raise VersionError("git is not installed; flordb records code versions with git")
    proc = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise VersionError(
            f"{start} is not inside a git repository; run `git init` there first "
            "(flordb records the exact code of every run as a git commit)"
        )
    return Path(proc.stdout.strip())


def projid_of(root: Path) -> str:
    """A project is the name of its repository's top-level directory."""
    return root.name


def snapshot_version(root: Path) -> CodeVersion:
    """Commit the working tree (tracked and untracked-not-ignored files) under refs/flor/."""
    git_dir = Path(git(root, "rev-parse", "--absolute-git-dir"))
    head = git(root, "rev-parse", "--verify", "-q", "HEAD", check=False) or None
    branch = git(root, "symbolic-ref", "--short", "-q", "HEAD", check=False) or None
    with tempfile.TemporaryDirectory(prefix="flordb-index-") as tmp:
        index = Path(tmp) / "index"
        if (git_dir / "index").exists():
            shutil.copyfile(git_dir / "index", index)
        env = {"GIT_INDEX_FILE": str(index)}
        git(root, "add", "-A", "--", ".", env=env)
        tree = git(root, "write-tree", env=env)
    ref = REF_PREFIX + tree
    existing = git(root, "rev-parse", "--verify", "-q", ref, check=False)
    if existing:
        return CodeVersion(existing, branch, head)
    parents = ["-p", head] if head else []
    vid = git(
        root, "commit-tree", tree, *parents, "-m", f"flordb: code version of tree {tree[:12]}",
        env={**_IDENTITY, **{k: v for k, v in os.environ.items() if k in _IDENTITY}},
    )
    git(root, "update-ref", ref, vid)
    return CodeVersion(vid, branch, head)


def read_file_at(root: Path, vid: str, relpath: str) -> str:
    """The text of ``relpath`` as it was in code version ``vid``."""
    return git(root, "show", f"{vid}:{relpath}", strip=False)
