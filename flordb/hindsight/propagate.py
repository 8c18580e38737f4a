"""Propagate hindsight ``flor.log`` statements from a new version of a script to an old one.

Hindsight logging adds a ``flor.log(...)`` to today's script and wants the
same value from runs of last month's script; replay runs the *old* code, so the
statement must be written into the old version at the place that corresponds
to its place in the new one::

    >>> new = "import flordb as flor\\nfor x in data:\\n    y = f(x)\\n    flor.log('y', y)\\n"
    >>> old = "import flordb as flor\\nfor item in data:  # v1\\n    y = f(item)\\n"
    >>> print(propagate(new, old), end="")
    import flordb as flor
    for item in data:  # v1
        y = f(item)
        flor.log('y', y)

The places are found by matching the two syntax trees (``astmatch``, a
GumTree-style matcher); the statement goes after the old counterpart of its
nearest matched predecessor, else before that of its successor, else at the
edge of the matched block. Names are renamed to the old version's names where
the matching pairs them. The old text is edited line-wise, so its comments
and formatting survive. See docs/propagation.md.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import copy
import difflib
import io
import re
import sys
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from flordb.errors import PropagateError
from flordb.hindsight.astmatch import Matcher, Node, ScopeIndex, Tree, free_names

__all__ = ["LogSite", "Propagation", "Refusal", "log_sites", "logged_names", "main",
           "propagate", "propagate_detailed"]

_BUILTINS = frozenset(dir(builtins))
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


@dataclass(frozen=True)
class Refusal:
    """A statement of NEW that was not propagated, and why."""

    statement: str  # the statement's source text in NEW
    name: str  # log name
    reason: str  # e.g. "its enclosing loop `for x, y in loader` has no match in the old version"


@dataclass(frozen=True)
class Propagation:
    """The old source with the statements inserted, and what happened to each."""

    source: str  # OLD with inserted statements
    inserted: list[tuple[str, int]]  # (statement text as inserted, 1-based line in result)
    refused: list[Refusal]


@dataclass(frozen=True)
class LogSite:
    """One ``flor.log`` call found statically: its name, loop chain and line."""

    name: str
    loops: tuple[str, ...]
    line: int


def propagate(new_source: str, old_source: str) -> str:
    """``old_source`` with every ``flor.log`` statement of ``new_source`` it lacks inserted.

    Prints one line per statement that could not be placed, to stderr:
    ``flordb: warning: not propagated: <stmt> (<reason>)``.

    >>> print(propagate("import flordb as flor\\nx = 1\\nflor.log('x', x)\\n", "x = 1\\n"), end="")
    import flordb as flor
    x = 1
    flor.log('x', x)
    """
    result = propagate_detailed(new_source, old_source)
    for refusal in result.refused:
        print(f"flordb: warning: not propagated: {refusal.statement} ({refusal.reason})", file=sys.stderr)
    return result.source


def propagate_detailed(new_source: str, old_source: str, names: Iterable[str] | None = None) -> Propagation:
    """Like ``propagate`` but returns what was inserted and refused; only
    statements whose log name is in ``names`` when given.

    >>> r = propagate_detailed("import flordb as flor\\nflor.log('a', b)\\n", "import flordb as flor\\n")
    >>> r.refused[0].reason
    'reads `b`, which the old version does not define there'
    """
    return _Propagator(new_source, old_source, names).run()


# ---------------------------------------------------------------------------
# recognising flor.log statements
# ---------------------------------------------------------------------------

def _parse(source: str, label: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as e:
        raise PropagateError(f"{label} does not parse: line {e.lineno}: {e.msg}") from None
    except ValueError as e:  # null bytes
        raise PropagateError(f"{label} does not parse: {e}") from None


def _flor_aliases(tree: ast.AST) -> list[str]:
    """Names bound to the flordb module by imports, in source order."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "flordb":
                    found.append(a.asname or "flordb")
    return sorted(set(found), key=found.index)


