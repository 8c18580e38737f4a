"""Static analysis of a training script for replay: where each ``flor.log``
sits relative to the checkpointed loop, and which locals a skipped inner loop
must hand back.

Replay may skip an inner loop (restoring its effect from the checkpoint) only
when that is provably harmless: the requested statements sit in the outer
loop's body outside every inner loop, the inner loops are lexically in that
body (so their effect on locals is visible here), and every local they bind or
mutate that the rest of the body reads can be captured at record time. When
any of this fails, replay runs the whole iteration instead — slower, never
silently wrong.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache

FLOR_MODULES = {"flordb"}


@dataclass(frozen=True)
class Site:
    """One ``flor.log(name, ...)`` call: its line and enclosing ``flor.loop`` names."""

    name: str
    line: int
    loops: tuple[str, ...]
    after_outer: bool = False  # at run level, after the outermost loop


@dataclass
class Shape:
    """What replay needs to know about a script."""

    sites: dict[str, list[Site]] = field(default_factory=dict)
    outer: str | None = None  # name of the outermost flor.loop
    outer_line: int | None = None
    inner_lexical: bool = True  # all inner flor.loops are lexically in the outer body


def _aliases(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in FLOR_MODULES:
                    names.add(a.asname or a.name)
    return names or {"flor"}


def _flor_call(node: ast.AST, aliases: set[str], attr: str) -> ast.Call | None:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attr
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in aliases
    ):
        return node
    return None


def _loop_name(node: ast.For, aliases: set[str]) -> str | None:
    """'epoch' for ``for e in flor.loop("epoch", ...)`` (also inside enumerate/zip)."""
    for sub in ast.walk(node.iter):
        call = _flor_call(sub, aliases, "loop")
        if call and call.args and isinstance(call.args[0], ast.Constant):
            return str(call.args[0].value)
    return None


@lru_cache(maxsize=64)
def shape(source: str) -> Shape:
    """Sites of every flor.log name, following calls into functions of the same file."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    functions: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.setdefault(node.name, node)
    out = Shape()
    outermost: list[tuple[int, str]] = []
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)

    def walk(node: ast.AST, loops: tuple[str, ...], stack: tuple[str, ...], lexical: bool) -> None:
        if isinstance(node, scopes):
            return  # function bodies are walked from their call sites
        if isinstance(node, ast.For):
            name = _loop_name(node, aliases)
            if name is not None:
                if not loops:
                    outermost.append((node.lineno, name))
                elif not lexical:
                    out.inner_lexical = False
                walk(node.iter, loops, stack, lexical)
                for part in node.body + node.orelse:
                    walk(part, loops + (name,), stack, lexical)
                return
        if isinstance(node, ast.Call):
            call = _flor_call(node, aliases, "log")
            if call is not None and call.args and isinstance(call.args[0], ast.Constant):
                name = str(call.args[0].value)
                out.sites.setdefault(name, []).append(Site(name, call.lineno, loops))
            target = node.func.id if isinstance(node.func, ast.Name) else None
            if target in functions and target not in stack:
                for part in functions[target].body:  # type: ignore[attr-defined]
                    walk(part, loops, stack + (target,), False if loops else lexical)
        for child in ast.iter_child_nodes(node):
            walk(child, loops, stack, lexical)

    for part in tree.body:
        walk(part, (), (), True)
    if outermost:
        out.outer_line, out.outer = outermost[0]
        # run-level sites after the first outermost loop run after training
        for name, sites in out.sites.items():
            out.sites[name] = [
                Site(s.name, s.line, s.loops, after_outer=not s.loops and s.line > out.outer_line)
                for s in sites
            ]
    return out


# ------------------------------------------------------------ skip blocks
def _stores_loads(nodes: list[ast.stmt]) -> tuple[set[str], set[str], set[str]]:
    """(assigned, loaded, loaded-before-assigned) names of a statement list."""
    assigned: set[str] = set()
    loaded: set[str] = set()
    carried: set[str] = set()

    class V(ast.NodeVisitor):
        def visit_Name(self, n: ast.Name) -> None:
            if isinstance(n.ctx, ast.Load):
                loaded.add(n.id)
                if n.id not in assigned:
                    carried.add(n.id)
            else:
                assigned.add(n.id)

        def visit_AugAssign(self, n: ast.AugAssign) -> None:
            if isinstance(n.target, ast.Name):
                loaded.add(n.target.id)
                if n.target.id not in assigned:
                    carried.add(n.target.id)
                assigned.add(n.target.id)
            else:
                self.visit(n.target)
            self.visit(n.value)

        def visit_Assign(self, n: ast.Assign) -> None:
            self.visit(n.value)  # the value is evaluated before the targets bind
            for t in n.targets:
                self.visit(t)

        def visit_Call(self, n: ast.Call) -> None:
            # `xs.append(v)`: a method call may mutate its receiver
            f = n.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                assigned.add(f.value.id)
            self.generic_visit(n)

        def visit_Subscript(self, n: ast.Subscript) -> None:
            if not isinstance(n.ctx, ast.Load) and isinstance(n.value, ast.Name):
                assigned.add(n.value.id)
            self.generic_visit(n)

        def visit_Attribute(self, n: ast.Attribute) -> None:
            if not isinstance(n.ctx, ast.Load) and isinstance(n.value, ast.Name):
                assigned.add(n.value.id)
            self.generic_visit(n)

    v = V()
    for node in nodes:
        v.visit(node)
    return assigned, loaded, carried


