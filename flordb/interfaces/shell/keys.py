"""Key bindings: Enter runs a finished statement, otherwise starts a new line.

Everything else is prompt_toolkit's Emacs defaults: Ctrl-R searches history,
Ctrl-C clears the line (and cancels a running statement), Ctrl-D on an empty
line leaves.
"""
from __future__ import annotations

from prompt_toolkit.filters import Condition, completion_is_selected
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from .statements import is_complete


def bindings() -> KeyBindings:
    """The shell's own keys, merged over prompt_toolkit's defaults."""
    kb = KeyBindings()

    @Condition
    def finished() -> bool:
        from prompt_toolkit.application import get_app

        return is_complete(get_app().current_buffer.text)

    @kb.add("enter", filter=completion_is_selected)
    def _(event: KeyPressEvent) -> None:
        """Enter on a highlighted completion takes it rather than running the line."""
        buf = event.current_buffer
        buf.complete_state = None
        if is_complete(buf.text) and buf.text.rstrip().endswith(";"):
            buf.validate_and_handle()

    @kb.add("enter", filter=~completion_is_selected & finished)
    def _(event: KeyPressEvent) -> None:
        """Run the statement: it ends with ';' or is a dot-command."""
        event.current_buffer.validate_and_handle()

    @kb.add("escape", "enter")
    def _(event: KeyPressEvent) -> None:
        """Alt-Enter runs what is typed even without a final ';'."""
        event.current_buffer.validate_and_handle()

    @kb.add("c-space")
    def _(event: KeyPressEvent) -> None:
        """Open the completion menu."""
        buf = event.current_buffer
        if buf.complete_state:
            buf.complete_next()
        else:
            buf.start_completion(select_first=False)

    return kb


KEYS = (
    ("Enter", "run the statement when it ends with ';' (or is a dot-command); else a new line"),
    ("Alt-Enter", "run what is typed, even without ';'"),
    ("Tab / Ctrl-Space", "complete keywords, functions, tables, columns, dot-commands"),
    ("Up / Down", "move in the statement, then through history"),
    ("Ctrl-R", "search history"),
    ("Right arrow", "accept the greyed suggestion from history"),
    ("Ctrl-C", "clear the line; while a statement runs, cancel it"),
    ("Ctrl-D", "leave (on an empty line)"),
)


def reference() -> str:
    """The key list of docs/shell.md."""
    lines = ["| key | what it does |", "|---|---|"]
    lines += [f"| {key} | {what} |" for key, what in KEYS]
    return "\n".join(lines)
