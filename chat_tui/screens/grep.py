"""Search everything (ctrl+g, /grep TEXT): every room's scrollback and the logs of past days,
newest first. Choosing a match still in a scrollback opens its room at it; a match only in
the logs shows the logged lines around it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from chat_protocol.names import DIRECT_PREFIX
from chat_tui.grep import Hit
from chat_tui.screens.switcher import move_highlight
from chat_tui.text_layout import display_line

Search = Callable[[str], Awaitable[list[Hit]]]
Context = Callable[[Hit], Awaitable[list[str]]]


def hit_text(hit: Hit) -> Text:
    """One match as the list shows it; text from the network, so a Text, never markup."""
    room = hit.room if hit.room.startswith(DIRECT_PREFIX) else f"#{hit.room}"
    if hit.kind == "action":
        said = f"* {hit.sender} {hit.text}"
    elif hit.sender is not None:
        said = f"{hit.sender} :: {hit.text}"
    else:
        said = hit.text
    line = Text(f"{hit.when:%Y-%m-%d %H:%M:%S} ", style="dim")
    line.append(display_line(room) + " ", style="bold")
    line.append(display_line(" ⏎ ".join(said.splitlines())))
    if hit.source == "log":
        line.append("  (log)", style="dim")
    return line


class GrepScreen(ModalScreen[tuple[Hit, str] | None]):
    """Dismisses with a match to show in its room and the query that found it, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Close"),
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
    ]

    def __init__(self, query: str, search: Search, context: Context) -> None:
        super().__init__()
        self.query_text = query
        self._find = search
        self._context_of = context
        self.hits: list[Hit] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="grep"):
            yield Static("Search every room and the logs", id="grep-title")
            yield Input(self.query_text, placeholder="text to find", id="grep-input")
            yield OptionList(id="grep-options")
            yield Static("", id="grep-context", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#grep-options", OptionList).can_focus = False
        self.query_one("#grep-input", Input).focus()
        if self.query_text.strip():
            self.run_search(self.query_text)

    @on(Input.Submitted, "#grep-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        query = event.value.strip()
        options = self.query_one("#grep-options", OptionList)
        if query == self.query_text and options.highlighted is not None and self.hits:
            self._choose(options.highlighted)  # the same search again: enter picks
        elif query:
            self.run_search(query)

    @work(exclusive=True, group="grep")
    async def run_search(self, query: str) -> None:
        self.query_text = query
        title = self.query_one("#grep-title", Static)
        title.update(f"searching for {query!r}…")
        hits = await self._find(query)
        self.hits = hits
        options = self.query_one("#grep-options", OptionList)
        options.set_options([Option(hit_text(hit)) for hit in hits])
        if hits:
            options.highlighted = 0
        said = f"{len(hits)} match{'es' if len(hits) != 1 else ''} for {query!r}, newest first"
        title.update(said + (" (enter: show it)" if hits else ""))
        self._show_context(None)

    def action_move(self, step: int) -> None:
        move_highlight(self.query_one("#grep-options", OptionList), step)

    @on(OptionList.OptionSelected, "#grep-options")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose(event.option_index)

    def _choose(self, index: int) -> None:
        hit = self.hits[index]
        if hit.entry is not None:
            self.dismiss((hit, self.query_text))
        else:
            self.show_logged(hit)

    @work(exclusive=True, group="grep-context")
    async def show_logged(self, hit: Hit) -> None:
        lines = await self._context_of(hit)
        self._show_context(lines, hit)

    def _show_context(self, lines: list[str] | None, hit: Hit | None = None) -> None:
        context = self.query_one("#grep-context", Static)
        if not lines or hit is None:
            context.update("")
            context.set_class(False, "-visible")
            return
        shown = Text(f"{hit.path} (no longer in the scrollback):\n", style="dim")
        for line in lines:
            shown.append(display_line(line) + "\n")
        context.update(shown)
        context.set_class(True, "-visible")

    def action_cancel(self) -> None:
        self.dismiss(None)