@lru_cache(maxsize=64)
def capture_candidates(source: str, outer_line: int) -> frozenset[str]:
    """Locals that the inner loops of the loop at ``outer_line`` bind or mutate and
    that code outside them (or their next iteration) reads."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    aliases = _aliases(tree)
    outer = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.For) and n.lineno == outer_line), None
    )
    if outer is None:
        return frozenset()
    inner = [
        n for n in ast.walk(outer)
        if isinstance(n, ast.For) and n is not outer and _loop_name(n, aliases)
    ]
    # `np.mean(...)` counts as a possible mutation of `np`; an imported module
    # is not run state, so it is no candidate unless the loop rebinds the name.
    imported = {
        (a.asname or a.name).split(".")[0]
        for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    names: set[str] = set()
    for loop in inner:
        assigned, _, carried = _stores_loads([loop])
        rebound = {
            n.id for n in ast.walk(loop) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
        }
        inside = {id(n) for n in ast.walk(loop)}
        outside_loads = {
            n.id for n in ast.walk(outer)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and id(n) not in inside
        }
        names |= (assigned - (imported - rebound)) & (outside_loads | carried)
    return frozenset(names - aliases)


# ------------------------------------------------ outer mode: re-executed mutations
# Methods that read registered state, or change nothing a logged value sees.
_SAFE_METHODS = frozenset({
    "train", "eval", "state_dict", "parameters", "named_parameters", "buffers",
    "named_buffers", "children", "modules", "named_modules", "get_last_lr", "get_lr",
    "zero_grad", "forward", "to", "cpu", "cuda", "float", "double", "half", "item",
    "detach", "numel", "size", "get_scale",
})


def registered_names(tree: ast.AST) -> set[str]:
    """Local names passed to ``flor.checkpointing(...)`` (``model=net`` gives ``net``)."""
    aliases = _aliases(tree)
    names: set[str] = set()
    for node in ast.walk(tree):
        call = _flor_call(node, aliases, "checkpointing")
        if call is not None:
            names.update(k.value.id for k in call.keywords if isinstance(k.value, ast.Name))
    return names


@lru_cache(maxsize=64)
def outer_mode_hazard(source: str, names: tuple[str, ...]) -> str | None:
    """Why ``outer`` mode could give wrong values for ``names``, or None when it is safe.

    Outer mode restores an iteration's END state and re-runs the outer body
    around the skipped inner loop. A call that mutates registered state there
    (``scheduler.step()``, anywhere in the outer body outside inner loops) would
    then be applied a second time before a requested statement that follows it;
    such iterations run fully instead.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "the script does not parse"
    sh = shape(source)
    if sh.outer_line is None:
        return None
    aliases = _aliases(tree)
    outer = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.For) and n.lineno == sh.outer_line), None
    )
    if outer is None:
        return None
    registered = registered_names(tree)
    wanted_lines = [s.line for n in names for s in sh.sites.get(n, [])]
    if not wanted_lines:
        return None
    last_wanted = max(wanted_lines)
    inside_inner: set[int] = set()
    for n in ast.walk(outer):
        if isinstance(n, ast.For) and n is not outer and _loop_name(n, aliases):
            inside_inner.update(id(m) for m in ast.walk(n))
    for node in ast.walk(outer):
        if id(node) in inside_inner or not isinstance(node, ast.Call):
            continue
        func = node.func
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
            continue
        receiver, method = func.value.id, func.attr
        mutating = (receiver in registered and method not in _SAFE_METHODS) or (
            not registered and method == "step"
        )
        if mutating and node.lineno < last_wanted:
            return (
                f"`{receiver}.{method}(...)` on line {node.lineno} changes checkpointed state "
                "before the requested statement in the same iteration"
            )
    return None