def _log_call(node: ast.AST | None, aliases: Sequence[str]) -> ast.Call | None:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "log"
            and isinstance(node.func.value, ast.Name) and node.func.value.id in aliases and node.args):
        return node
    return None


def _log_name(call: ast.Call) -> str:
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return ast.unparse(arg)


def _logged(tree: ast.AST, aliases: Sequence[str]) -> set[str]:
    calls = (_log_call(node, aliases) for node in ast.walk(tree))
    return {_log_name(c) for c in calls if c is not None}


@dataclass
class _Candidate:
    stmt: ast.stmt
    call: ast.Call
    name: str
    wrapped: bool  # `x = flor.log("x", expr)` rather than `flor.log(...)`
    text: str = ""
    order: int = 0


def _candidates(tree: ast.Module, aliases: Sequence[str]) -> list[_Candidate]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and (call := _log_call(node.value, aliases)):
            found.append(_Candidate(node, call, _log_name(call), False))
        elif (isinstance(node, ast.Assign) and (call := _log_call(node.value, aliases))
              and len(call.args) >= 2):
            found.append(_Candidate(node, call, _log_name(call), True))
    found.sort(key=lambda c: (c.stmt.lineno, c.stmt.col_offset))
    for k, c in enumerate(found):
        c.order = k
    return found


# ---------------------------------------------------------------------------
# text helpers: the old source is edited line by line, never re-printed
# ---------------------------------------------------------------------------

def _lines(text: str) -> list[str]:
    return _LINE.findall(text)


