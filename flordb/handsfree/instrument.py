"""Finds the loops that drive training in an unmodified script and rewrites them.

The rule (also in ``docs/handsfree.md``):

* **Entry scopes** are the module's top-level code (``if __name__ == "__main__":``
  blocks included) and every same-file function or method it reaches through calls
  made outside any loop, transitively (``main()`` -> ``fit()`` -> ...).
* **Outer loop**: among the ``for`` statements of the entry scopes that are not inside
  another loop, those whose body (directly or through called same-file functions)
  contains a nested loop or calls ``.backward()``, ``.step()``, ``.zero_grad()`` or
  ``.partial_fit()``. The first (in reach order) that reaches such a call wins; failing
  that, the first with a nested loop.
* **Inner loop**: the first ``for`` statement nested directly in the outer loop's body,
  or at the top of a same-file function that body calls, that reaches one of those
  calls; failing that, the first such ``for``.
* **Names**: the loop variable (``for epoch in ...`` -> ``epoch``); for
  ``for i, (x, y) in enumerate(...)`` the index name ``i``; otherwise ``epoch`` for the
  outer and ``step`` for the inner level.

Only the two chosen ``for`` statements change (see ``_Wrap``), and every new node
takes the location of the ``for`` it wraps, so tracebacks, line numbers and
comprehensions stay exactly as the user wrote them.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import CodeType

RUNTIME_MODULE = "flordb.handsfree.runner"
RUNTIME_ALIAS = "__flor_hf__"
LEVEL_VARS = ("__flor_hf_outer__", "__flor_hf_inner__")  # the running level objects

# Calls that only training code makes; `.step()` covers optimizers, schedulers and
# scalers alike, `.partial_fit()` the incremental scikit-learn estimators.
TRAINING_CALLS = frozenset({"backward", "step", "zero_grad", "partial_fit"})
# Library entry points that run a whole training loop out of our sight.
LIBRARY_FIT_CALLS = frozenset({"fit", "fit_generator", "train_model"})
# Loop names become columns of the pivoted view; these are taken by the view itself.
RESERVED_NAMES = frozenset({"projid", "run_id", "tstamp", "vid", "filename"})
DEFAULT_NAMES = ("epoch", "step")
# How many same-file calls deep the search follows; deeper helpers are not training
# drivers in any script we have seen, and the bound keeps the walk cheap.
MAX_CALL_DEPTH = 4

_Func = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class LoopInfo:
    """One instrumented loop: where it is, what it is called, which level it is."""

    lineno: int
    name: str
    level: int  # 0 for the outer (checkpointed) loop, 1 for the inner one
    header_text: str  # "for epoch in range(1, args.epochs + 1)"
    function: str | None  # qualified name of the enclosing function; None at module level

    @property
    def kind(self) -> str:
        return "outer" if self.level == 0 else "inner"


@dataclass
class Instrumented:
    """The result of :func:`instrument`: runnable code plus what was done and why."""

    code: CodeType
    tree: ast.Module
    loops: list[LoopInfo]
    reason: str | None  # why nothing was instrumented; None when loops were
    filename: str


def instrument(source: str, filename: str) -> Instrumented:
    """Compile ``source`` with its training loops routed through hands-free mode.

    >>> inst = instrument("for epoch in range(2):\\n    for x in [1]:\\n        pass\\n", "t.py")
    >>> [(loop.name, loop.level) for loop in inst.loops]
    [('epoch', 0), ('x', 1)]

    Raises ``SyntaxError`` (with the user's line) when the source does not parse.
    """
    tree = ast.parse(source, filename)
    chosen, reason = _choose(tree, source)
    if chosen:
        _Wrap({id(loop): (info.level, info.name) for loop, info in chosen}).visit(tree)
        _inject_import(tree)
        ast.fix_missing_locations(tree)
    code = compile(tree, filename, "exec", dont_inherit=True)
    loops = [info for _, info in chosen]
    return Instrumented(code=code, tree=tree, loops=loops, reason=reason, filename=filename)


def flor_source(source: str) -> str:
    """``source`` as if its user had written the ``flor.loop`` calls that hands-free adds.

    Line for line the same text, only the chosen loops' iterables wrapped, so that
    replay's static analysis (log sites per loop level, locals of skipped inner loops)
    reads a hands-free script the way it reads a hand-instrumented one.

    >>> print(flor_source("for epoch in range(3):\\n    opt.step()\\n"), end="")
    for epoch in flor.loop("epoch", range(3)):
        opt.step()
    import flordb as flor
    """
    tree = ast.parse(source)
    chosen, _ = _choose(tree, source)
    if not chosen:
        return source
    alias = next(
        (a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
         for a in node.names if a.name == "flordb"),
        None,
    )
    data = source.encode("utf-8")  # ast column offsets count UTF-8 bytes
    starts = [0] + [m.end() for m in re.finditer(rb"\r\n|\r|\n", data)]
    edits: list[tuple[int, bytes]] = []
    for loop, info in chosen:
        node = loop.iter
        assert node.end_lineno is not None and node.end_col_offset is not None
        bare_tuple = isinstance(node, ast.Tuple)  # `for x in a, b:` needs parentheses
        prefix = f'{alias or "flor"}.loop("{info.name}", {"(" if bare_tuple else ""}'
        edits.append((starts[node.lineno - 1] + node.col_offset, prefix.encode()))
        edits.append((starts[node.end_lineno - 1] + node.end_col_offset,
                      b"))" if bare_tuple else b")"))
    for at, piece in sorted(edits, key=lambda edit: edit[0], reverse=True):
        data = data[:at] + piece + data[at:]
    text = data.decode("utf-8")
    if alias is None:
        # Appended, not prepended: every line keeps its number.
        text += ("" if text.endswith(("\n", "\r")) else "\n") + "import flordb as flor\n"
    return text


def _choose(tree: ast.Module, source: str) -> tuple[list[tuple[ast.For, LoopInfo]], str | None]:
    """The loops to instrument, outer first, or why there are none."""
    finder = _Finder(tree, source)
    reason = finder.uses_flordb()
    if reason is not None:
        return [], reason
    outer = finder.outer_loop()
    if outer is None:
        return [], finder.why_nothing()
    loop, function = outer
    taken: set[str] = set()
    chosen = [(loop, _describe(loop, 0, finder.name_of(function), source, taken))]
    inner = finder.inner_loop(loop, function)
    if inner is not None:
        chosen.append((inner[0], _describe(inner[0], 1, finder.name_of(inner[1]), source, taken)))
    return chosen, None


def explain(inst: Instrumented, display_name: str | None = None) -> str:
    """What ``flordb run --explain`` prints: one line per instrumented loop, or why none.

    >>> inst = instrument("for epoch in range(3):\\n    opt.step()\\n", "t.py")
    >>> print(explain(inst))  # doctest: +ELLIPSIS
    t.py: 1 loop instrumented
    line 1: for epoch in range(3)  ->  flor.loop("epoch", ...)  [outer, checkpointed]
    ...
    """
    name = display_name or inst.filename
    if not inst.loops:
        return (
            f"{name}: nothing instrumented: {inst.reason}\n"
            "The script still runs as a recorded run: its printed lines and logging "
            "records are stored at run level as stdout and log."
        )
    count = len(inst.loops)
    lines = [f"{name}: {count} loop{'s' if count > 1 else ''} instrumented"]
    for loop in inst.loops:
        tags = [loop.kind]
        if loop.level == 0:
            tags.append("checkpointed")
        if loop.function:
            tags.append(f"in {loop.function}()")
        lines.append(
            f'line {loop.lineno}: {loop.header_text}  ->  flor.loop("{loop.name}", ...)'
            f"  [{', '.join(tags)}]"
        )
    lines.append(
        "checkpointed: the torch modules, optimizers, LR schedulers and GradScalers "
        "in scope when the outer loop starts, plus RNG states"
    )
    lines.append(
        "printed lines and logging records are stored per loop iteration as stdout and log"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------- analysis
def _walk(nodes: list[ast.stmt] | list[ast.AST], *, through_loops: bool) -> Iterator[ast.AST]:
    """Every node of ``nodes`` in source order, never entering a definition.

    With ``through_loops=False`` only code that runs once per entry of the block is
    visited: a loop's header and ``else`` but not its body, a comprehension's first
    iterable but not its element expressions.
    """
    stack: list[ast.AST] = list(reversed(nodes))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue  # a definition's body runs later, if at all
        children: list[ast.AST]
        if through_loops:
            children = list(ast.iter_child_nodes(node))
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            children = [node.iter, *node.orelse]
        elif isinstance(node, ast.While):
            children = list(node.orelse)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            children = [node.generators[0].iter]
        else:
            children = list(ast.iter_child_nodes(node))
        stack.extend(reversed(children))


class _Finder:
    """Same-file functions and the loops reachable from the script's entry point."""

    def __init__(self, tree: ast.Module, source: str):
        self.tree = tree
        self.source = source
        self.functions: dict[str, _Func] = {}
        self.methods: dict[str, list[_Func]] = {}
        self.qualname: dict[int, str] = {}
        for node in _walk(tree.body, through_loops=False):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
                self.qualname[id(node)] = node.name
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.methods.setdefault(item.name, []).append(item)
                        self.qualname[id(item)] = f"{node.name}.{item.name}"
        self.scopes = self._entry_scopes()

    def name_of(self, func: _Func | None) -> str | None:
        """``train`` or ``Trainer.fit``; None for module-level code."""
        return None if func is None else self.qualname.get(id(func), func.name)

    # ---------------------------------------------------------------- calls
    def callees(self, node: ast.AST) -> list[_Func]:
        """Same-file functions that ``node`` calls or passes on (``fire.Fire(main)``)."""
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            func = self.functions.get(node.id)
            return [func] if func is not None else []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            # Resolved by method name alone: `trainer.fit()` or `self.train_epoch()`.
            return self.methods.get(node.func.attr, [])
        return []

    def _entry_scopes(self) -> list[tuple[_Func | None, list[ast.stmt]]]:
        scopes: list[tuple[_Func | None, list[ast.stmt]]] = [(None, self.tree.body)]
        seen: set[int] = set()
        index = 0
        while index < len(scopes):
            _, body = scopes[index]
            index += 1
            for node in _walk(body, through_loops=False):
                for func in self.callees(node):
                    if id(func) not in seen and not isinstance(func, ast.AsyncFunctionDef):
                        seen.add(id(func))
                        scopes.append((func, func.body))
        return scopes

    def reaches(self, body: list[ast.stmt], want_loop: bool, depth: int = 0,
                seen: frozenset[int] = frozenset()) -> bool:
        """Whether ``body`` makes a training call (or, with ``want_loop``, has a loop)."""
        for node in _walk(body, through_loops=True):
            if want_loop and isinstance(node, (ast.For, ast.While)):
                return True
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in TRAINING_CALLS
            ):
                return True
            if depth < MAX_CALL_DEPTH:
                for func in self.callees(node):
                    if id(func) not in seen and self.reaches(
                        func.body, want_loop, depth + 1, seen | {id(func)}
                    ):
                        return True
        return False

    # ---------------------------------------------------------------- loops
    def top_loops(self) -> Iterator[tuple[ast.For | ast.While, _Func | None]]:
        """Loops of the entry scopes that are not inside another loop."""
        for func, body in self.scopes:
            for node in _walk(body, through_loops=False):
                if isinstance(node, (ast.For, ast.While)):
                    yield node, func

    def outer_loop(self) -> tuple[ast.For, _Func | None] | None:
        fallback = None
        for loop, func in self.top_loops():
            if not isinstance(loop, ast.For):
                continue
            if self.reaches(loop.body, want_loop=False):
                return loop, func
            if fallback is None and self.reaches(loop.body, want_loop=True):
                fallback = (loop, func)
        return fallback

    def inner_loop(self, outer: ast.For, func: _Func | None) -> tuple[ast.For, _Func | None] | None:
        seen = frozenset({id(func)}) if func is not None else frozenset()
        candidates = list(self._nested_fors(outer.body, func, 0, seen))
        for loop, owner in candidates:
            if self.reaches(loop.body, want_loop=False):
                return loop, owner
        return candidates[0] if candidates else None

    def _nested_fors(self, body: list[ast.stmt], owner: _Func | None, depth: int,
                     seen: frozenset[int]) -> Iterator[tuple[ast.For, _Func | None]]:
        # In execution order: a helper's loops appear where the helper is called.
        for node in _walk(body, through_loops=False):
            if isinstance(node, ast.For):
                yield node, owner
            if depth < MAX_CALL_DEPTH:
                for func in self.callees(node):
                    if id(func) not in seen:
                        yield from self._nested_fors(func.body, func, depth + 1,
                                                     seen | {id(func)})

    # ---------------------------------------------------------------- reasons
    def uses_flordb(self) -> str | None:
        """Why not to instrument a script that already calls ``flor.loop`` itself.

        Importing flordb alone is no reason: hindsight logging adds ``flor.log``
        statements (and the import) to a hands-free script before replaying it.
        """
        modules: set[str] = set()  # names bound to the flordb module
        functions: set[str] = set()  # names bound to flordb.loop
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "flordb":
                        modules.add(alias.asname or "flordb")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "flordb":
                functions.update(a.asname or a.name for a in node.names if a.name == "loop")
        if not modules and not functions:
            return None
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (isinstance(func, ast.Name) and func.id in functions) or (
                isinstance(func, ast.Attribute) and func.attr == "loop"
                and isinstance(func.value, ast.Name) and func.value.id in modules
            ):
                return (
                    f"the script already calls flor.loop (line {node.lineno}: "
                    f"`{self.segment(node)}`); hands-free mode leaves its loops to it"
                )
        return None

    def why_nothing(self) -> str:
        fors: list[ast.For] = []
        whiles: list[ast.While] = []
        for loop, _ in self.top_loops():
            if isinstance(loop, ast.For):
                fors.append(loop)
            else:
                whiles.append(loop)
        training_whiles = [w for w in whiles if self.reaches(w.body, want_loop=True)]
        for loop in training_whiles or whiles:
            return (
                f"the loop at line {loop.lineno} is `{self.header(loop)}`; only `for` loops "
                "are instrumented (write it as `for step in itertools.count():` and keep "
                "the `break`)"
            )
        library = self.library_call()
        if library is not None:
            return (
                f"training seems to happen inside a library call at line {library.lineno} "
                f"(`{self.segment(library)}`); flordb cannot see the loops inside a library"
            )
        if fors:
            lines = ", ".join(str(loop.lineno) for loop in fors)
            return (
                f"no `for` loop drives training: the loops at line {lines} contain no nested "
                "loop and no `.backward()`/`.step()` call"
            )
        return (
            "no loop: the script has no `for` loop at module level or in the functions "
            "called from it"
        )

    def library_call(self) -> ast.Call | None:
        for _, body in self.scopes:
            for node in _walk(body, through_loops=True):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if self.methods.get(node.func.attr):
                    continue  # a same-file method: we would have followed it
                attr = node.func.attr
                receiver = self.segment(node.func.value).lower()
                # `model.train()` only switches a torch module's mode; a trainer's
                # `.train()` (Hugging Face) runs the whole loop.
                if attr in LIBRARY_FIT_CALLS or (attr == "train" and "trainer" in receiver):
                    return node
        return None

    # ---------------------------------------------------------------- text
    def segment(self, node: ast.AST) -> str:
        return _segment(self.source, node)

    def header(self, loop: ast.For | ast.While) -> str:
        if isinstance(loop, ast.While):
            return f"while {self.segment(loop.test)}"
        return f"for {self.segment(loop.target)} in {self.segment(loop.iter)}"


