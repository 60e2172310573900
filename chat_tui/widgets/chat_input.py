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

A bracketed paste is inserted at the cursor as text, in order. Textual's terminal parser takes
an ESC inside a paste for the start of an escape sequence and hands what follows it to the app
as keys, ahead of the paste (``one ESC two`` became ``^twoone``, and a pasted line break after
an ESC would have sent the line), so :class:`PasteParser` shows it pasted ESC bytes as "␛"
(see :func:`parse_pasted_escapes`). The paste handler then removes escape sequences (colours,
titles: nothing a reader of the chat could see), keeps a lone ESC as the "␛" the log shows for
one, turns tabs into spaces (tab stops 4 apart, as the log shows a tab: the input cannot show
a tab) and removes the other control characters, which the server would remove anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import ClassVar, Final

from textual import events
from textual._xterm_parser import XTermParser
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input

from chat_protocol.text import STRIPPED_CHARACTERS
from chat_tui.messages import LineSubmitted
from chat_tui.text_layout import TAB_SIZE

NEWLINE_MARK: Final = "⏎"
HISTORY_LIMIT: Final = 500
ESCAPE_MARK: Final = "\u241b"  # ␛: a pasted ESC, as the parser hands it over and the log shows it

PASTE_START: Final = "\x1b[200~"
PASTE_END: Final = "\x1b[201~"
# Escape sequences in pasted text, their ESC already shown as ESCAPE_MARK: CSI (colours, cursor
# moves), OSC up to its BEL or ST (titles, links), and ESC + intermediates + final (character
# sets: "ESC ( B"). An ESC that starts none of them stays, as ESCAPE_MARK.
_PASTED_SEQUENCE = re.compile(
    rf"{ESCAPE_MARK}\[[0-?]*[ -/]*[@-~]"
    rf"|{ESCAPE_MARK}\][^\x07{ESCAPE_MARK}]*(?:\x07|{ESCAPE_MARK}\\)"
    rf"|{ESCAPE_MARK}[ -/]+[0-~]"
)
# Control characters a paste loses: what the server strips, but line breaks and tabs.
_PASTE_STRIP_TABLE: Final = dict.fromkeys(ord(c) for c in STRIPPED_CHARACTERS - {"\n", "\t"})


def to_display(text: str) -> str:
    """Text with line breaks as shown in the one-line input."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", NEWLINE_MARK)


def pasted_text(text: str) -> str:
    """A paste as it goes into the input: no escape sequences, no control characters, tabs as
    spaces, line breaks as NEWLINE_MARK (see the module doc)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x1b", ESCAPE_MARK)
    text = _PASTED_SEQUENCE.sub("", text)
    if "\t" in text:
        text = "\n".join(line.expandtabs(TAB_SIZE) for line in text.split("\n"))
    return to_display(text.translate(_PASTE_STRIP_TABLE))


class PastedEscapes:
    """The terminal's input with every ESC inside a bracketed paste shown as ESCAPE_MARK.

    Called with each piece of input as it is read; returns what may go on to the parser. The
    paste's markers may be cut anywhere between reads: the start is looked for across them,
    and what could be the beginning of the end marker is held back until the next read.
    """

    def __init__(self) -> None:
        self._pasting = False
        # Outside a paste: the last characters passed on (a start marker may end in the next
        # read). In a paste: characters held back, perhaps the beginning of the end marker.
        self._tail = ""

    def __call__(self, data: str) -> str:
        out: list[str] = []
        while data:
            seen = self._tail + data
            if not self._pasting:
                start = seen.find(PASTE_START)
                if start < 0:
                    out.append(data)
                    self._tail = seen[-(len(PASTE_START) - 1) :]
                    break
                end = start + len(PASTE_START) - len(self._tail)  # in data
                out.append(data[:end])
                data, self._tail, self._pasting = data[end:], "", True
                continue
            stop = seen.find(PASTE_END)
            if stop >= 0:
                out += [seen[:stop].replace("\x1b", ESCAPE_MARK), PASTE_END]
                data, self._tail, self._pasting = seen[stop + len(PASTE_END) :], "", False
                continue
            hold = next(
                (n for n in range(len(PASTE_END) - 1, 0, -1) if seen.endswith(PASTE_END[:n])), 0
            )
            out.append(seen[: len(seen) - hold].replace("\x1b", ESCAPE_MARK))
            self._tail = seen[len(seen) - hold :]
            break
        return "".join(out)


class PasteParser(XTermParser):
    """Textual's terminal parser, given pastes whose ESC bytes are shown as ESCAPE_MARK."""

    def __init__(self, debug: bool = False) -> None:
        super().__init__(debug)
        self._pasted_escapes = PastedEscapes()

    def feed(self, data: str) -> Iterable[Message]:
        if data:  # "" is the end of the input
            data = self._pasted_escapes(data)
            if not data:
                return ()  # all held back until the next read
        return super().feed(data)


def parse_pasted_escapes() -> None:
    """Make the terminal driver read input with :class:`PasteParser`.

    Textual has no public way to give its driver another parser; its Linux/macOS driver makes
    one from this module-level name each time it starts reading. Idempotent; affects only this
    process (like ``app.route_alt_digits``).
    """
    try:
        from textual.drivers import linux_driver
    except ImportError:  # no termios: Windows, whose driver reads keys another way
        return
    linux_driver.XTermParser = PasteParser  # type: ignore[misc]


def from_display(value: str) -> str:
    return value.replace(NEWLINE_MARK, "\n")


def hand_over_keys(source: Widget, target: Widget, ahead: Iterable[events.Key] = ()) -> None:
    """Give the keys still queued for ``source`` to ``target``, in order, after ``ahead``
    (keys taken from ``source`` earlier) and before any key that comes after them can reach it
    (call it as the focus moves to ``target``: the app hands each later key to the focused
    widget as it takes it). ``target`` may be ``source`` itself."""
    # Private: Textual has no public way to take back what was queued for a widget (the next
    # message waits apart, peeked at while the current one runs).
    queue = source._message_queue
    waiting = [source._pending_message] if source._pending_message is not None else []
    source._pending_message = None
    while not queue.empty():
        waiting.append(queue.get_nowait())
    others = [message for message in waiting if not isinstance(message, events.Key)]
    for key in [*ahead, *(message for message in waiting if isinstance(message, events.Key))]:
        target.post_message(key)
    for message in others:
        queue.put_nowait(message)  # None: the widget is closing


class InOrderInput(Input):
    """Input that runs its own bindings as each key comes, in order with the keys around it."""

    async def _on_key(self, event: events.Key) -> None:
        # Textual runs a widget's (non-priority) bindings only once the key has bubbled up to
        # the app, by which time printable keys that came after it in the same burst (a fast
        # typist, a terminal multiplexer) are already in the box: enter would then send text
        # typed after it, backspace delete it, left go back over it. Running our own bindings
        # here keeps every key in order.
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()
                return
        await super()._on_key(event)


class ChatInput(InOrderInput):
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

    # --- paste -------------------------------------------------------------------------------

    def _on_paste(self, event: events.Paste) -> None:
        # Replaces Input's handler, which keeps only the first line.
        event.stop()
        event.prevent_default()
        text = pasted_text(event.text)
        if not text:
            return
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
