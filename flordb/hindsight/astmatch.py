"""GumTree-style matching of two Python syntax trees.

The algorithm follows Falleri et al., "Fine-grained and accurate source code
differencing" (ASE 2014), adapted to Python's ``ast``:

1. **Top-down**: identical subtrees (same hash of kinds, labels and shape) of
   height >= ``MIN_HEIGHT`` are matched, tallest first. A subtree with several
   identical twins is matched last, to the twin whose parent shares the most
   already-matched descendants (dice), then the grand-parent, then position.
2. **Bottom-up**: an unmatched inner node is matched to the same-kind ancestor
   of its matched descendants' counterparts with the best dice coefficient,
   when dice >= ``MIN_DICE`` or when that candidate holds at least half of its
   matched descendants (``MIN_COVER``; refactorings such as "loop body moved
   into a helper" leave the dice low but the cover high).
3. **Recovery**: below every container matched in step 2 the unmatched
   children are aligned field by field, keeping their order (an LCS of
   similarities), and matched recursively; this is what pairs ``net`` with
   ``model`` inside ``loss = loss_fn(net(x), y)``.
4. **Moved code**: an unmatched simple statement or expression is matched to
   one of the same shape (equal but for variable names) inside the counterpart
   of its nearest matched statement container, when at least half of their
   names agree and no other candidate scores as well; this follows
   temporaries that were inlined (``out = model(x)`` -> ``loss_fn(model(x), y)``)
   and statements wrapped in a new ``with``/``if``.

Statement lists (``body``, ``orelse``, ``finalbody``) become pseudo nodes of
kind ``block:<field>`` so that a matched block says where a statement may go.
"""
from __future__ import annotations

import ast
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from itertools import pairwise

MIN_HEIGHT = 2
MIN_DICE = 0.5
MIN_COVER = 0.5
MIN_STMT_SIM = 0.5
# Gaps between aligned statements larger than this many pairs are only
# searched near their diagonal: a block of 800 rewritten statements would
# otherwise cost 640,000 similarity computations.
GAP_PAIRS = 2500
GAP_BAND = 25

# Context and operator nodes are folded into their parent's label: CPython
# shares these instances, and a separate `Load` node per name only adds noise.
_FOLDED = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.Module)


