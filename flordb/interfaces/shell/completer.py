"""Completion as you type: a pure ``suggest`` function plus a Completer over the catalog.

``suggest(before, after)`` looks at the statement around the cursor and says
*what kind* of name belongs there (pgcli's ``suggest_type``): tables after
``FROM``/``JOIN``, columns of the statement's tables after ``SELECT``/``WHERE``,
a dot-command's argument after ``.schema``. ``SQLCompleter`` turns kinds into
candidates from ``catalog.Metadata`` and ranks them: prefix matches first, then
substring and fuzzy (subsequence) matches for tables and columns.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from .catalog import Metadata

KEYWORDS = (
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "AS",
    "AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE", "BETWEEN", "DISTINCT", "ON",
    "USING", "JOIN", "LEFT JOIN", "RIGHT JOIN", "INNER JOIN", "FULL JOIN", "CROSS JOIN",
    "UNION", "UNION ALL", "INTERSECT", "EXCEPT", "WITH", "CASE", "WHEN", "THEN", "ELSE", "END",
    "ASC", "DESC", "NULLS FIRST", "NULLS LAST", "OVER", "PARTITION BY", "WINDOW", "QUALIFY",
    "FILTER", "CAST", "TRUE", "FALSE", "EXISTS", "ALL", "ANY", "DESCRIBE", "SUMMARIZE",
    "EXPLAIN", "SHOW", "PIVOT", "UNPIVOT", "INSERT INTO", "VALUES", "UPDATE", "SET",
    "DELETE FROM", "CREATE TABLE", "CREATE VIEW", "DROP TABLE", "ALTER TABLE", "COPY",
)
# Used until the database's own list has loaded.
FUNCTIONS = (
    "avg", "count", "max", "min", "sum", "median", "quantile_cont", "stddev", "arg_max",
    "arg_min", "first", "last", "list", "string_agg", "round", "abs", "ln", "log10", "exp",
    "coalesce", "nullif", "greatest", "least", "lag", "lead", "row_number", "rank",
    "dense_rank", "epoch_ms", "date_trunc", "strftime", "regexp_matches", "lower", "upper",
    "length", "substr", "range",
)

# Keywords after which a table name comes.
_TABLE_KW = {"FROM", "JOIN", "INTO", "UPDATE", "TABLE", "DESCRIBE", "SUMMARIZE"}
# Keywords after which a column or an expression comes.
_COLUMN_KW = {
    "SELECT", "WHERE", "AND", "OR", "NOT", "BY", "ON", "HAVING", "SET", "WHEN", "THEN", "ELSE",
    "CASE", "DISTINCT", "BETWEEN", "IN", "USING", "QUALIFY", "RETURNING", "IS",
}
_TOKEN = re.compile(
    r"""
    (?P<string>'(?:[^']|'')*'?)
  | (?P<quoted>"(?:[^"]|"")*"?)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|$))
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>\d+(?:\.\d*)?)
  | (?P<punct>[(),.;=<>!+\-*/%|:\[\]{}])
  | (?P<space>\s+)
    """,
    re.VERBOSE | re.DOTALL,
)
_PARTIAL = re.compile(r'(?:(?P<qual>"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)\.)?'
                      r'(?P<word>"(?:[^"]|"")*|[A-Za-z_][A-Za-z0-9_$]*)?$')
_QUALIFIED = re.compile(r'(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)\.$')
_SIMPLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Suggestion:
    """A kind of name that fits at the cursor.

    kind: keyword | table | project | column | function | command | choice | plot.
    tables: for ``column``, the tables whose columns fit (empty: every table's).
    choices: for ``choice``, the literal words.
    """

    kind: str
    tables: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "punct"
        if kind not in ("space", "comment"):
            out.append((kind, m.group()))
    return out


def _unquote(name: str) -> str:
    if name.startswith('"'):
        return name[1:-1].replace('""', '"') if name.endswith('"') and len(name) > 1 else name[1:]
    return name


def tables_in(statement: str) -> dict[str, str]:
    """Tables a statement reads, as alias (or name) -> table name.

    >>> tables_in('SELECT * FROM "my-proj" AS p JOIN runs USING (run_id)')
    {'p': 'my-proj', 'runs': 'runs'}
    """
    toks = _tokens(statement)
    out: dict[str, str] = {}
    k = 0
    while k < len(toks):
        kind, text = toks[k]
        if kind == "word" and text.upper() in ("FROM", "JOIN"):
            k += 1
            while k < len(toks) and toks[k][0] in ("word", "quoted"):
                kind, text = toks[k]
                if kind == "word" and text.upper() in _RESERVED:
                    break
                name = _unquote(text)
                k += 1
                if k < len(toks) and toks[k][1] == "(":  # a table function: skip its arguments
                    depth = 0
                    while k < len(toks):
                        depth += {"(": 1, ")": -1}.get(toks[k][1], 0)
                        k += 1
                        if depth == 0:
                            break
                    name = ""
                alias = name
                if k < len(toks) and toks[k][0] == "word" and toks[k][1].upper() == "AS":
                    k += 1
                if (k < len(toks) and toks[k][0] in ("word", "quoted")
                        and toks[k][1].upper() not in _RESERVED):
                    alias = _unquote(toks[k][1])
                    k += 1
                if name:
                    out[alias] = name
                if k < len(toks) and toks[k][1] == ",":
                    k += 1
                    continue
                break
            continue
        k += 1
    return out


_RESERVED = {w for kw in KEYWORDS for w in kw.split()} | {
    "LEFT", "RIGHT", "INNER", "OUTER", "FULL", "CROSS", "NATURAL", "POSITIONAL", "ASOF",
    "LATERAL", "SAMPLE", "TABLESAMPLE", "GROUP", "ORDER",
}


def _current_statement(before: str, after: str) -> tuple[str, str]:
    """The statement around the cursor: text since the last ``;`` and up to the next."""
    from .statements import _scan

    ends, _ = _scan(before)
    if ends:
        before = before[ends[-1] + 1:]
    nxt, _ = _scan(after)
    if nxt:
        after = after[: nxt[0]]
    return before, after


def suggest(
    before: str, after: str = "", commands: Mapping[str, Suggestion | None] | None = None
) -> list[Suggestion]:
    """Kinds of names that fit at the cursor, given the text before and after it.

    ``commands`` maps each dot-command to the suggestion for its argument.

    >>> suggest("SELECT * FROM ")
    [Suggestion(kind='table', tables=(), choices=())]
    >>> suggest("SELECT lo", " FROM proj")[0]
    Suggestion(kind='column', tables=('proj',), choices=())
    """
    before, after = _current_statement(before, after)
    stripped = before.lstrip()
    if stripped.startswith("."):
        name, sep, _ = stripped.partition(" ")
        if not sep:
            return [Suggestion("command")]
        spec = (commands or {}).get(name)
        return [spec] if spec is not None else []
    statement = before + after
    partial = _PARTIAL.search(before)
    qualifier = partial.group("qual") if partial else None
    scope = tables_in(statement)
    if qualifier:  # alias.col or "proj".col
        q = _unquote(qualifier)
        return [Suggestion("column", (scope.get(q, q),))]
    word = partial.group("word") if partial else ""
    toks = _tokens(before[: len(before) - len(word or "")])
    if not toks:
        return [Suggestion("keyword")]
    kind, last = toks[-1]
    upper = last.upper()
    tables = tuple(dict.fromkeys(scope.values()))
    columns = [Suggestion("column", tables), Suggestion("function"), Suggestion("keyword")]
    if kind == "word" and upper in _TABLE_KW:
        return [Suggestion("table")]
    if last == "," and _clause(toks) in _TABLE_KW:
        return [Suggestion("table")]
    if kind == "word" and upper in _COLUMN_KW:
        return columns
    if kind == "punct" and last in "(,=<>!+-*/%|[":
        return columns
    return [Suggestion("keyword")]


def _clause(toks: list[tuple[str, str]]) -> str:
    """The keyword that opened the clause the cursor is in (at parenthesis depth 0)."""
    depth = 0
    for kind, text in reversed(toks):
        if text == ")":
            depth += 1
        elif text == "(":
            if depth == 0:
                return "("
            depth -= 1
        elif depth == 0 and kind == "word" and text.upper() in _TABLE_KW | _COLUMN_KW:
            return text.upper()
    return ""


# ------------------------------------------------------------------ ranking
def match(word: str, candidate: str, fuzzy: bool = True) -> int | None:
    """Rank of ``candidate`` for the typed ``word``: 0 prefix, 1 substring, 2 fuzzy; None.

    >>> match("lo", "loss"), match("acc", "val_acc"), match("vac", "val_acc"), match("x", "loss")
    (0, 1, 2, None)
    """
    w, c = word.lower().lstrip('"'), candidate.lower().lstrip('"')
    if c.startswith(w):
        return 0
    if not fuzzy or len(w) < 2:  # one letter matches nearly everything somewhere
        return None
    if w in c:
        return 1
    it = iter(c)
    return 2 if all(ch in it for ch in w) else None


def quote(name: str) -> str:
    """A name as it must be written in SQL: bare when simple, else double-quoted."""
    if _SIMPLE.fullmatch(name) and name.upper() not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


# Among equally good column matches: what was logged first, then what identifies a row.
_PRIORITY = {"log": 0, "arg": 1, "loop": 2, "builtin": 3, "project": 0, "table": 1}


class SQLCompleter(Completer):
    """Completes SQL and dot-commands from ``metadata`` (replace it to refresh)."""

    def __init__(
        self,
        metadata: Metadata | None = None,
        commands: Mapping[str, tuple[str, Suggestion | None]] | None = None,
    ):
        self.metadata = metadata or Metadata(functions=list(FUNCTIONS))
        # command name -> (help, argument suggestion)
        self.commands = dict(commands or {})

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterator[Completion]:
        before, after = document.text_before_cursor, document.text_after_cursor
        specs = {name: arg for name, (_, arg) in self.commands.items()}
        stripped = before.lstrip()
        if stripped.startswith("."):
            word = stripped if " " not in stripped else stripped.rsplit(" ", 1)[-1]
        else:
            m = _PARTIAL.search(before)
            word = (m.group("word") or "") if m else ""
        if (complete_event.text_inserted and not word and not stripped.startswith(".")
                and not _QUALIFIED.search(before)):
            return  # while typing, open the menu for a word, not for every space
        seen: set[str] = set()
        ranked: list[tuple[int, int, int, str, Completion]] = []
        for order, sug in enumerate(suggest(before, after, specs)):
            for i, (text, meta, fuzzy) in enumerate(self._candidates(sug)):
                rank = match(word, text, fuzzy)
                if rank is None or text in seen or (text == word and sug.kind != "command"):
                    continue
                seen.add(text)
                shown = text
                if sug.kind == "keyword" and word and word.islower():
                    shown = text.lower()
                # choices keep their own order (table, csv, ...); names sort alphabetically
                key = f"{i:06d}" if sug.kind == "choice" else text.lower().strip('"')
                ranked.append((rank, order, _PRIORITY.get(meta, 9), key,
                               Completion(shown, -len(word), display_meta=meta)))
        ranked.sort(key=lambda r: r[:4])
        for *_, completion in ranked:
            yield completion

    def _candidates(self, sug: Suggestion) -> Iterable[tuple[str, str, bool]]:
        """(text, meta, fuzzy) for one suggestion."""
        md = self.metadata
        if sug.kind == "keyword":
            return ((k, "keyword", False) for k in KEYWORDS)
        if sug.kind == "function":
            return ((f, "function", False) for f in (md.functions or FUNCTIONS))
        if sug.kind == "table":
            return [(quote(t), "project", True) for t in md.projects] + [
                (quote(t), "table", True) for t in md.base_tables]
        if sug.kind == "column":
            names = [md.resolve(t) for t in sug.tables] if sug.tables else list(md.projects)
            return [
                (quote(c.name), c.kind if c.kind != "column" else c.type.lower(), True)
                for t in names if t for c in md.tables.get(t, [])
            ]
        if sug.kind == "project":
            return [(quote(t), "project", True) for t in md.projects]
        if sug.kind == "command":
            return ((name, help, False) for name, (help, _) in self.commands.items())
        if sug.kind == "choice":
            return ((c, "", False) for c in sug.choices)
        if sug.kind == "plot":  # .plot Y --x COL ...: columns and the options
            cols = self._candidates(Suggestion("column"))
            opts = [(o, "option", False) for o in ("--x", "--by", "--where", "--project", "-o")]
            return list(cols) + opts
        return ()
