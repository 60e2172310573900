"""Search everything (ctrl+g, /grep TEXT): every room's scrollback and the logs of past days,
newest first. Choosing a match still in a scrollback opens its room at it; a match only in
the logs shows the logged lines around it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from chat_protocol.names import DIRECT_PREFIX
from chat_tui.grep import Hit
from chat_tui.screens.switcher import PickerInput, move_highlight
from chat_tui.text_layout import display_line
from chat_tui.widgets.chat_input import hand_over_keys

Search = Callable[[str], Awaitable[list[Hit]]]
Context = Callable[[Hit], Awaitable[list[str]]]
Chosen = tuple[Hit, str] | None  # a match to show in its room and the query that found it


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


class GrepInput(PickerInput):
    """The query field (enter, up and down in order with the keys around them). An enter that
    must wait for its search's matches holds the keys typed after it until they have come:
    they belong to the room the match opens, or to this field if it opens none."""

    def __init__(self, value: str, **kwargs: object) -> None:
        super().__init__(value, **kwargs)  # type: ignore[arg-type]
        self.held: list[events.Key] | None = None  # None: not holding

    async def _on_key(self, event: events.Key) -> None:
        if self.held is not None:
            event.stop()
            event.prevent_default()
            self.held.append(events.Key(event.key, event.character))
            return
        await super()._on_key(event)

    def release(self, target: Widget) -> None:
        """Give ``target`` the keys held and those queued behind them, in order."""
        held, self.held = self.held or [], None
        hand_over_keys(self, target, held)


class GrepScreen(ModalScreen[None]):
    """Calls ``on_choice`` once, with a match to show in its room and its query, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Close"),
    ]

    def __init__(
        self, query: str, search: Search, context: Context, on_choice: Callable[[Chosen], None]
    ) -> None:
        super().__init__()
        self.query_text = query
        self._find = search
        self._context_of = context
        self._on_choice = on_choice  # called at once, before the keys that follow the enter
        self.hits: list[Hit] = []
        self._searching: str | None = None  # the query of the search under way
        self._ended = False

    def compose(self) -> ComposeResult:
        with Vertical(id="grep"):
            yield Static("Search every room and the logs", id="grep-title")
            yield GrepInput(self.query_text, placeholder="text to find", id="grep-input")
            yield OptionList(id="grep-options")
            yield Static("", id="grep-context", markup=False)
        yield Footer()

    @property
    def field(self) -> GrepInput:
        return self.query_one("#grep-input", GrepInput)

    def on_mount(self) -> None:
        self.query_one("#grep-options", OptionList).can_focus = False
        self.field.focus()
        if self.query_text.strip():
            self._search(self.query_text.strip())

    def submit(self, value: str) -> None:
        """Enter, run by the field in order with the keys around it: search for ``value``; if
        its matches are shown, show the highlighted one; if they are on their way, show the
        newest once they come ("ctrl+g zebra enter enter" searched again, for what was typed
        after the second enter)."""
        query = value.strip()
        options = self.query_one("#grep-options", OptionList)
        if query and query == self._searching:
            self.field.held = []
        elif query == self.query_text and options.highlighted is not None and self.hits:
            self._choose(options.highlighted)
        elif query:
            self._search(query)

    def _search(self, query: str) -> None:
        # Known at once: the worker starts a message later, after an enter of the same burst.
        self.query_text = self._searching = query
        self.run_search(query)

    @work(exclusive=True, group="grep")
    async def run_search(self, query: str) -> None:
        title = self.query_one("#grep-title", Static)
        title.update(f"searching for {query!r}…")
        try:
            hits = await self._find(query)
        finally:
            if self._searching == query:
                self._searching = None
        self.hits = hits
        options = self.query_one("#grep-options", OptionList)
        options.set_options([Option(hit_text(hit)) for hit in hits])
        if hits:
            options.highlighted = 0
        said = f"{len(hits)} match{'es' if len(hits) != 1 else ''} for {query!r}, newest first"
        title.update(said + (" (enter: show it)" if hits else ""))
        self._show_context(None)
        field = self.field
        if field.held is not None:  # an enter waited for these matches
            if hits:
                self._choose(0)
            if not self._ended:
                field.release(field)

    def action_move(self, step: int) -> None:
        move_highlight(self.query_one("#grep-options", OptionList), step)

    @on(OptionList.OptionSelected, "#grep-options")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose(event.option_index)

    def _choose(self, index: int) -> None:
        hit = self.hits[index]
        if hit.entry is not None:
            self._end((hit, self.query_text))
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
        self._end(None)

    def _end(self, chosen: Chosen) -> None:
        """Close with ``chosen``, once; the keys typed after the enter that chose, still held
        or queued for the field, go to where the main screen puts the focus, in order."""
        if self._ended:
            return
        self._ended = True
        field = self.field
        self.dismiss()
        self._on_choice(chosen)
        screen = self.app.screen
        field.release(screen.focused or screen)
