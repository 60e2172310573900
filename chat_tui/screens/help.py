"""The help screen (F1): every key and every command."""

from __future__ import annotations

from typing import ClassVar, Final

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from chat_tui import commands

# (keys as the user types them, what they do). The app's bindings are checked against this
# list by a test, so a new key cannot be forgotten here.
KEYS: Final[tuple[tuple[str, str], ...]] = (
    ("enter", "send the message (or run the command)"),
    ("alt+down / alt+up", "next / previous room"),
    ("alt+1 … alt+9", "room 1 … 9 of the sidebar"),
    ("alt+a", "next room with unread messages, mentions first"),
    ("ctrl+k", "quick switcher: filter rooms, or type a name to join it"),
    ("pageup / pagedown", "scroll the log"),
    ("end / escape", "jump to the newest message"),
    ("ctrl+f", "search the log: enter / n older, N newer, escape leaves"),
    ("ctrl+g", "search every room and the logs of past days (/grep)"),
    ("up / down", "this room's sent lines (failed commands too)"),
    ("tab", "complete a name: 'yv' finds user_yv…; tab again: next"),
    ("f2", "members panel (hidden on narrow terminals)"),
    ("ctrl+b", "sidebar: full, or room numbers only"),
    ("ctrl+r", "retry every offline room now"),
    ("alt+j", "show the joins and leaves the smart filter hides"),
    ("paste", "pasted lines stay one message; line breaks show as ⏎"),
    ("click a room", "switch to it"),
    ("click a link", "open it in the browser (/links, /open N)"),
    ("f1", "this help"),
    ("ctrl+c", "copy the selection, else clear the line, else quit"),
    ("ctrl+q", "quit"),
)


def help_text() -> Group:
    """Keys and commands as two-column tables (wrapped text stays in its column)."""

    def table(rows: list[tuple[str, str]]) -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        for left, right in rows:
            grid.add_row(Text(left), Text(right))
        return grid

    command_rows = [
        (c.usage, c.summary + "".join(f" (alias /{a})" for a in c.aliases))
        for c in commands.COMMANDS
    ]
    command_rows.append(("//text", "send text that starts with '/'"))
    return Group(
        Text("Keys", style="bold underline"),
        table(list(KEYS)),
        Text(),
        Text("Commands", style="bold underline"),
        table(command_rows),
        Text(),
        Text("Press escape, q or f1 to close.", style="dim"),
    )


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,f1", "close", "Close help"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_text(), id="help-text")
        # Its own keys at the bottom: the main screen's do not work while it is open.
        yield Footer()

    def on_mount(self) -> None:
        # Focused so that the arrow keys and page keys scroll it on a small terminal.
        self.query_one("#help", VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
