"""The search bar (ctrl+f): a query field over the log, and where you are among the matches.

Typing searches as you go. Enter goes to the next older match and leaves the field, so that
``n`` / ``N`` (next older / newer) and enter / shift+enter step through the matches; ctrl+f
goes back to the field; escape leaves the search, and so does any other key typed while
stepping, which goes to the message box. The bar only says what the user asked for
(``messages.SearchChanged``, ``SearchStep``, ``SearchClosed``); the screen searches the log.

Keys that arrive in one read (a fast typist, ``tmux send-keys``) keep their order: the app
hands each to the focused widget as it takes it, so the focus moves at once
(``Screen.set_focus``; ``Widget.focus`` moves it only after the messages already waiting), and
the keys that move it are priority bindings, run as the app takes them: the keys after ctrl+f
reach the field, not the message box; the ones after enter in the field step through the
matches. The field runs its own editing keys in order with the text (``InOrderInput``).
"""

from __future__ import annotations

from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Static

from chat_tui.messages import SearchChanged, SearchClosed, SearchStep
from chat_tui.widgets.chat_input import InOrderInput, hand_over_keys

# The printable keys the bar takes while stepping through the matches (its bindings).
STEPPING_KEYS = frozenset("nN/")


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
        # priority=True: taken from the field too, before the keys that came after them are
        # handed on (see the module doc); shift+enter reaches the app as a key of its own only
        # where the terminal tells it apart from enter.
        Binding("enter", "older", "Older match", show=False, priority=True),
        Binding("shift+enter", "step(False)", "Newer match", show=False, priority=True),
        Binding("n", "step(True)", "Older match", show=False),
        Binding("N", "step(False)", "Newer match", show=False),
        Binding("ctrl+f,slash", "edit", "Edit the search", show=False),
    ]

    # Where typing goes that is not for the search (the message box; the screen sets it).
    typing_target: Widget | None = None

    def compose(self) -> ComposeResult:
        yield Static("search:", id="search-label")
        yield InOrderInput(placeholder="text to find in this room", id="search-input")
        yield Static("", id="search-result", markup=False)

    @property
    def field(self) -> Input:
        return self.query_one("#search-input", Input)

    @property
    def query(self) -> str:
        return self.field.value

    def open(self, *, stepping: bool = False) -> None:
        """Show the bar, in its field, or stepping through the matches."""
        self.display = True
        self._focus(self if stepping else self.field)

    def show_result(self, position: int, count: int) -> None:
        self.query_one("#search-result", Static).update(result_text(self.query, position, count))

    @on(Input.Changed, "#search-input")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(SearchChanged(event.value))

    def action_older(self) -> None:
        """Enter: the next older match; from the field, leave it (n / N step from here)."""
        self.post_message(SearchStep(older=True))
        self._focus(self)

    def action_step(self, older: bool) -> None:
        self.post_message(SearchStep(older))

    def action_edit(self) -> None:
        self._focus(self.field)

    def _focus(self, widget: Widget) -> None:
        """Focus ``widget`` now: the next key the app takes goes to it (see the module doc)."""
        self.screen.set_focus(widget)

    def on_key(self, event: events.Key) -> None:
        """A printable key while stepping through the matches, other than the bar's own
        (n, N, /): the user is typing again. The search closes, and this key and those
        queued behind it go to the message box, in order ("good morning" typed after an
        enter in the search went nowhere, and "/who" became a search for "who")."""
        target = self.typing_target
        if (
            target is None
            or not self.has_focus
            or not event.is_printable
            or event.character in STEPPING_KEYS
        ):
            return
        event.stop()
        event.prevent_default()
        self.screen.set_focus(target)
        self.action_close()
        target.post_message(events.Key(event.key, event.character))
        hand_over_keys(self, target)

    def action_close(self) -> None:
        self.display = False
        self.post_message(SearchClosed())
