"""The input box: one line on screen, multi-line pastes kept, history and name completion.

``Input`` is single-line and keeps only the first line of a paste. A chat message may have
several lines, so pasted line breaks are kept in the value as ``NEWLINE_MARK`` (shown as "⏎")
and turned back into "\\n" by :attr:`ChatInput.message`. A "⏎" typed by hand is therefore sent
as a line break too; that character is not otherwise useful in chat.

Enter takes the line out of the box at once, in the order the keys came: keys that arrived
with it in one read from the terminal (a fast typist, ``tmux send-keys``, a paste without
bracketed-paste mode) are already queued behind it and go into an empty box, so each line
becomes exactly one message. The line goes to the history at the same moment, so that ``up``
brings back also a line the app then refused (an unknown command).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar, Final

from textual import events
from textual.binding import Binding, BindingType
from textual.widgets import Input

from chat_tui.messages import LineSubmitted

NEWLINE_MARK: Final = "⏎"
HISTORY_LIMIT: Final = 500


def to_display(text: str) -> str:
    """Text with line breaks as shown in the one-line input."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", NEWLINE_MARK)


def from_display(value: str) -> str:
    return value.replace(NEWLINE_MARK, "\n")


class ChatInput(Input):
    """Input with per-room sent history (up/down), name completion (tab) and multi-line paste."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Previous sent message", show=False),
        Binding("down", "history(1)", "Next sent message", show=False),
        Binding("tab", "complete", "Complete a name", show=False),
    ]

    def __init__(self, **kwargs: object) -> None:
        # Input selects its whole value when it gets the focus back, and the next key typed
        # then replaces it: coming back from the search bar would wipe the draft.
        kwargs.setdefault("select_on_focus", False)
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # The app swaps these per room; the widget only reads them.
        self.sent_lines: list[str] = []
        self.completions: Callable[[str], Iterable[str]] = lambda prefix: ()
        self._history_index: int | None = None  # None: editing a fresh draft
        self._stash = ""  # the draft put aside while browsing the history
        self._completion: tuple[int, str, list[str], int] | None = None
        self.loaded = ""  # the room's draft as it was shown, before anything was typed

    # --- the value as a message -------------------------------------------------------------

    @property
    def message(self) -> str:
        """The value as the text to send, with pasted line breaks restored."""
        return from_display(self.value)

    def load(self, sent_lines: list[str], draft: str, cursor: int | None = None) -> None:
        """Show another room: its lines sent (shared, appended here) and its draft."""
        self.sent_lines = sent_lines
        self._history_index = None
        self._stash = ""
        self._completion = None
        self.loaded = draft  # shown, not typed (see ChatScreen._typed)
        self.value = draft
        self.cursor_position = len(draft) if cursor is None else min(cursor, len(draft))

    def remember(self, text: str) -> None:
        """Add a sent message to this room's history (shown again with up)."""
        if not self.sent_lines or self.sent_lines[-1] != text:
            self.sent_lines.append(text)
            del self.sent_lines[:-HISTORY_LIMIT]
        self._history_index = None
        self._stash = ""

    async def action_submit(self) -> None:
        """Enter: take the line out of the box now, remember it, and hand it to the app."""
        line = self.message
        if not line.strip():
            return
        self.value = ""
        self.remember(line)
        self.post_message(LineSubmitted(line))

    # --- keys ------------------------------------------------------------------------------

    async def _on_key(self, event: events.Key) -> None:
        # Textual runs a widget's (non-priority) bindings only once the key has bubbled up to
        # the app, by which time printable keys that came after it in the same burst (a fast
        # typist, a terminal multiplexer) are already in the box: enter would then send text
        # typed after it. Running our own bindings here keeps every key in order.
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()
                return
        await super()._on_key(event)

    # --- paste -------------------------------------------------------------------------------

    def _on_paste(self, event: events.Paste) -> None:
        # Replaces Input's handler, which keeps only the first line.
        event.stop()
        event.prevent_default()
        if not event.text:
            return
        text = to_display(event.text)
        start, end = self.selection
        self.replace(text, min(start, end), max(start, end))

    # --- history -----------------------------------------------------------------------------

    def action_history(self, step: int) -> None:
        if not self.sent_lines:
            return
        index = self._history_index
        if index is None:
            if step > 0:
                return
            self._stash = self.value
            index = len(self.sent_lines)
        index += step
        if index < 0:
            index = 0
        if index >= len(self.sent_lines):
            self._history_index = None
            self._set_value(self._stash)
            return
        self._history_index = index
        self._set_value(to_display(self.sent_lines[index]))

    def _set_value(self, value: str) -> None:
        self.value = value
        self.cursor_position = len(value)

    # --- name completion ---------------------------------------------------------------------

    def action_complete(self) -> None:
        """Complete the word before the cursor to a name seen in this room; tab again cycles.

        Which names, in which order, is the room's business (``completions``).
        """
        cursor = self.cursor_position
        state = self._completion
        if state is not None:
            start, prefix, matches, index = state
            current = matches[index]
            if self.value[start:cursor] == current + self._suffix(start):
                index = (index + 1) % len(matches)
                self._apply_completion(start, cursor, matches[index])
                self._completion = (start, prefix, matches, index)
                return
        start = cursor
        while start > 0 and not self.value[start - 1].isspace():
            start -= 1
        prefix = self.value[start:cursor]
        matches = list(self.completions(prefix)) if prefix else []
        if not matches:
            self._completion = None
            self.app.bell()
            return
        self._apply_completion(start, cursor, matches[0])
        self._completion = (start, prefix, matches, 0)

    def _suffix(self, start: int) -> str:
        # A name at the start of the line is addressed to someone: "user_x: ".
        return ": " if start == 0 else " "

    def _apply_completion(self, start: int, end: int, name: str) -> None:
        text = name + self._suffix(start)
        self.replace(text, start, end)
        self.cursor_position = start + len(text)
