"""Every code block in ``docs/*.md`` runs, and the CLI reference is current.

How a page's fenced blocks are treated, by language tag:

* ``python`` (``py``): run as ``python -`` (the block on stdin), one process per block.
  A block in ``>>>`` REPL style runs its ``>>>``/``...`` lines; the rest is output.
* ``bash`` (``sh``, ``shell``): run by ``bash`` with ``set -eo pipefail``.
* ``console``: each ``$ command`` line (continued by a trailing ``\\``) runs in one
  ``bash``, in order; the lines after a command are its output and are not compared,
  except that a command whose output shows ``flordb: error:`` must fail.
* ``sql``: run by ``flordb shell`` in batch mode (statements end with ``;``).
* ``text``, ``output``, ``diff``, ``json``, ``toml``, ``yaml``, ``ini``, ``csv``: illustrative,
  not run. A block with no language tag is an error: tag it.

Directives, as an HTML comment on the line before a block:

* ``<!-- docs-test: skip -->`` (or ``skip: why``): not run, e.g. it needs a GPU or the
  network. Keep these rare.
* ``<!-- docs-test: file PATH -->``: not run; written to PATH (relative to the current
  directory) for the blocks after it, e.g. a ``train.py`` that a console block runs.

and, anywhere in a page, ``<!-- docs-test: start empty -->``: the page starts in an empty
directory instead of the quickstart project.

Blocks of a page run in order, sharing a directory that ``cd`` in a bash or console
block changes for the blocks after it, with:

* ``FLORDB_HOME`` fresh for the page, ``python`` and ``flordb`` on ``PATH``;
* git with an identity and no user or system configuration;
* by default the working directory ``quickstart/``: a git repository holding the
  ``train.py`` of docs/getting-started.md (its ``file train.py`` block: an MLP on
  scikit-learn's digits that logs ``loss`` per ``epoch``/``step`` and ``val_acc`` per
  ``epoch``, args ``lr`` and ``epochs``), committed, with one run recorded
  (``python train.py``: ``lr=0.05``, 3 epochs). So ``SELECT ... FROM quickstart`` works.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))

RUN_LANGS = {
    "python": "python", "py": "python", "python3": "python",
    "bash": "bash", "sh": "bash", "shell": "bash",
    "console": "console", "shell-session": "console",
    "sql": "sql",
}
SKIP_LANGS = {"text", "txt", "plaintext", "output", "diff", "json", "toml", "yaml", "ini", "csv"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
BLOCK_TIMEOUT = 300


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    directive: str | None  # "skip...", "file PATH" or None

    @property
    def where(self) -> str:
        page = self.page.relative_to(REPO_ROOT) if self.page.is_relative_to(REPO_ROOT) else self.page
        return f"{page}:{self.line}"

    @property
    def skipped(self) -> bool:
        return self.lang in SKIP_LANGS or (self.directive or "").startswith("skip")

    @property
    def file(self) -> str | None:
        d = self.directive or ""
        return d[len("file "):].strip() if d.startswith("file ") else None


def parse(page: Path) -> tuple[list[Block], set[str], list[str]]:
    """(blocks, page directives, problems) of one markdown page."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    page_directives: set[str] = set()
    problems: list[str] = []
    pending: tuple[int, str] | None = None  # a block directive waiting for its fence
    i = 0
    while i < len(lines):
        line = lines[i]
        d = DIRECTIVE.match(line)
        if d:
            body = d.group("body")
            if body.startswith("start "):
                page_directives.add(body)
            else:
                pending = (i + 1, body)
            i += 1
            continue
        m = FENCE.match(line)
        if not m:
            if line.strip() and pending is not None:
                problems.append(f"{page.name}:{pending[0]}: directive "
                                f"'docs-test: {pending[1]}' is not right before a code block")
                pending = None
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        lang = (m.group("info").strip().split() or [""])[0].lower().strip("{}.")
        body_lines: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = lines[j].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            text = lines[j]
            body_lines.append(text[len(indent):] if text.startswith(indent) else text.lstrip())
            j += 1
        directive = pending[1] if pending else None
        pending = None
        block = Block(page, i + 1, lang, "\n".join(body_lines) + "\n", directive)
        blocks.append(block)
        problems.extend(f"{block.where}: {p}" for p in _block_problems(block))
        i = j + 1
    return blocks, page_directives, problems