class Node:
    """One node of a matching tree: an AST node or a statement block."""

    __slots__ = (
        "ast",
        "children",
        "field",
        "hash",
        "height",
        "kind",
        "label",
        "parent",
        "pre",
        "shape",
        "size",
    )

    def __init__(self, node: ast.AST, kind: str, label: str, field: str, parent: Node | None):
        self.ast = node  # for a block: the AST node owning the statement list
        self.kind = kind
        self.label = label
        self.field = field  # field of the parent holding this node
        self.children: list[Node] = []
        self.parent = parent
        self.pre = 0
        self.size = 1
        self.height = 1
        self.hash = 0
        self.shape = 0

    @property
    def is_block(self) -> bool:
        return self.kind.startswith("block:")

    def contains(self, other: Node) -> bool:
        """True when ``other`` is a proper descendant of this node."""
        return self.pre < other.pre < self.pre + self.size

    def ancestors(self) -> Iterator[Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def stmts(self) -> list[ast.stmt]:
        """For a block: the full statement list of its owner (skipped ones included)."""
        return getattr(self.ast, self.field)

    def __repr__(self) -> str:  # debugging aid only
        return f"<{self.kind} {self.label!r} #{self.pre}>"


def _label(node: ast.AST) -> str:
    parts = []
    for _name, value in ast.iter_fields(node):
        if isinstance(value, _FOLDED):
            parts.append(type(value).__name__)
        elif isinstance(value, list):
            if value and all(isinstance(v, _FOLDED) for v in value):
                parts.append(",".join(type(v).__name__ for v in value))
            elif value and all(isinstance(v, str) for v in value):
                parts.append(",".join(value))
        elif value is not None and not isinstance(value, ast.AST):
            parts.append(repr(value))
    return "|".join(parts)


class Tree:
    """A Python module as a matching tree, in preorder.

    ``skip`` holds ``id()``s of statements left out (the statements being
    propagated: they have no counterpart by definition and would only blur the
    similarity of their containers).
    """

    def __init__(self, module: ast.Module, skip: frozenset[int] | set[int] = frozenset()):
        self.nodes: list[Node] = []
        self.of: dict[int, Node] = {}
        self.blocks: dict[tuple[int, str], Node] = {}
        self.root = self._build(module, skip)
        self.kinds = [n.kind for n in self.nodes]
        self.labels = [n.kind + ":" + n.label for n in self.nodes]
        self._bags: dict[int, tuple[Counter[str], Counter[str]]] = {}

    def _build(self, module: ast.Module, skip) -> Node:
        # Iterative: long operator chains make deep trees that would hit the
        # recursion limit.
        stack: list[tuple[object, str, Node | None]] = [(module, "", None)]
        while stack:
            item, field, parent = stack.pop()
            if isinstance(item, tuple):  # ("block", owner, field, stmts)
                _, owner, fname, stmts = item
                node = Node(owner, "block:" + fname, "", field, parent)
                self.blocks[(id(owner), fname)] = node
                kids = [(s, "") for s in stmts if id(s) not in skip]
            else:
                assert isinstance(item, ast.AST)
                node = Node(item, type(item).__name__, _label(item), field, parent)
                self.of[id(item)] = node
                kids = []
                for fname, value in ast.iter_fields(item):
                    if isinstance(value, ast.AST):
                        if not isinstance(value, _FOLDED):
                            kids.append((value, fname))
                    elif isinstance(value, list) and value:
                        if isinstance(value[0], ast.stmt):
                            kids.append((("block", item, fname, value), fname))
                        else:
                            kids.extend((v, fname) for v in value
                                        if isinstance(v, ast.AST) and not isinstance(v, _FOLDED))
            node.pre = len(self.nodes)
            self.nodes.append(node)
            if parent is not None:
                parent.children.append(node)
            for kid in reversed(kids):
                stack.append((kid[0], kid[1], node))
        for node in reversed(self.nodes):
            node.size = 1 + sum(c.size for c in node.children)
            node.height = 1 + max((c.height for c in node.children), default=0)
            node.hash = hash((node.kind, node.label, tuple((c.field, c.hash) for c in node.children)))
            label = "" if node.kind == "Name" else node.label
            node.shape = hash((node.kind, label, tuple((c.field, c.shape) for c in node.children)))
        return self.nodes[0]

    def bags(self, node: Node) -> tuple[Counter[str], Counter[str]]:
        """Multisets of the kinds and of the labels in a subtree (cached)."""
        bag = self._bags.get(node.pre)
        if bag is None:
            part = slice(node.pre, node.pre + node.size)
            bag = self._bags[node.pre] = (Counter(self.kinds[part]), Counter(self.labels[part]))
        return bag

    def postorder(self) -> Iterator[Node]:
        stack = [(self.root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                yield node
            else:
                stack.append((node, True))
                stack.extend((c, False) for c in reversed(node.children))


class Matcher:
    """Matches ``t1`` (the newer tree) against ``t2`` (the older one).

    ``key`` optionally names nodes that are the same entity whatever their
    contents (a ``flor.log`` of the same name); such pairs count as similar.
    """

    def __init__(self, t1: Tree, t2: Tree, key: Callable[[ast.AST], str | None] | None = None):
        self.t1, self.t2 = t1, t2
        self.key = key
        self.m1: dict[Node, Node] = {}
        self.m2: dict[Node, Node] = {}
        self._recovered: set[Node] = set()
        self._dice_cache: dict[tuple[int, int], float] = {}

    # -- bookkeeping ----------------------------------------------------------
    def add(self, a: Node, b: Node) -> None:
        self.m1[a] = b
        self.m2[b] = a
        self._dice_cache.clear()

    def add_iso(self, a: Node, b: Node) -> None:
        """Map two isomorphic subtrees node for node (preorders align)."""
        for k in range(a.size):
            x, y = self.t1.nodes[a.pre + k], self.t2.nodes[b.pre + k]
            if x not in self.m1 and y not in self.m2:
                self.m1[x] = y
                self.m2[y] = x
        self._dice_cache.clear()

    def common(self, a: Node, b: Node) -> int:
        """How many descendants of ``a`` are matched to descendants of ``b``."""
        n = 0
        nodes = self.t1.nodes
        for k in range(a.pre + 1, a.pre + a.size):
            y = self.m1.get(nodes[k])
            if y is not None and b.contains(y):
                n += 1
        return n

    def dice(self, a: Node, b: Node) -> float:
        cached = self._dice_cache.get((a.pre, b.pre))
        if cached is None:
            denom = a.size + b.size - 2
            cached = 2 * self.common(a, b) / denom if denom else 0.0
            self._dice_cache[(a.pre, b.pre)] = cached
        return cached

    # -- the four phases --------------------------------------------------------
    def run(self) -> Matcher:
        self.top_down()
        self.bottom_up()
        self.moved_expressions()
        # Once renames are known, `state = state.detach()` agrees with
        # `hidden = hidden.detach()`; a second pass follows those too.
        self.moved_expressions(self.global_renames())
        return self

    def top_down(self) -> None:
        g1: dict[int, list[Node]] = defaultdict(list)
        g2: dict[int, list[Node]] = defaultdict(list)
        for tree, groups in ((self.t1, g1), (self.t2, g2)):
            for n in tree.nodes:
                if n.height >= MIN_HEIGHT and not n.is_block and n.parent is not None:
                    groups[n.hash].append(n)
        hashes = sorted((h for h in g1 if h in g2), key=lambda h: (-g1[h][0].height, -g1[h][0].size))
        reserved1: set[Node] = set()
        reserved2: set[Node] = set()
        ambiguous: list[tuple[list[Node], list[Node]]] = []

        def free(n: Node, mapped: dict[Node, Node], reserved: set[Node]) -> bool:
            return n not in mapped and not any(p in reserved for p in n.ancestors())

        for h in hashes:
            a = [n for n in g1[h] if free(n, self.m1, reserved1)]
            b = [n for n in g2[h] if free(n, self.m2, reserved2)]
            if not a or not b:
                continue
            if len(a) == 1 and len(b) == 1:
                self.add_iso(a[0], b[0])
            else:
                # Twins are decided once every unique subtree is matched, so
                # that the parents' dice has something to go on.
                ambiguous.append((a, b))
                reserved1.update(a)
                reserved2.update(b)
        n1, n2 = len(self.t1.nodes), len(self.t2.nodes)
        scored = []
        for a, b in ambiguous:
            for x in a:
                for y in b:
                    px, py = x.parent, y.parent
                    gx = px.parent if px is not None else None
                    gy = py.parent if py is not None else None
                    scored.append((
                        self.dice(px, py) if px and py else 0.0,
                        self.dice(gx, gy) if gx and gy else 0.0,
                        -abs(x.pre / n1 - y.pre / n2),
                        x.pre, y.pre, x, y,
                    ))
        scored.sort(key=lambda s: s[:5], reverse=True)
        for *_, x, y in scored:
            if x not in self.m1 and y not in self.m2:
                self.add_iso(x, y)

    def candidates(self, a: Node) -> list[Node]:
        """Unmatched same-kind ancestors of the counterparts of ``a``'s descendants."""
        seen: set[Node] = set()
        found = []
        nodes = self.t1.nodes
        for k in range(a.pre + 1, a.pre + a.size):
            y = self.m1.get(nodes[k])
            if y is None:
                continue
            for p in y.ancestors():
                if p in seen:
                    break
                seen.add(p)
                if p.kind == a.kind and p not in self.m2 and p.parent is not None:
                    found.append(p)
        return found

    def bottom_up(self) -> None:
        for a in self.t1.postorder():
            if a in self.m1 or a.parent is None or a.is_block or not a.children:
                continue
            matched = sum(1 for k in range(a.pre + 1, a.pre + a.size) if self.t1.nodes[k] in self.m1)
            if not matched:
                continue
            best, best_score = None, -1.0
            for c in self.candidates(a):
                common = self.common(a, c)
                dice = 2 * common / (a.size + c.size - 2)
                enough = dice >= MIN_DICE or (common >= 2 and common / matched >= MIN_COVER)
                if enough and dice > best_score:
                    best, best_score = c, dice
            if best is not None:
                self.add(a, best)
                self.recover(a, best)
        # The roots always match; recovering them aligns the module body.
        self.add(self.t1.root, self.t2.root)
        self.recover(self.t1.root, self.t2.root)

    def sim(self, x: Node, y: Node) -> float:
        """Similarity of two same-kind nodes, in [0, 2]; 2 for identical subtrees."""
        if x.kind != y.kind:
            return 0.0
        if x.hash == y.hash:
            return 2.0
        if self.key is not None and not x.is_block:
            key_x = self.key(x.ast)
            if key_x is not None and key_x == self.key(y.ast):
                return 1.5
        if x.size == 1 and y.size == 1:
            return 0.5 if x.label != y.label else 1.0
        kx, lx = self.t1.bags(x)
        ky, ly = self.t2.bags(y)
        total = 2 * (x.size + y.size)
        seq = (2 * sum((kx & ky).values()) + 2 * sum((lx & ly).values())) / total
        return max(seq, self.dice(x, y))

    def recover(self, a: Node, b: Node) -> None:
        todo = [(a, b)]
        while todo:
            x, y = todo.pop()
            if x in self._recovered:
                continue
            self._recovered.add(x)
            fields_y: dict[str, list[Node]] = defaultdict(list)
            for c in y.children:
                fields_y[c.field].append(c)
            fields_x: dict[str, list[Node]] = defaultdict(list)
            for c in x.children:
                fields_x[c.field].append(c)
            for field, xs in fields_x.items():
                ys = fields_y.get(field)
                if ys:
                    todo.extend(self._align(xs, ys, stmt_mode=x.is_block))

    def _align(self, xs: list[Node], ys: list[Node], stmt_mode: bool) -> list[tuple[Node, Node]]:
        """Match the children lists of two matched nodes; returns pairs to recurse into."""
        pos_y = {y: j for j, y in enumerate(ys)}
        anchors = [(i, pos_y[self.m1[x]]) for i, x in enumerate(xs)
                   if x in self.m1 and self.m1[x] in pos_y]
        chain = _increasing(anchors)
        out = [(xs[i], ys[j]) for i, j in anchors]
        if not stmt_mode and len(xs) == len(ys):
            # Positional fields (call arguments, tuple items): same index, same role.
            for x, y in zip(xs, ys):
                if x not in self.m1 and y not in self.m2 and x.kind == y.kind:
                    self._pair(x, y, out)
            return out
        bounds = [(-1, -1)] + chain + [(len(xs), len(ys))]
        for (i0, j0), (i1, j1) in pairwise(bounds):
            gx = [x for x in xs[i0 + 1:i1] if x not in self.m1]
            gy = [y for y in ys[j0 + 1:j1] if y not in self.m2]
            if gx and gy:
                for x, y in self._best_order(gx, gy, MIN_STMT_SIM if stmt_mode else 0.0):
                    self._pair(x, y, out)
        return out

    def _pair(self, x: Node, y: Node, out: list[tuple[Node, Node]]) -> None:
        if x.hash == y.hash:
            self.add_iso(x, y)
        else:
            self.add(x, y)
            out.append((x, y))

    def _best_order(self, xs: list[Node], ys: list[Node], threshold: float) -> list[tuple[Node, Node]]:
        """Order-preserving pairing of maximal total similarity (an LCS with weights)."""
        n, m = len(xs), len(ys)
        score = [[0.0] * (m + 1) for _ in range(n + 1)]
        sims: dict[tuple[int, int], float] = {}
        banded = n * m > GAP_PAIRS
        for i in range(n - 1, -1, -1):
            for j in range(m - 1, -1, -1):
                near = not banded or abs(i * m / n - j) <= GAP_BAND
                s = self.sim(xs[i], ys[j]) if near and xs[i].kind == ys[j].kind else 0.0
                if s > 0 and s >= threshold:
                    sims[(i, j)] = s
                best = max(score[i + 1][j], score[i][j + 1])
                if (i, j) in sims:
                    best = max(best, s + score[i + 1][j + 1])
                score[i][j] = best
        pairs = []
        i = j = 0
        while i < n and j < m:
            got = sims.get((i, j))
            if got is not None and abs(score[i][j] - (got + score[i + 1][j + 1])) < 1e-9:
                pairs.append((xs[i], ys[j]))
                i += 1
                j += 1
            elif score[i][j] == score[i + 1][j]:
                i += 1
            else:
                j += 1
        return pairs

    def moved_expressions(self, renamed: dict[str, str] | None = None) -> None:
        """Phase 4; see the module docstring. ``renamed`` maps NEW names to OLD ones."""
        by_shape: dict[int, list[Node]] = defaultdict(list)
        for y in self.t2.nodes:
            if y not in self.m2 and y.height >= MIN_HEIGHT and _movable(y):
                by_shape[y.shape].append(y)
        for x in self.t1.nodes:
            if x in self.m1 or x.height < MIN_HEIGHT or not _movable(x):
                continue
            cands = by_shape.get(x.shape)
            if not cands:
                continue
            home = next((p for p in x.ancestors() if p in self.m1 and _is_container(p)), None)
            if home is None:
                continue
            region = self.m1[home]
            best, best_score, tie = None, 0.0, False
            for y in cands:
                if y in self.m2 or not region.contains(y):
                    continue
                same, total = _name_agreement(self.t1, x, self.t2, y, renamed or {})
                if total == 0 or same == 0 or 2 * same < total:
                    continue
                score = same / total
                if score > best_score:
                    best, best_score, tie = y, score, False
                elif score == best_score:
                    tie = True
            if best is not None and not tie:
                # Same shape means the preorders align; map what is still free.
                self.add_iso(x, best)
                by_shape[x.shape].remove(best)

    # -- results ------------------------------------------------------------------
    def global_renames(self) -> dict[str, str]:
        """NEW name -> OLD name where most matched occurrences, in any scope, say so."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (_scope, new), olds in self.renames().items():
            for old, n in olds.items():
                counts[new][old] += n
        out = {}
        for new, olds in counts.items():
            old, n = max(olds.items(), key=lambda kv: (kv[1], kv[0] == new))
            if old != new and n > olds.get(new, 0):
                out[new] = old
        return out

    def renames(self) -> dict[tuple[Node, str], dict[str, int]]:
        """Votes NEW name -> OLD name from matched names, keyed by NEW binding scope."""
        votes: dict[tuple[Node, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        scopes = ScopeIndex(self.t1)
        for x, y in self.m1.items():
            pair = _name_pair(x.ast, y.ast)
            if pair is None:
                continue
            old_name, new_name = pair[1], pair[0]
            votes[(scopes.binding_scope(x, new_name), new_name)][old_name] += 1
        return votes


def _is_container(node: Node) -> bool:
    return node.parent is None or any(c.is_block for c in node.children)


def _movable(node: Node) -> bool:
    return isinstance(node.ast, ast.expr) or (isinstance(node.ast, ast.stmt) and not _is_container(node))


def _name_agreement(t1: Tree, x: Node, t2: Tree, y: Node, renamed: dict[str, str]) -> tuple[int, int]:
    """(agreeing names, names) of two same-shape subtrees, name by name."""
    same = total = 0
    for k in range(x.size):
        a, b = t1.nodes[x.pre + k], t2.nodes[y.pre + k]
        if a.kind == "Name":
            total += 1
            same += a.ast.id == b.ast.id or renamed.get(a.ast.id) == b.ast.id  # type: ignore[attr-defined]
    return same, total


def _name_pair(a: ast.AST, b: ast.AST) -> tuple[str, str] | None:
    """(new, old) identifiers of two matched nodes that bind or read a name."""
    if isinstance(a, ast.Name) and isinstance(b, ast.Name):
        return a.id, b.id
    if isinstance(a, ast.arg) and isinstance(b, ast.arg):
        return a.arg, b.arg
    if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and type(a) is type(b):
        return a.name, b.name  # type: ignore[union-attr]
    return None


def _increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Longest chain of pairs increasing in both coordinates (input sorted by i)."""
    if not pairs:
        return []
    best: list[list[tuple[int, int]]] = []
    for p in pairs:
        prev = max((c for c in best if c[-1][1] < p[1]), key=len, default=[])
        best.append(prev + [p])
    return max(best, key=len)


# ---------------------------------------------------------------------------
# scopes
# ---------------------------------------------------------------------------

def bound_names(scope: ast.AST) -> set[str]:
    """Names bound anywhere in a module, class, function or lambda (flow-insensitive)."""
    return set(first_bindings(scope))


def first_bindings(scope: ast.AST) -> dict[str, int]:
    """Name -> first line binding it in a module, class, function or lambda scope.

    Parameters count as bound on the ``def`` line. Nested functions, classes,
    lambdas and comprehensions are other scopes and are not entered.
    """
    bound: dict[str, int] = {}

    def bind(name: str, line: int) -> None:
        if line < bound.get(name, line + 1):
            bound[name] = line

    line0 = getattr(scope, "lineno", 0)
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = scope.args
        for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
            if arg is not None:
                bind(arg.arg, line0)
    body = scope.body if isinstance(scope.body, list) else [scope.body]  # type: ignore[attr-defined]
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        line = getattr(node, "lineno", line0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name, line)
            # Decorators run in this scope; the body does not.
            todo.extend(node.decorator_list)
            continue
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bind(node.id, line)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for imp in node.names:
                if imp.name != "*":
                    bind((imp.asname or imp.name).split(".")[0], line)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bind(node.name, line)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                bind(name, line0)
        elif isinstance(node, ast.NamedExpr):
            bind(node.target.id, line)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bind(node.name, line)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bind(node.rest, line)
        todo.extend(ast.iter_child_nodes(node))
    return bound


def free_names(node: ast.AST) -> set[str]:
    """Names a statement or expression reads that it does not bind itself."""
    loads: set[str] = set()
    stores: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else stores).add(n.id)
        elif isinstance(n, ast.arg):
            stores.add(n.arg)
    return loads - stores


class ScopeIndex:
    """Which scope of a tree binds a name used at a node (cached per scope)."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self._bound: dict[Node, dict[str, int]] = {}

    def bound(self, scope: Node) -> dict[str, int]:
        """Name -> first line binding it in ``scope``."""
        if scope not in self._bound:
            self._bound[scope] = first_bindings(scope.ast)
        return self._bound[scope]

    def scopes(self, node: Node) -> list[Node]:
        """Enclosing scopes of ``node``, innermost first, ending with the module.

        A class body is visible only to statements directly in it, as in Python.
        """
        out = []
        first = True
        for p in node.ancestors():
            if p.is_block:
                continue
            if isinstance(p.ast, ast.ClassDef) and not first:
                continue
            if isinstance(p.ast, _SCOPES):
                out.append(p)
                first = False
        return out

    def binding_scope(self, node: Node, name: str) -> Node:
        # A def binds its own name in the enclosing scope, not inside itself.
        for scope in self.scopes(node):
            if name in self.bound(scope):
                return scope
        return self.tree.root

    def visible(self, node: Node, line: int | None = None) -> set[str]:
        """Names visible at ``node``; with ``line``, the innermost scope counts
        only names bound on or before that line (a statement inserted there
        runs before later assignments; outer scopes are complete by the time
        a function is called)."""
        names: set[str] = set()
        for k, scope in enumerate(self.scopes(node)):
            bound = self.bound(scope)
            if k == 0 and line is not None:
                names |= {n for n, first in bound.items() if first <= line}
            else:
                names |= set(bound)
        return names