# --------------------------------------------------------------------- rewriting
def _is_enumerate(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    if isinstance(node.func, ast.Name) and node.func.id == "enumerate":
        return True
    # `tqdm(enumerate(loader))` numbers the items just the same.
    return bool(node.args) and isinstance(node.args[0], ast.Call) and _is_enumerate(node.args[0])


def loop_name(loop: ast.For, level: int, taken: set[str]) -> str:
    """The rule for naming a loop level; see the module docstring.

    >>> loop_name(ast.parse("for i, (x, y) in enumerate(d): pass").body[0], 1, set())
    'i'
    """
    target = loop.target
    name: str | None = None
    if isinstance(target, ast.Name):
        name = target.id
    elif (
        isinstance(target, (ast.Tuple, ast.List))
        and target.elts
        and isinstance(target.elts[0], ast.Name)
        and _is_enumerate(loop.iter)
    ):
        name = target.elts[0].id
    if name is None or name == "_" or name in RESERVED_NAMES or name in taken:
        name = DEFAULT_NAMES[min(level, 1)]
    base, suffix = name, 2
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    return name


def _describe(loop: ast.For, level: int, function: str | None, source: str,
              taken: set[str]) -> LoopInfo:
    name = loop_name(loop, level, taken)
    taken.add(name)
    header = f"for {_segment(source, loop.target)} in {_segment(source, loop.iter)}"
    return LoopInfo(lineno=loop.lineno, name=name, level=level, header_text=header,
                    function=function)


class _Wrap(ast.NodeTransformer):
    """Replaces each planned ``for`` statement by its instrumented form.

    ``for epoch in X: BODY`` becomes::

        with __flor_hf__.outer_loop("epoch", locals()) as __flor_hf_outer__:
            for epoch in __flor_hf_outer__.items(X):
                try:
                    BODY
                finally:
                    __flor_hf_outer__.end_iteration()

    The user's frame drives ``flor.loop``'s generator itself (the record and replay
    code look at the frame that resumes it to capture and restore locals), and the
    ``finally`` runs while the iteration is still the loop context, also on
    ``continue``, ``break``, ``return`` and exceptions.
    """

    def __init__(self, plan: dict[int, tuple[int, str]]):
        self.plan = plan

    def visit_For(self, node: ast.For) -> ast.AST:
        self.generic_visit(node)  # an inner loop nested right in this body comes first
        entry = self.plan.get(id(node))
        if entry is None:
            return node
        level, name = entry
        var = LEVEL_VARS[level]
        args: list[ast.expr] = [ast.Constant(name)]
        if level == 0:
            # locals() is evaluated where the loop starts: the module's globals at top
            # level, the function's variables inside main(); model/optimizer live there.
            args.append(ast.Call(func=ast.Name(id="locals", ctx=ast.Load()), args=[],
                                 keywords=[]))
        enter = ast.Call(
            func=ast.Attribute(value=ast.Name(id=RUNTIME_ALIAS, ctx=ast.Load()),
                               attr="outer_loop" if level == 0 else "loop", ctx=ast.Load()),
            args=args, keywords=[],
        )
        items = ast.Call(
            func=ast.Attribute(value=ast.Name(id=var, ctx=ast.Load()), attr="items",
                               ctx=ast.Load()),
            args=[node.iter], keywords=[],
        )
        node.iter = ast.copy_location(items, node.iter)
        end = ast.Expr(ast.Call(
            func=ast.Attribute(value=ast.Name(id=var, ctx=ast.Load()), attr="end_iteration",
                               ctx=ast.Load()),
            args=[], keywords=[],
        ))
        guarded = ast.Try(body=node.body, handlers=[], orelse=[], finalbody=[end])
        node.body = [guarded]
        wrapper = ast.With(
            items=[ast.withitem(context_expr=enter,
                                optional_vars=ast.Name(id=var, ctx=ast.Store()))],
            body=[node],
        )
        # New nodes sit on the `for` line, so tracebacks and f_lineno stay the user's.
        for new in (wrapper, guarded, end, end.value, enter):
            ast.copy_location(new, node)
        return wrapper


def _segment(source: str, node: ast.AST) -> str:
    text = ast.get_source_segment(source, node) or ast.unparse(node)
    return re.sub(r"\s+", " ", text).strip()


def _inject_import(tree: ast.Module) -> None:
    """Add ``import flordb.handsfree.runner as __flor_hf__`` after docstring and futures."""
    index = 0
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        index = 1
    while index < len(body) and isinstance(body[index], ast.ImportFrom) \
            and body[index].module == "__future__":  # type: ignore[attr-defined]
        index += 1
    node = ast.Import(names=[ast.alias(name=RUNTIME_MODULE, asname=RUNTIME_ALIAS)])
    if index < len(body):
        ast.copy_location(node, body[index])
    else:
        node.lineno, node.col_offset = 1, 0
    body.insert(index, node)