def _char_col(line: str, byte_col: int) -> int:
    """AST columns count UTF-8 bytes; string indexes count characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def _strip_nl(line: str) -> str:
    return line.rstrip("\r\n")


def _header(node: ast.AST, lines: list[str]) -> str:
    """The first line of a compound statement as written, without the colon."""
    stmt = cast(ast.stmt, node)  # callers pass compound statements, which carry positions
    line = _strip_nl(lines[stmt.lineno - 1])[_char_col(lines[stmt.lineno - 1], stmt.col_offset):]
    text = line.split("#")[0].rstrip() if "#" in line and "'" not in line and '"' not in line else line.rstrip()
    return text[:-1].rstrip() if text.endswith(":") else text


def _string_continuations(text: str) -> set[int]:
    """0-based line numbers of ``text`` that begin inside a multi-line string."""
    inside: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                inside.update(range(tok.start[0], tok.end[0]))  # rows are 1-based
    except (tokenize.TokenError, SyntaxError):
        pass
    return inside


# ---------------------------------------------------------------------------
# the propagator
# ---------------------------------------------------------------------------

@dataclass
class _Spot:
    """Where a statement goes in OLD: after/before an OLD statement of a block."""

    how: str  # "after" | "before"
    stmt: ast.stmt
    block: Node  # OLD block node holding ``stmt``


@dataclass
class _Edit:
    index: int  # insert before this 0-based line of OLD
    order: tuple[int, int]
    lines: list[str]  # without line endings
    report: str = ""


@dataclass
class _Wrap:
    line: int  # 0-based
    col: int  # character column
    text: str
    order: int


class _Propagator:
    def __init__(self, new_source: str, old_source: str, names: Iterable[str] | None,
                 new_label: str = "the new version", old_label: str = "the old version"):
        self.new_source, self.old_source = new_source, old_source
        self.new_tree = _parse(new_source, new_label)
        self.old_tree = _parse(old_source, old_label)
        self.names = None if names is None else set(names)
        self.new_lines = _lines(new_source)
        self.old_lines = _lines(old_source)
        self.new_aliases = _flor_aliases(self.new_tree) or ["flor"]
        self.old_aliases = _flor_aliases(self.old_tree)
        self.refused: list[Refusal] = []
        self.edits: list[_Edit] = []
        self.wraps: list[_Wrap] = []
        nl = re.search(r"\r\n|\r|\n", old_source)
        self.newline = nl.group(0) if nl else "\n"

    # -- main flow ----------------------------------------------------------------
    def run(self) -> Propagation:
        present = _logged(self.old_tree, self.old_aliases + ["flor", "flordb"])
        todo = [c for c in _candidates(self.new_tree, self.new_aliases)
                if c.name not in present and (self.names is None or c.name in self.names)]
        if not todo:
            return Propagation(self.old_source, [], [])
        for c in todo:
            c.text = ast.get_source_segment(self.new_source, c.stmt) or ast.unparse(c.stmt)
            c.text = " ".join(line.strip() for line in c.text.splitlines())
        self._match(todo)
        for c in todo:
            reason = self._place(c)
            if reason:
                self.refused.append(Refusal(c.text, c.name, reason))
        return self._apply()

    def _match(self, todo: list[_Candidate]) -> None:
        # Wrapped assignments stay in the tree as `x = expr`, so that they can
        # match the old `x = expr` they would wrap.
        for c in todo:
            if c.wrapped:
                c.stmt.value = c.call.args[1]  # type: ignore[attr-defined]
        skip = {id(c.stmt) for c in todo if not c.wrapped}
        self.t1 = Tree(self.new_tree, skip)
        self.t2 = Tree(self.old_tree)
        for c in todo:
            if c.wrapped:
                c.stmt.value = c.call  # type: ignore[attr-defined]
        aliases = set(self.new_aliases) | set(self.old_aliases) | {"flor", "flordb"}

        def key(node: ast.AST) -> str | None:
            # Two logs of the same name are the same statement, whatever they log.
            if isinstance(node, ast.Expr) and (call := _log_call(node.value, list(aliases))):
                return "log:" + _log_name(call)
            return None

        self.matcher = Matcher(self.t1, self.t2, key).run()
        self.votes = self.matcher.renames()
        self.scopes1 = ScopeIndex(self.t1)
        self.scopes2 = ScopeIndex(self.t2)
        self.parents = _block_index(self.new_tree)

    # -- placement ------------------------------------------------------------------
    def _place(self, c: _Candidate) -> str | None:
        """Record the edit for one statement; returns a refusal reason instead."""
        owner, fname, _ = self.parents[id(c.stmt)]
        block = self.t1.blocks[(id(owner), fname)]
        renames = self._renames(c, block)
        if c.wrapped:
            return self._wrap(c, renames)
        spot = self._spot(c.stmt, block)
        if isinstance(spot, str):
            return spot
        # A name OLD also has where the statement goes keeps its meaning unless
        # the matching says otherwise more than once.
        visible = self.scopes2.visible(spot.block)
        alias = c.call.func.value.id  # type: ignore[attr-defined]
        for name in [n for n in renames if n in visible and n != alias]:
            scope = self.scopes1.binding_scope(block, name)
            if self.votes[(scope, name)].get(renames[name], 0) < 2:
                del renames[name]
        reason = self._check_loops(block, spot) or self._check_names(c, renames, spot)
        if reason:
            return reason
        return self._insert(c, renames, spot)

    def _spot(self, stmt: ast.stmt, block: Node) -> _Spot | str:
        m1 = self.matcher.m1
        item: ast.stmt = stmt
        while True:
            siblings = block.stmts()
            k = next(i for i, s in enumerate(siblings) if s is item)
            owner = block.parent
            assert owner is not None
            old_block = m1.get(block)
            if old_block is not None:
                found = self._anchor(siblings, k, lambda y, ob=old_block: y.parent is ob)
                if found:
                    return found
                stmts = old_block.stmts()
                # No neighbour has a counterpart: keep to the same edge of the block.
                if k >= len(siblings) / 2 and k > 0:
                    return _Spot("after", stmts[-1], old_block)
                first = stmts[0]
                if _is_docstring(first) and isinstance(old_block.ast, (ast.Module, *_FUNCTIONS)):
                    return _Spot("after", first, old_block)
                return _Spot("before", first, old_block)
            if owner.parent is None:
                return "the old version has no statements"
            if owner in m1:
                return (f"its block `{_block_name(owner.ast, block.field, self.new_lines)}` "
                        f"has no counterpart in the old version")
            if isinstance(owner.ast, _LOOPS):
                return f"its enclosing loop `{_header(owner.ast, self.new_lines)}` has no match in the old version"
            home = next((p for p in owner.ancestors() if p in m1), None)
            region = m1[home] if home is not None else self.t2.root
            found = self._anchor(siblings, k, region.contains)
            if found:
                return found
            if isinstance(owner.ast, _FUNCTIONS):
                what = "class" if isinstance(owner.ast, ast.ClassDef) else "function"
                return (f"its enclosing {what} `{_header(owner.ast, self.new_lines)}` has no match "
                        f"in the old version")
            # An unmatched `if`/`with`/`try` around it: place it as if it were that statement.
            node = owner
            while node.parent is not None and not node.parent.is_block:
                node = node.parent
            if node.parent is None:
                return "no statement around it has a counterpart in the old version"
            item, block = node.ast, node.parent  # type: ignore[assignment]

    def _anchor(self, siblings: list[ast.stmt], k: int, ok) -> _Spot | None:
        """After the nearest matched predecessor or before the nearest matched
        successor, whichever is closer in NEW (the predecessor on a tie)."""
        m1, of = self.matcher.m1, self.t1.of

        def counterpart(j: int) -> Node | None:
            x = of.get(id(siblings[j]))
            y = m1.get(x) if x is not None else None
            if y is not None and y.parent is not None and y.parent.is_block and ok(y):
                return y
            return None

        before = next(((k - j, y) for j in range(k - 1, -1, -1) if (y := counterpart(j))), None)
        after = next(((j - k, y) for j in range(k + 1, len(siblings)) if (y := counterpart(j))), None)
        if before and (not after or before[0] <= after[0]):
            return _Spot("after", before[1].ast, before[1].parent)  # type: ignore[arg-type]
        if after:
            return _Spot("before", after[1].ast, after[1].parent)  # type: ignore[arg-type]
        return None

    def _check_loops(self, block: Node, spot: _Spot) -> str | None:
        for p in [block.parent, *block.parent.ancestors()] if block.parent else []:
            if isinstance(p.ast, _LOOPS) and not p.is_block:
                q = self.matcher.m1.get(p)
                if q is None:
                    return f"its enclosing loop `{_header(p.ast, self.new_lines)}` has no match in the old version"
                if not q.contains(spot.block):
                    return (f"its enclosing loop `{_header(p.ast, self.new_lines)}` matches "
                            f"`{_header(q.ast, self.old_lines)}`, which holds no counterpart of its neighbours")
        return None

    # -- names ------------------------------------------------------------------------
    def _renames(self, c: _Candidate, block: Node) -> dict[str, str]:
        """NEW name -> OLD name for the free names of the statement, by majority of matches."""
        out = {}
        alias = c.call.func.value.id  # type: ignore[attr-defined]
        for name in free_names(c.stmt):
            if name == alias:
                continue
            scope = self.scopes1.binding_scope(block, name)
            votes = self.votes.get((scope, name))
            if not votes:
                continue
            best = max(votes.items(), key=lambda kv: (kv[1], kv[0] == name))
            if best[0] != name and best[1] > votes.get(name, 0):
                out[name] = best[0]
        if self.old_aliases and alias not in self.old_aliases:
            out[alias] = self.old_aliases[0]
        return out

    def _check_names(self, c: _Candidate, renames: dict[str, str], spot: _Spot) -> str | None:
        alias = c.call.func.value.id  # type: ignore[attr-defined]
        line = spot.stmt.end_lineno if spot.how == "after" else spot.stmt.lineno - 1
        visible = self.scopes2.visible(spot.block, line) | _BUILTINS  # type: ignore[arg-type]
        missing = sorted(renames.get(n, n) for n in free_names(c.stmt)
                         if n != alias and renames.get(n, n) not in visible)
        if missing:
            listed = ", ".join(f"`{n}`" for n in missing)
            later = self.scopes2.visible(spot.block)
            if all(n in later for n in missing):
                return f"reads {listed}, which the old version only defines further down"
            return f"reads {listed}, which the old version does not define there"
        return None

    # -- edits ------------------------------------------------------------------------
    def _insert(self, c: _Candidate, renames: dict[str, str], spot: _Spot) -> str | None:
        lines = self.old_lines
        stmt = spot.stmt
        first = stmt.decorator_list[0].lineno if getattr(stmt, "decorator_list", None) else stmt.lineno  # type: ignore[attr-defined]
        start_line = lines[stmt.lineno - 1]
        col = _char_col(start_line, stmt.col_offset)
        indent = start_line[:col]
        if indent.strip():
            return "its place in the old version shares a line with other code"
        if spot.how == "after":
            assert stmt.end_lineno is not None and stmt.end_col_offset is not None
            end_line = lines[stmt.end_lineno - 1]
            tail = _strip_nl(end_line)[_char_col(end_line, stmt.end_col_offset):].strip()
            if tail and not tail.startswith("#"):
                return "its place in the old version shares a line with other code"
            index = stmt.end_lineno
            above = self.new_lines[c.stmt.lineno - 2] if c.stmt.lineno > 1 else "x"
            if not above.strip():
                # NEW sets the statement off with a blank line: go below OLD's
                # blank lines too, when the same block continues after them.
                j = index
                while j < len(lines) and not lines[j].strip():
                    j += 1
                if j == len(lines) or _strip_nl(lines[j])[:len(indent) + 1] == indent + lines[j].strip()[:1]:
                    index = j
        else:
            index = first - 1
            # Keep a comment with the statement it describes.
            while index > 0 and _strip_nl(lines[index - 1]).strip().startswith("#") \
                    and _strip_nl(lines[index - 1]).startswith(indent) \
                    and not _strip_nl(lines[index - 1])[len(indent):len(indent) + 1].isspace():
                index -= 1
        text = self._statement_lines(c.stmt, renames, indent)
        self.edits.append(_Edit(index, (1, c.order), text, "\n".join([text[0].strip(), *text[1:]])))
        return None

    def _statement_lines(self, stmt: ast.stmt, renames: dict[str, str], indent: str) -> list[str]:
        """The statement's NEW text, renamed and re-indented to ``indent`` (no newlines)."""
        assert stmt.end_lineno is not None and stmt.end_col_offset is not None
        lines = [_strip_nl(line) for line in self.new_lines[stmt.lineno - 1:stmt.end_lineno]]
        first, last = stmt.lineno, stmt.end_lineno
        start = _char_col(self.new_lines[first - 1], stmt.col_offset)
        end = _char_col(self.new_lines[last - 1], stmt.end_col_offset)
        subs: dict[int, list[tuple[int, int, str]]] = {}
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and node.id in renames:
                row = node.lineno - first
                src = self.new_lines[node.lineno - 1]
                subs.setdefault(row, []).append(
                    (_char_col(src, node.col_offset), _char_col(src, node.end_col_offset), renames[node.id]))  # type: ignore[arg-type]
        tail = lines[-1][end:]
        if not tail.strip().startswith("#"):
            tail = ""
        lines[-1] = lines[-1][:end]
        for row, items in subs.items():
            line = lines[row]
            for a, b, name in sorted(items, reverse=True):
                line = line[:a] + name + line[b:]
            lines[row] = line
        old_indent = lines[0][:start]
        lines[-1] += tail.rstrip()
        lines[0] = indent + lines[0][start:]
        inside = _string_continuations("\n".join(lines))
        for row in range(1, len(lines)):
            if row not in inside and lines[row].startswith(old_indent):
                lines[row] = indent + lines[row][len(old_indent):]
        return lines

    def _wrap(self, c: _Candidate, renames: dict[str, str]) -> str | None:
        """`x = flor.log("x", e)` becomes a wrap of OLD's `x = e` around `e`."""
        x = self.t1.of.get(id(c.stmt))
        y = self.matcher.m1.get(x) if x is not None else None
        if y is None or not isinstance(y.ast, ast.Assign):
            return "the assignment it wraps has no counterpart in the old version"
        old = y.ast
        text = "\n".join(self._statement_lines(c.stmt, renames, ""))
        try:
            renamed = ast.parse(text).body[0]
        except SyntaxError:
            return "it cannot be rewritten with the old version's names"
        unwrapped = copy.deepcopy(renamed)
        unwrapped.value = unwrapped.value.args[1]  # type: ignore[attr-defined]
        if ast.dump(unwrapped) != ast.dump(old):
            return (f"the assignment it wraps differs in the old version "
                    f"(`{ast.get_source_segment(self.old_source, old)}`)")
        alias = renames.get(c.call.func.value.id, c.call.func.value.id)  # type: ignore[attr-defined]
        name_src = ast.get_source_segment(self.new_source, c.call.args[0]) or repr(c.name)
        value = old.value
        lines = self.old_lines
        self.wraps.append(_Wrap(value.lineno - 1, _char_col(lines[value.lineno - 1], value.col_offset),
                                f"{alias}.log({name_src}, ", c.order))
        assert value.end_lineno is not None and value.end_col_offset is not None
        self.wraps.append(_Wrap(value.end_lineno - 1,
                                _char_col(lines[value.end_lineno - 1], value.end_col_offset),
                                ")", c.order))
        self.edits.append(_Edit(old.lineno - 1, (9, c.order), [], text))  # reported, inserts nothing
        return None

    def _apply(self) -> Propagation:
        lines = list(self.old_lines)
        for w in sorted(self.wraps, key=lambda w: (w.line, w.col, w.order), reverse=True):
            line = lines[w.line]
            lines[w.line] = line[:w.col] + w.text + line[w.col:]
        edits = [e for e in self.edits if e.lines]
        if edits or self.wraps:
            alias = self._missing_alias()
            if alias is not None:
                first = min((e.index for e in self.edits), default=len(lines))
                stmt = "import flordb" if alias == "flordb" else f"import flordb as {alias}"
                edits.append(_Edit(self._import_index(first), (0, 0), [stmt], ""))
        at_end = any(e.index >= len(lines) for e in edits)
        if at_end and lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += self.newline
        out: list[str] = []
        inserted: list[tuple[str, int]] = []
        by_index: dict[int, list[_Edit]] = {}
        for e in edits:
            by_index.setdefault(e.index, []).append(e)
        for index in range(len(lines) + 1):
            for e in sorted(by_index.get(index, []), key=lambda e: e.order):
                if e.report:
                    inserted.append((e.report, len(out) + 1))
                out.extend(line + self.newline for line in e.lines)
            if index < len(lines):
                out.append(lines[index])
        for e in self.edits:
            if not e.lines:  # a wrap: report the line of the wrapped statement
                inserted.append((e.report, e.index + 1 + sum(len(x.lines) for x in edits if x.index <= e.index)))
        inserted.sort(key=lambda t: t[1])
        return Propagation("".join(out), inserted, self.refused)

    def _missing_alias(self) -> str | None:
        if self.old_aliases:
            return None
        used = {c.func.value.id for c in ast.walk(self.new_tree)  # type: ignore[attr-defined]
                if _log_call(c, self.new_aliases) is not None}
        return next(iter(sorted(used)), self.new_aliases[0])

    def _import_index(self, before: int) -> int:
        """After the last top-level import above ``before``, else after docstring/__future__."""
        body = self.old_tree.body
        best = None
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)) and stmt.end_lineno <= before:  # type: ignore[operator]
                best = stmt.end_lineno
        if best is not None:
            return best
        index = 0
        for stmt in body:
            if _is_docstring(stmt) and stmt is body[0] or (isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"):
                index = stmt.end_lineno  # type: ignore[assignment]
            else:
                break
        return index


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _block_name(owner: ast.AST, fname: str, lines: list[str]) -> str:
    head = _header(owner, lines) if hasattr(owner, "lineno") else "<module>"
    word = {"orelse": "else", "finalbody": "finally"}.get(fname, fname)
    return head if fname == "body" else f"{word} of {head}"


def _block_index(tree: ast.AST) -> dict[int, tuple[ast.AST, str, int]]:
    """id(statement) -> (owner, field, index) for every statement of a tree."""
    out = {}
    for node in ast.walk(tree):
        for fname, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                for k, s in enumerate(value):
                    out[id(s)] = (node, fname, k)
    return out


# ---------------------------------------------------------------------------
# which names a script logs, and at which loop level
# ---------------------------------------------------------------------------

def log_sites(source: str) -> list[LogSite]:
    """Every ``flor.log`` call with a literal name, with its chain of ``flor.loop`` names.

    Calls inside helper functions get the chain of the loops the helper is
    called from (best effort: direct calls by name and ``self.method()``).

    >>> src = '''import flordb as flor
    ... def train(loader):
    ...     for x in flor.loop("step", loader):
    ...         flor.log("loss", x)
    ... for epoch in flor.loop("epoch", range(3)):
    ...     train(data)
    ... '''
    >>> log_sites(src)
    [LogSite(name='loss', loops=('epoch', 'step'), line=4)]
    """
    tree = _parse(source, "the script")
    aliases = _flor_aliases(tree) or ["flor"]
    functions: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.setdefault(node.name, []).append(node)
    # For each piece of code (module or function): its log sites and calls, by relative chain.
    local: dict[int, tuple[list[tuple[str, tuple[str, ...], int]], list[tuple[str, tuple[str, ...]]]]] = {}

    def scan(code: ast.AST) -> None:
        sites: list[tuple[str, tuple[str, ...], int]] = []
        calls: list[tuple[str, tuple[str, ...]]] = []
        body = code.body if isinstance(code.body, list) else [code.body]  # type: ignore[attr-defined]
        stack: list[tuple[ast.AST, tuple[str, ...]]] = [(s, ()) for s in reversed(body)]
        while stack:
            node, chain = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue  # scanned on their own
            if isinstance(node, ast.Call):
                if (call := _log_call(node, aliases)) is not None:
                    arg = call.args[0]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        sites.append((arg.value, chain, node.lineno))
                func = node.func
                if isinstance(func, ast.Name) and func.id in functions:
                    calls.append((func.id, chain))
                elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                      and func.value.id in ("self", "cls") and func.attr in functions):
                    calls.append((func.attr, chain))
            inner = chain
            if isinstance(node, (ast.For, ast.AsyncFor)):
                loop = _loop_name(node.iter, aliases)
                if loop is not None:
                    inner = chain + (loop,)
                    stack.append((node.iter, chain))
                    stack.append((node.target, chain))
                    stack.extend((s, chain) for s in reversed(node.orelse))
                    stack.extend((s, inner) for s in reversed(node.body))
                    continue
            stack.extend((child, chain) for child in reversed(list(ast.iter_child_nodes(node))))
        local[id(code)] = (sites, calls)

    scan(tree)
    for defs in functions.values():
        for d in defs:
            scan(d)
    # Entry chains of each function: the chains of the places that call it.
    entries: dict[str, set[tuple[str, ...]]] = {name: set() for name in functions}
    called = {callee for calls in local.values() for callee, _ in calls[1]}
    # Module code runs; so, presumably, do functions nobody here calls (methods
    # called by a framework, a `main` run by an entry point).
    work = list(local[id(tree)][1])
    for name, defs in functions.items():
        if name not in called:
            work.extend(call for d in defs for call in local[id(d)][1])
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while work:
        name, chain = work.pop()
        if (name, chain) in seen or len(chain) > 16:
            continue
        seen.add((name, chain))
        entries[name].add(chain)
        for d in functions[name]:
            for callee, rel in local[id(d)][1]:
                work.append((callee, chain + rel))
    out = [LogSite(n, c, line) for n, c, line in local[id(tree)][0]]
    for name, defs in functions.items():
        for d in defs:
            for n, rel, line in local[id(d)][0]:
                chains = entries[name] or {()}
                for chain in sorted(chains, key=lambda ch: (-len(ch), ch)):
                    out.append(LogSite(n, chain + rel, line))
    out.sort(key=lambda s: (s.line, -len(s.loops)))
    return out


