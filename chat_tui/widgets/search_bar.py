"""The search bar (ctrl+f): a query field over the log, and where you are among the matches.

Typing searches as you go. Enter goes to the next older match and leaves the field, so that
``n`` / ``N`` (next older / newer) and enter / shift+enter step through the matches; ctrl+f
goes back to the field; escape leaves the search. The bar only says what the user asked for
(``messages.SearchChanged``, ``SearchStep``, ``SearchClosed``); the screen searches the log.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Static

from chat_tui.messages import SearchChanged, SearchClosed, SearchStep


def result_text(query: str, position: int, count: int) -> str:
    if not query:
        return ""
    if not count:
        return "no matches"
    return f"{position} of {count}"


class SearchBar(Horizontal, can_focus=True):
    """Focused itself while stepping through matches; its field while typing the query."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Leave the search", priority=True),
        Binding("n,enter", "step(True)", "Older match", show=False),
        Binding("N,shift+enter", "step(False)", "Newer match", show=False),
        Binding("ctrl+f,slash", "edit", "Edit the search", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Static("search:", id="search-label")
        yield Input(placeholder="text to find in this room", id="search-input")
        yield Static("", id="search-result", markup=False)

    @property
    def field(self) -> Input:
        return self.query_one("#search-input", Input)

    @property
    def query(self) -> str:
        return self.field.value

    def open(self) -> None:
        self.display = True
        self.field.focus()

    def show_result(self, position: int, count: int) -> None:
        self.query_one("#search-result", Static).update(result_text(self.query, position, count))

    @on(Input.Changed, "#search-input")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(SearchChanged(event.value))

    @on(Input.Submitted, "#search-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(SearchStep(older=True))
        self.focus()  # n / N step from here

    def on_key(self, event: events.Key) -> None:
        # shift+enter reaches the field as a key of its own only where the terminal tells it
        # apart from enter; there it steps to a newer match.
        if event.key == "shift+enter" and self.field.has_focus:
            event.stop()
            self.post_message(SearchStep(older=False))

    def action_step(self, older: bool) -> None:
        self.post_message(SearchStep(older))

    def action_edit(self) -> None:
        self.field.focus()

    def action_close(self) -> None:
        self.display = False
        self.post_message(SearchClosed())