def _block_problems(block: Block) -> list[str]:
    d = block.directive
    if d is not None and not (d.startswith("skip") or block.file):
        return [f"unknown directive 'docs-test: {d}' (use skip, skip: why, or file PATH)"]
    if block.skipped or block.file:
        return []
    if not block.lang:
        return [("a code block without a language tag: tag it python, bash, console or sql "
                 "so tests/test_docs.py runs it, or text if it is illustrative (put "
                 "<!-- docs-test: skip --> on the line before a block that cannot run here)")]
    if block.lang not in RUN_LANGS:
        return [(f"language {block.lang!r} is neither run ({', '.join(sorted(RUN_LANGS))}) "
                 f"nor illustrative ({', '.join(sorted(SKIP_LANGS))})")]
    if RUN_LANGS[block.lang] == "console" and not console_commands(block.code):
        return ["a console block without any '$ ' command: tag it text if it only shows output"]
    return []


def console_commands(code: str) -> list[tuple[str, list[str]]]:
    """(command, output lines shown after it) for each ``$ `` line of a console block."""
    out: list[tuple[str, list[str]]] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ ") or line == "$":
            cmd = line[2:]
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1] + "\n" + lines[i]
            out.append((cmd, []))
        elif out:
            out[-1][1].append(line)
        i += 1
    return out


def python_source(code: str) -> str:
    """A ``>>>`` REPL-style block's statements; any other block unchanged."""
    lines = code.splitlines()
    if not any(line.startswith(">>>") for line in lines):
        return code
    kept = [line[4:] for line in lines if line.startswith((">>> ", "... ")) or line in (">>>", "...")]
    return "\n".join(kept) + "\n"


# ------------------------------------------------------------------ static checks
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_block_is_run_or_marked_illustrative(page: Path) -> None:
    _blocks, _directives, problems = parse(page)
    assert not problems, "\n".join(problems)


def test_skipped_blocks_are_few() -> None:
    """Illustrative blocks are allowed, but the docs are mostly runnable."""
    blocks = [b for p in PAGES for b in parse(p)[0]]
    marked = [b.where for b in blocks if (b.directive or "").startswith("skip")]
    assert len(marked) <= max(5, len(blocks) // 10), f"too many skip directives: {marked}"


def test_parser_handles_the_forms_in_use(tmp_path: Path) -> None:
    page = tmp_path / "sample.md"
    page.write_text(
        "<!-- docs-test: start empty -->\n\n"
        "```console\n$ echo one \\\n  two\none two\n$ flordb query 'DELETE FROM runs'\n"
        "flordb: error: refused\n```\n\n"
        "<!-- docs-test: file train.py -->\n```python\nprint('hi')\n```\n\n"
        "- a list item\n\n  ```text\n  indented\n  ```\n\n"
        "````markdown\n```\nnested\n```\n````\n\n```\nbare\n```\n"
    )
    blocks, directives, problems = parse(page)
    assert directives == {"start empty"}
    assert [b.lang for b in blocks] == ["console", "python", "text", "markdown", ""]
    assert blocks[1].file == "train.py"
    assert blocks[2].code == "indented\n"
    assert console_commands(blocks[0].code) == [
        ("echo one \n  two", ["one two"]),
        ("flordb query 'DELETE FROM runs'", ["flordb: error: refused"]),
    ]
    assert any("markdown" in p for p in problems) and any("without a language" in p for p in problems)
    assert python_source(">>> x = 1\n>>> print(x)\n1\n") == "x = 1\nprint(x)\n"


def _relative_links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text)
            if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES + [REPO_ROOT / "README.md"],
                         ids=[p.name for p in PAGES] + ["README.md"])
def test_relative_links_resolve(page: Path) -> None:
    broken = [t for t in _relative_links(page.read_text())
              if not (page.parent / t.split("#")[0]).exists()]
    assert not broken, f"{page.relative_to(REPO_ROOT)} links to missing files: {broken}"


def test_cli_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", REPO_ROOT / "scripts" / "gen_cli_docs.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = (DOCS / "cli.md").read_text()
    made_with = re.search(r"\(Python (\d+\.\d+)\)", current)
    if made_with and made_with.group(1) != gen.PYTHON:
        pytest.skip(f"docs/cli.md was generated with Python {made_with.group(1)}; argparse "
                    f"formats help differently on {gen.PYTHON}")
    assert current == gen.render(), "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