def logged_names(source: str) -> dict[str, list[str]]:
    """Log name -> chain of enclosing ``flor.loop`` names, e.g. ``["epoch", "step"]``.

    A name logged at several places gets its deepest chain (the finest level at
    which it has values).

    >>> logged_names('import flordb as flor\\nfor e in flor.loop("epoch", range(2)):\\n    flor.log("acc", 1)\\n')
    {'acc': ['epoch']}
    """
    best: dict[str, tuple[str, ...]] = {}
    for site in log_sites(source):
        if site.name not in best or len(site.loops) > len(best[site.name]):
            best[site.name] = site.loops
    return {name: list(loops) for name, loops in best.items()}


def _loop_name(node: ast.AST, aliases: Sequence[str]) -> str | None:
    """The name of the first `flor.loop("name", ...)` call in a loop's iterable."""
    for n in ast.walk(node):
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "loop"
                and isinstance(n.func.value, ast.Name) and n.func.value.id in aliases and n.args
                and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)):
            return n.args[0].value
    return None


# ---------------------------------------------------------------------------
# command line (the `flordb propagate` command wraps this)
# ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``--from NEW.py --to OLD.py [--out PATH] [--name NAME ...]``: prints a unified diff."""
    ap = argparse.ArgumentParser(prog="flordb propagate",
                                 description="Propagate flor.log statements from NEW.py into OLD.py.")
    ap.add_argument("--from", dest="new", required=True, metavar="NEW.py", help="the version with the statements")
    ap.add_argument("--to", dest="old", required=True, metavar="OLD.py", help="the version to insert them into")
    ap.add_argument("--out", metavar="PATH", help="write the result here (default: only print the diff)")
    ap.add_argument("--name", action="append", metavar="NAME", help="only this log name (repeatable)")
    args = ap.parse_args(argv)
    try:
        texts = []
        for path in (args.new, args.old):
            try:
                with open(path, encoding="utf-8", newline="") as f:
                    texts.append(f.read())
            except (OSError, UnicodeDecodeError) as e:
                raise PropagateError(f"cannot read {path}: {e}") from None
        result = _Propagator(texts[0], texts[1], args.name, args.new, args.old).run()
        if args.out:
            try:
                with open(args.out, "w", encoding="utf-8", newline="") as f:
                    f.write(result.source)
            except OSError as e:
                raise PropagateError(f"cannot write {args.out}: {e}") from None
    except PropagateError as e:
        print(f"flordb: error: {e}", file=sys.stderr)
        return 1
    for r in result.refused:
        print(f"flordb: warning: not propagated: {r.statement} ({r.reason})", file=sys.stderr)
    sys.stdout.writelines(difflib.unified_diff(
        texts[1].splitlines(keepends=True), result.source.splitlines(keepends=True),
        fromfile=args.old, tofile=args.out or args.old))
    return 0


if __name__ == "__main__":
    sys.exit(main())
