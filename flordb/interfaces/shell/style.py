"""Colours and prompt text: Pygments' SQL highlighting plus a few UI classes."""
from __future__ import annotations

from typing import TYPE_CHECKING

from prompt_toolkit.formatted_text import HTML, AnyFormattedText
from prompt_toolkit.styles import BaseStyle, Style, merge_styles, style_from_pygments_cls

if TYPE_CHECKING:
    from .session import Shell

UI = {
    "prompt": "ansigreen bold",
    "prompt.write": "ansired bold",
    "continuation": "ansibrightblack",
    "bottom-toolbar": "noreverse bg:#303030 #bcbcbc",
    "bottom-toolbar.on": "bg:#303030 #87d787",
    "bottom-toolbar.off": "bg:#303030 #8a8a8a",
    "bottom-toolbar.write": "bg:#303030 #ff5f5f bold",
    "completion-menu.completion": "bg:#3a3a3a #e4e4e4",
    "completion-menu.completion.current": "bg:#5f87af #ffffff",
    "completion-menu.meta.completion": "bg:#303030 #9e9e9e",
    "completion-menu.meta.completion.current": "bg:#5f87af #eeeeee",
}


def style() -> BaseStyle:
    from pygments.styles import get_style_by_name

    return merge_styles([style_from_pygments_cls(get_style_by_name("default")), Style.from_dict(UI)])


def lexer():  # type: ignore[no-untyped-def]
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    return PygmentsLexer(SqlLexer)


def prompt(shell: Shell) -> AnyFormattedText:
    if shell.write:
        return HTML("<prompt.write>flordb(write)&gt; </prompt.write>")
    return HTML("<prompt>flordb&gt; </prompt>")


def continuation(width: int, line_number: int, wrap_count: int) -> AnyFormattedText:
    return HTML("<continuation>{}</continuation>").format("...> ".rjust(width))


def toolbar(shell: Shell) -> AnyFormattedText:
    def flag(name: str, on: bool) -> str:
        return f"<bottom-toolbar.{'on' if on else 'off'}>{name}:{'on' if on else 'off'}</bottom-toolbar.{'on' if on else 'off'}>"

    access = ("<bottom-toolbar.write>write</bottom-toolbar.write>" if shell.write
              else "read-only")
    return HTML(
        f" mode:{shell.mode} {flag('timer', shell.timer)} {flag('backfill', shell.backfill)} "
        f"{access} │ .help · Ctrl-R search · Ctrl-D quit"
    )