# ------------------------------------------------------------------ running the pages
class Page:
    """The sandbox a page's blocks run in."""

    def __init__(self, root: Path, start: str):
        self.root = root
        self.home = root / "flordb-home"
        self.bin = root / "bin"
        self.bin.mkdir()
        # Wrappers, not symlinks: a symlinked venv interpreter would not find its venv.
        python = shlex.quote(sys.executable)
        for name, text in (("python", f'exec {python} "$@"'), ("python3", f'exec {python} "$@"'),
                           ("flordb", f'exec {python} -m flordb "$@"')):
            (self.bin / name).write_text(f"#!/bin/sh\n{text}\n")
            (self.bin / name).chmod(0o755)
        gitconfig = root / "gitconfig"
        gitconfig.write_text(
            "[user]\n\tname = Docs Test\n\temail = docs@example.com\n"
            "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLORDB_", "GIT_"))}
        env.update(
            FLORDB_HOME=str(self.home), PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
            GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1",
            GIT_CEILING_DIRECTORIES=str(root), MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
        )
        self.env = env
        if start == "start empty":
            self.cwd = root / "work"
            self.cwd.mkdir()
        else:
            self.cwd = root / "quickstart"
            self.cwd.mkdir()
            (self.cwd / "train.py").write_text(quickstart_script())
            for cmd in (["git", "init", "-q"], ["git", "add", "train.py"],
                        ["git", "commit", "-qm", "quickstart"], ["python", "train.py"]):
                self.run(cmd, what=f"setting up the quickstart project: {' '.join(cmd)}")

    def run(self, cmd: list[str], what: str, stdin: str | None = None, check: bool = True,
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            cmd, cwd=self.cwd, env=self.env, input=stdin, capture_output=True, text=True,
            timeout=BLOCK_TIMEOUT, check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{what} exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
        return proc

    def bash(self, script: str, what: str) -> None:
        state = self.root / ".cwd"
        state.unlink(missing_ok=True)
        self.run(["bash", "-c", script + f'\npwd > {shlex.quote(str(state))}\n'], what)
        if state.exists():
            self.cwd = Path(state.read_text().strip())

    def execute(self, block: Block) -> None:
        what = f"{block.where} ({block.lang} block)\n{block.code}"
        if block.file:
            path = self.cwd / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code)
            return
        kind = RUN_LANGS[block.lang]
        if kind == "python":
            self.run(["python", "-"], what, stdin=python_source(block.code))
        elif kind == "sql":
            self.run(["flordb", "shell"], what, stdin=block.code)
        elif kind == "bash":
            self.bash("set -eo pipefail\n" + block.code, what)
        else:
            self.bash(console_script(block.code), what)


def console_script(code: str) -> str:
    parts = ["set -o pipefail"]
    for cmd, shown in console_commands(code):
        fails = any(line.startswith("flordb: error:") for line in shown)
        parts.append(f"echo {shlex.quote('$ ' + cmd)}")
        parts.append(cmd)
        parts.append("__s=$?")
        if fails:
            parts.append(f"if [ $__s -eq 0 ]; then echo {shlex.quote('docs-test: expected to fail: ' + cmd)} >&2; exit 98; fi")
        else:
            parts.append(f"if [ $__s -ne 0 ]; then echo {shlex.quote('docs-test: failed: ' + cmd)} >&2; exit $__s; fi")
    return "\n".join(parts)


def quickstart_script() -> str:
    blocks, _, _ = parse(DOCS / "getting-started.md")
    for block in blocks:
        if block.file == "train.py":
            return block.code
    raise AssertionError("docs/getting-started.md has no <!-- docs-test: file train.py --> block")


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_runs(page: Path, tmp_path: Path) -> None:
    blocks, directives, problems = parse(page)
    assert not problems, "\n".join(problems)
    runnable = [b for b in blocks if not b.skipped]
    if not any(not b.file for b in runnable):
        pytest.skip("no runnable blocks")
    sandbox = Page(tmp_path, "start empty" if "start empty" in directives else "project")
    for block in runnable:
        sandbox.execute(block)
