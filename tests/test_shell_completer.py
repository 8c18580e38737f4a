"""The shell's completer and statement splitter, with prompt_toolkit ``Document``s; no database."""
from __future__ import annotations

import doctest

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from flordb.interfaces.shell import commands, completer, statements
from flordb.interfaces.shell.catalog import Column, Metadata
from flordb.interfaces.shell.completer import SQLCompleter, Suggestion, suggest


def _metadata() -> Metadata:
    demo = [Column("projid", "builtin", "VARCHAR"), Column("run_id", "builtin", "VARCHAR"),
            Column("epoch", "loop", "INTEGER"), Column("step", "loop", "INTEGER"),
            Column("lr", "arg", "DOUBLE"), Column("loss", "log", "DOUBLE"),
            Column("val_acc", "log", "DOUBLE")]
    other = [Column("run_id", "builtin", "VARCHAR"), Column("bleu", "log", "DOUBLE")]
    runs = [Column("run_id", "column", "VARCHAR"), Column("status", "column", "VARCHAR")]
    return Metadata({"demo": demo, "my-proj": other, "runs": runs}, ["demo", "my-proj"],
                    ["avg", "count", "lower", "max"])


@pytest.fixture
def comp() -> SQLCompleter:
    return SQLCompleter(_metadata(), commands.completions())


def complete(comp: SQLCompleter, before: str, after: str = "", typing: bool = False) -> list[str]:
    doc = Document(before + after, cursor_position=len(before))
    event = CompleteEvent(text_inserted=typing, completion_requested=not typing)
    return [c.text for c in comp.get_completions(doc, event)]


def test_columns_of_the_statements_table_come_first(comp):
    got = complete(comp, "SELECT ", " FROM demo")
    assert got[:3] == ["loss", "val_acc", "lr"]  # logs, then args, loops, builtins
    assert "bleu" not in got and "status" not in got
    assert "count" in got and "SELECT" in got  # functions and keywords follow


def test_partial_word_prefix_then_fuzzy(comp):
    assert complete(comp, "SELECT lo", " FROM demo")[0] == "loss"
    assert complete(comp, "SELECT acc", " FROM demo")[0] == "val_acc"  # substring
    assert complete(comp, "SELECT vac", " FROM demo") == ["val_acc"]  # subsequence


def test_tables_after_from_with_quoting(comp):
    assert complete(comp, "SELECT * FROM ") == ["demo", '"my-proj"', "runs"]
    assert complete(comp, 'SELECT * FROM "my') == ['"my-proj"']
    assert complete(comp, "SELECT * FROM demo JOIN r") == ["runs"]


def test_alias_and_quoted_qualifier(comp):
    assert complete(comp, "SELECT p.", ' FROM "my-proj" AS p') == ["bleu", "run_id"]
    assert complete(comp, 'SELECT "my-proj".b') == ["bleu"]
    assert set(complete(comp, "SELECT r.st", " FROM demo d JOIN runs r USING (run_id)")) == {
        "status"}


def test_without_a_table_every_projects_columns(comp):
    got = complete(comp, "SELECT b")
    assert "bleu" in got


def test_keywords_after_a_table_and_lowercase_follows_the_user(comp):
    assert "WHERE" in complete(comp, "SELECT * FROM demo W")
    assert "where" in complete(comp, "SELECT * FROM demo w")


def test_only_the_current_statement_counts(comp):
    got = complete(comp, "SELECT * FROM runs; SELECT ", " FROM demo")
    assert "loss" in got and "status" not in got


def test_dot_commands_and_their_arguments(comp):
    assert complete(comp, ".sch") == [".schema"]
    assert complete(comp, ".mode ") == ["table", "csv", "json", "markdown"]
    assert complete(comp, ".timer o") == ["on", "off"]
    assert complete(comp, ".schema d") == ["demo"]
    assert complete(comp, ".runs ") == ["demo", '"my-proj"']
    assert "--where" in complete(comp, ".plot loss --")
    assert "val_acc" in complete(comp, ".plot va")


def test_menu_opens_for_a_word_not_for_every_space(comp):
    assert complete(comp, "SELECT * FROM demo ", typing=True) == []
    assert complete(comp, "SELECT l", " FROM demo", typing=True)[0] == "loss"
    assert complete(comp, "SELECT d.", " FROM demo d", typing=True)  # after a qualifier
    assert complete(comp, ".mode ", typing=True)  # a command's argument


def test_suggest_is_pure():
    assert suggest("SELECT * FROM a, ") == [Suggestion("table")]
    assert suggest("SELECT max(")[0] == Suggestion("column")
    assert suggest("") == [Suggestion("keyword")]
    assert suggest(".he") == [Suggestion("command")]


@pytest.mark.parametrize(
    "text, complete",
    [("SELECT 1", False), ("SELECT 1;", True), ("SELECT ';'", False), ("SELECT 1; -- done", True),
     ('SELECT "a;b"', False), ("SELECT 1 /* ; */", False), (".tables", True), ("", True),
     ("quit", True), ("SELECT 1;\nSELECT 2", False)],
)
def test_is_complete(text, complete):
    assert statements.is_complete(text) is complete


def test_split_script():
    script = "-- setup\n.mode csv\nSELECT 1;\nSELECT 'a;b'\n  AS x; SELECT 2;\n.timer on\nSELECT 3"
    assert statements.split(script) == [
        ".mode csv", "SELECT 1;", "SELECT 'a;b'\n  AS x;", "SELECT 2;", ".timer on", "SELECT 3"]


def test_docstring_examples():
    for module in (statements, completer):
        assert doctest.testmod(module).failed == 0
