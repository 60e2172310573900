"""The message log of the active room: a line-API widget whose cost follows the screen.

Only the rows on screen are rendered (``render_line``). What the widget keeps for every entry is
one integer, the first row of the entry at the current width, so that appending is O(1), a row
can be found by bisection, and a resize re-measures entries without rendering them. Rendered rows
are cached per entry for the current width only.

Chat text is data, never markup: rows are built from plain ``Segment`` objects with styles chosen
here, so ``[bold red]`` or ``[@click=app.quit]`` are just characters, and control characters
(ESC, BEL, CR, ...) are replaced by visible Unicode control pictures (ESC shows as "␛") instead of
ever reaching the terminal.
"""

from __future__ import annotations

import functools
import re
import time
import weakref
import zlib
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from rich.cells import cell_len, get_character_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip
from textual.timer import Timer

from chat_tui.scrollback import Entry, EntryKind, Scrollback, SendState

# --- text made safe for display -------------------------------------------------------------

_BIDI = "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_DISPLAY_TABLE: dict[int, str] = {c: chr(0x2400 + c) for c in range(0x20)}  # ␀ ... ␟
_DISPLAY_TABLE[0x7F] = "\u2421"  # ␡
_DISPLAY_TABLE.update({c: "\ufffd" for c in range(0x80, 0xA0)})  # C1 controls (CSI = 0x9b)
# Bidi overrides could reorder the rest of the row on screen; line/paragraph separators could
# be taken as line breaks by some terminals.
_DISPLAY_TABLE.update({ord(c): "\ufffd" for c in _BIDI + "\u2028\u2029"})
TAB_SIZE = 4


def display_line(line: str) -> str:
    """One line of untrusted text, made safe to put on screen (no "\\n" expected)."""
    if line.isprintable():  # the common case: nothing to replace
        return line
    if "\t" in line:
        line = line.expandtabs(TAB_SIZE)
    return line.translate(_DISPLAY_TABLE)


def display_lines(text: str) -> list[str]:
    return [display_line(line) for line in text.replace("\r\n", "\n").split("\n")]


# --- wrapping ---------------------------------------------------------------------------------

_TOKENS = re.compile(r"\s+|\S+")


def wrap(line: str, first: int, rest: int) -> list[tuple[int, int]]:
    """Greedy word wrap of one line into ``(start, end)`` character ranges.

    The first row has ``first`` cells, the others ``rest``. Words longer than a row are cut;
    the spaces where a row breaks are dropped. Always returns at least one range.
    """
    avail = max(first, 1)
    if cell_len(line) <= avail:
        return [(0, len(line))]
    rest = max(rest, 1)
    rows: list[tuple[int, int]] = []
    start = 0  # first character of the current row
    used = 0  # cells used on the current row
    for match in _TOKENS.finditer(line):
        token = match.group()
        pos = match.start()
        width = cell_len(token)
        if token[0].isspace():
            if pos == start and rows:
                start = match.end()  # no leading spaces on a wrapped row
            elif used + width <= avail:
                used += width
            else:  # break here; the spaces vanish
                rows.append((start, pos))
                start, used, avail = match.end(), 0, rest
            continue
        if used + width <= avail:
            used += width
            continue
        if used > 0:  # the word goes to the next row
            rows.append((start, _rstrip(line, start, pos)))
            start, used, avail = pos, 0, rest
        if width <= avail:
            used = width
            continue
        for offset, char in enumerate(token, pos):  # cut a word longer than a row
            size = get_character_cell_size(char)
            if used + size > avail and used > 0:
                rows.append((start, offset))
                start, used, avail = offset, 0, rest
            used += size
    rows.append((start, _rstrip(line, start, len(line))))
    return rows


def _rstrip(line: str, start: int, end: int) -> int:
    while end > start and line[end - 1] == " ":
        end -= 1
    return end


# --- layout of one entry ----------------------------------------------------------------------

PENDING_MARK = "(pending) "
REFUSED_MARK = "(refused) "
_KIND_MARKS = {EntryKind.NOTICE: "· ", EntryKind.ERROR: "! ", EntryKind.STATUS: "── "}
# Below this many cells for text, the first row holds only the time and sender.
_MIN_TEXT_CELLS = 10


@dataclass(slots=True)
class _Plan:
    """Where every character of an entry goes at one width; its height is ``len(rows)``."""

    head: list[tuple[str, str]]  # (text, style role) pieces of the first row
    head_alone: bool  # the text starts on the row after the head
    indent: int  # cells before the text on the other rows
    lines: list[str]  # display-safe logical lines
    rows: list[tuple[int, int, int]]  # (logical line, start, end)


@functools.lru_cache(maxsize=1024)
def _stamp(moment: datetime, time_format: str) -> str:
    # Cached: the entries of a burst share one time, and strftime is most of measuring one.
    return display_line(moment.strftime(time_format))


def plan_entry(entry: Entry, width: int, time_format: str) -> _Plan:
    stamp = _stamp(entry.time, time_format)
    text = entry.text
    if entry.kind is EntryKind.MESSAGE:
        sender = display_line((entry.sender or "?").replace("\n", " "))
        head = [(stamp, "time"), (" ", ""), (sender, "sender"), (" ", "")]
        if entry.state is SendState.PENDING:
            head.append((PENDING_MARK, "pending-mark"))
        elif entry.state is SendState.REFUSED:
            head.append((REFUSED_MARK, "refused-mark"))
        text_column = cell_len(stamp) + 1 + cell_len(sender) + 1
    else:
        mark = _KIND_MARKS[entry.kind]
        if entry.kind is EntryKind.STATUS and "\n" not in text:
            text = f"{text} ──"
        head = [(stamp, "time"), (" ", ""), (mark, "mark")]
        text_column = cell_len(stamp) + 1 + cell_len(mark)
    head_width = sum(cell_len(piece) for piece, _ in head)
    # Continuation rows line up with the text; a long sender on a narrow log only costs
    # the time column, so the text keeps at least half of the row.
    narrow = min(cell_len(stamp) + 1, width // 4)
    indent = text_column if text_column <= width // 2 else narrow
    lines = display_lines(text)
    first = width - head_width
    rest = width - indent
    head_alone = first < min(_MIN_TEXT_CELLS, rest)
    rows: list[tuple[int, int, int]] = []
    if head_alone:
        rows.append((-1, 0, 0))
        first = rest
    for number, line in enumerate(lines):
        for start, end in wrap(line, first, rest):
            rows.append((number, start, end))
        first = rest
    return _Plan(head, head_alone, indent, lines, rows)


def entry_height(entry: Entry, width: int, time_format: str) -> int:
    """Rows of ``entry`` at ``width``: ``len(plan_entry(...).rows)``, without the plan.

    Every entry is measured as it arrives, so the common case (a sent message of one printable
    line that fits beside its head) is answered directly; anything else is planned.
    """
    text = entry.text
    sender = entry.sender or "?"
    if (
        entry.kind is EntryKind.MESSAGE
        and entry.state is SendState.SENT
        and text.isprintable()
        and sender.isprintable()
    ):
        # As plan_entry: the head is "time sender ", the text starts right after it.
        first = width - cell_len(_stamp(entry.time, time_format)) - cell_len(sender) - 2
        if first >= _MIN_TEXT_CELLS and cell_len(text) <= first:
            return 1
    return len(plan_entry(entry, width, time_format).rows)


# --- sender colours -----------------------------------------------------------------------------

# Readable on dark and light backgrounds alike.
SENDER_COLOURS: tuple[str, ...] = (
    "#e06c75",
    "#98c379",
    "#d19a66",
    "#61afef",
    "#c678dd",
    "#56b6c2",
    "#e5a50a",
    "#2ec27e",
    "#f66151",
    "#3584e4",
    "#b07fe0",
    "#d4843e",
)


def sender_colour(name: str) -> str:
    """The same colour for a name in every run (crc32: ``hash()`` is randomised per process)."""
    return SENDER_COLOURS[zlib.crc32(name.encode("utf-8", "replace")) % len(SENDER_COLOURS)]


# --- per-scrollback view state -------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Layout:
    """Row positions of one scrollback's entries at one width, plus its scroll state.

    ``starts[k]`` is the first row of the entry with absolute index ``base + k`` (absolute:
    counting every append ever made), and the last item is the end row. Rows are counted from
    an arbitrary zero that never moves while the width stays the same. ``origin`` is the row
    shown at the top of the scrollable area: it catches up with ``top`` (the first row of the
    oldest entry still held) when arrivals are applied to the view, so that dropping entries
    never moves what is on screen in between. Dropped entries stay at the front of ``starts``
    until enough pile up to compact the list in one go.
    """

    width: int = 0
    base: int = 0
    first: int = 0
    origin: int = 0
    starts: list[int] = field(default_factory=lambda: [0])
    stale: bool = True  # rows must be measured again before use
    follow: bool = True
    anchor: tuple[int, int] | None = None  # top of the view when last hidden (see _top_anchor)
    unseen: int = 0

    @property
    def top(self) -> int:
        return self.starts[self.first - self.base]

    @property
    def height(self) -> int:
        return self.starts[-1] - self.top

    @property
    def known_end(self) -> int:
        return self.base + len(self.starts) - 1

    def find(self, row: int) -> int | None:
        """Index into ``starts`` of the entry holding ``row``, if that entry is still held."""
        first = self.first - self.base
        starts = self.starts
        if row < starts[first] or row >= starts[-1]:
            return None
        return bisect_right(starts, row, first) - 1


class MessageLog(ScrollView, can_focus=True):
    """The scrolling log of one room at a time (see :meth:`show`)."""

    # Mouse selection works on rows as shown (time, sender, text); ctrl+c copies it.
    ALLOW_SELECT = True

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "message-log--time",
        "message-log--own",
        "message-log--mention",
        "message-log--name",
        "message-log--notice",
        "message-log--error",
        "message-log--status",
        "message-log--pending",
        "message-log--refused",
    }

    DEFAULT_CSS = """
    MessageLog {
        height: 1fr;
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        overflow-y: scroll;
        & > .message-log--time { color: $foreground 60%; }
        & > .message-log--own { text-style: bold reverse; }
        & > .message-log--mention { background: $warning-muted; text-style: bold; }
        & > .message-log--name { color: $text-warning; text-style: bold underline; }
        & > .message-log--notice { color: $foreground 55%; text-style: italic; }
        & > .message-log--error { color: $text-error; }
        & > .message-log--status { color: $text-accent; text-style: bold; }
        & > .message-log--pending { color: $foreground 50%; text-style: italic; }
        & > .message-log--refused { color: $text-error; text-style: strike; }
    }
    """

    # During a flood the view takes in arrivals at most this often (a frame of the whole log
    # for every message would cost more than everything else together).
    APPLY_INTERVAL: ClassVar[float] = 0.05

    BINDINGS: ClassVar = [("end", "scroll_to_bottom", "Bottom"), ("escape", "scroll_to_bottom")]

    class UnseenChanged(Message):
        """Entries arrived while scrolled up ("N new messages"); 0 when back at the bottom."""

        def __init__(self, log: MessageLog, count: int) -> None:
            super().__init__()
            self.log = log
            self.count = count

        @property
        def control(self) -> MessageLog:
            return self.log

    def __init__(
        self,
        *,
        time_format: str = "%H:%M",
        own_name: Callable[[], str | None] | None = None,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.time_format = time_format
        self._own_name = own_name or (lambda: None)
        self._scrollback: Scrollback | None = None
        self._layout: _Layout | None = None
        self._layouts: weakref.WeakKeyDictionary[Scrollback, _Layout] = weakref.WeakKeyDictionary()
        self._rows: LRUCache[Entry, list[Strip]] = LRUCache(512)  # a few screens
        self._styles: dict[str, Style] = {}
        # content row -> (row as rendered, the same with mouse offsets): see render_line.
        self._placed: dict[int, tuple[Strip, Strip]] = {}
        self._unseen_posted = 0
        self._unseen_scheduled = False
        self._adjusting = False  # scroll changes made here, not by the user
        self._apply_timer: Timer | None = None
        self._last_apply = 0.0
        self.last_relayout: tuple[int, float] = (0, 0.0)  # (entries, seconds) of the last one

    # --- public API ---------------------------------------------------------------------------

    @property
    def scrollback(self) -> Scrollback | None:
        return self._scrollback

    @property
    def at_bottom(self) -> bool:
        return self._layout is None or self._layout.follow

    @property
    def pending(self) -> bool:
        """Arrivals are measured but not on screen yet (applied within ``APPLY_INTERVAL``)."""
        return self._apply_timer is not None

    @property
    def unseen(self) -> int:
        return 0 if self._layout is None else self._layout.unseen

    def show(self, scrollback: Scrollback) -> None:
        """Display ``scrollback``, where its scroll position was when it was last shown."""
        if self._layout is not None and self._scrollback is not scrollback:
            self._flush()
            self._layout.anchor = self._top_anchor(self._layout)
        self._scrollback = scrollback
        layout = self._layouts.get(scrollback)
        if layout is None:
            layout = self._layouts[scrollback] = _Layout()
        self._layout = layout
        self._update(restore=True)
        self._flush()
        self._schedule_unseen()
        self.refresh()

    def entry_added(self, scrollback: Scrollback) -> None:
        """Called after ``scrollback.append(...)``; cheap, and a no-op unless it is shown.

        The entry is measured at once; the view (scrollbar, follow) takes in arrivals at once
        when they are sparse and at most every ``APPLY_INTERVAL`` seconds during a flood.
        """
        if scrollback is self._scrollback:
            self._update()

    def entry_changed(self, scrollback: Scrollback, entry: Entry) -> None:
        """An entry's send state (or text) changed: render it again, re-measure its rows."""
        self._rows.discard(entry)
        layout = self._layouts.get(scrollback)
        if layout is None or layout.stale:
            return
        if scrollback is not self._scrollback:
            layout.stale = True  # measured again when shown; cheap enough, and rare
            return
        self._update()  # first take in anything appended but not yet reported
        self._flush()
        index = _find(scrollback, entry)
        if index is None:
            return
        k = scrollback.first_index + index - layout.base
        starts = layout.starts
        old = starts[k + 1] - starts[k]
        new = entry_height(entry, layout.width, self.time_format)
        if new != old:
            delta = new - old
            above = starts[k] < layout.origin + round(self.scroll_y)
            starts[k + 1 :] = [row + delta for row in starts[k + 1 :]]
            self._apply(layout, extra=delta if above else 0)
        self.refresh()

    def refresh_all(self) -> None:
        """Render everything again (after ``Scrollback.clear`` or a change of our name)."""
        self._flush()
        anchor = None if self._layout is None else self._top_anchor(self._layout)
        self._rows.clear()
        for layout in self._layouts.values():
            layout.stale = True
        if self._layout is not None:
            self._update(anchor=anchor)
        self.refresh()

    def scroll_to_bottom(self) -> None:
        """Jump to the newest entry and follow again (End / Esc)."""
        if self._layout is not None:
            self._layout.follow = True
            self._flush()
            self._scroll_to_y(self.max_scroll_y)
            self._set_unseen(self._layout, 0)

    def action_scroll_to_bottom(self) -> None:
        self.scroll_to_bottom()

    # --- keeping the layout up to date ----------------------------------------------------------

    @property
    def _wrap_width(self) -> int:
        return self.scrollable_content_region.width

    def _update(self, restore: bool = False, anchor: tuple[int, int] | None = None) -> None:
        """Bring the shown layout up to date with its scrollback and the widget's width.

        ``restore``: it has just been shown again, so go back to where it was left.
        """
        layout, scrollback = self._layout, self._scrollback
        if layout is None or scrollback is None:
            return
        width = self._wrap_width
        if width <= 0:  # not laid out yet: measured on the first resize
            layout.stale = True
            return
        if restore:
            anchor = layout.anchor
            if anchor is None and not layout.follow:
                anchor = (layout.first, 0)
        if layout.stale or layout.width != width:
            if anchor is None:
                anchor = self._top_anchor(layout)
            self._relayout(layout, scrollback, width)
            self._flush(anchor=anchor)
            return
        unseen = self._sync(layout, scrollback)
        if unseen and not layout.follow:
            self._set_unseen(layout, layout.unseen + unseen)
        if anchor is not None:
            self._flush(anchor=anchor)
        else:
            self._request_apply()

    def _sync(self, layout: _Layout, scrollback: Scrollback) -> int:
        """Measure entries appended since the last sync; returns how many new messages."""
        first = scrollback.first_index
        total = scrollback.total_appended
        if first > layout.known_end:  # everything we knew has gone: start after it
            layout.base = first
            layout.starts = [layout.starts[-1]]
        starts = layout.starts
        unseen = 0
        if total > layout.known_end:
            width, time_format = layout.width, self.time_format
            row = starts[-1]
            for index in range(layout.known_end, total):
                entry = scrollback[index - first]
                row += entry_height(entry, width, time_format)
                starts.append(row)
                if entry.kind is EntryKind.MESSAGE and not entry.own:
                    unseen += 1
        layout.first = first
        k = first - layout.base
        if k > 4096 and k > len(starts) // 2:  # compact now and then, O(1) amortised
            del starts[:k]
            layout.base = first
        return unseen

    def _relayout(self, layout: _Layout, scrollback: Scrollback, width: int) -> None:
        began = time.perf_counter()
        time_format = self.time_format
        starts = [0]
        row = 0
        for entry in scrollback:
            row += entry_height(entry, width, time_format)
            starts.append(row)
        layout.starts = starts
        layout.base = layout.first = scrollback.first_index
        layout.origin = 0
        layout.width = width
        layout.stale = False
        self._rows.clear()
        self.last_relayout = (len(scrollback), time.perf_counter() - began)

    def _top_anchor(self, layout: _Layout) -> tuple[int, int] | None:
        """(absolute entry index, row within it) at the top of the view, to keep it there."""
        if layout.follow or layout.stale:
            return None
        row = layout.origin + round(self.scroll_y)
        k = layout.find(row)
        if k is None:
            return (layout.first, 0) if row < layout.top else None
        return layout.base + k, row - layout.starts[k]

    def _request_apply(self) -> None:
        """Apply arrivals to the view now, or soon if that was done a moment ago (a flood)."""
        if self._apply_timer is not None:
            return
        wait = self._last_apply + self.APPLY_INTERVAL - time.monotonic()
        if wait <= 0:
            self._flush()
        else:
            self._apply_timer = self.set_timer(wait, self._flush, name="message-log apply")

    def _flush(self, anchor: tuple[int, int] | None = None) -> None:
        if self._apply_timer is not None:
            self._apply_timer.stop()
            self._apply_timer = None
        self._last_apply = time.monotonic()
        if self._layout is not None and not self._layout.stale:
            self._apply(self._layout, anchor=anchor)

    def _apply(
        self, layout: _Layout, *, extra: int = 0, anchor: tuple[int, int] | None = None
    ) -> None:
        """Set the virtual size and put the view where it belongs.

        ``extra``: rows that appeared (or vanished) above the view, besides dropped entries.
        """
        shift = layout.origin - layout.top + extra  # < 0: entries above were dropped
        layout.origin = layout.top
        self._set_virtual_size(Size(layout.width, layout.height))
        if layout.follow:
            self._scroll_to_y(self.max_scroll_y)
        elif anchor is not None:
            index, within = anchor
            k = index - layout.base
            if k < layout.first - layout.base:  # that entry has been dropped meanwhile
                self._scroll_to_y(0)
            elif k < len(layout.starts) - 1:
                height = layout.starts[k + 1] - layout.starts[k]
                self._scroll_to_y(layout.starts[k] + min(within, height - 1) - layout.top)
        elif shift:
            # Move with the content, so that what is on screen stays there.
            self._scroll_to_y(max(0, round(self.scroll_y) + shift))

    def _set_virtual_size(self, size: Size) -> None:
        if size == self.virtual_size:
            return
        # Without the layout refresh that assigning ``virtual_size`` asks for: this widget's box
        # does not depend on its content (height: 1fr), and a layout of the whole screen for
        # every message is what made a flood expensive. Scrollbars are updated here instead.
        self.set_reactive(MessageLog.virtual_size, size)
        self._adjusting = True
        try:
            self._scroll_update(size)
        finally:
            self._adjusting = False
        self.refresh()

    def _scroll_to_y(self, y: int) -> None:
        self._adjusting = True
        try:
            self.scroll_to(y=y, animate=False, immediate=True)
        finally:
            self._adjusting = False
        if self._layout is not None:
            self._note_position(self._layout, by_user=False)

    def _note_position(self, layout: _Layout, by_user: bool) -> None:
        if round(self.scroll_y) >= self.max_scroll_y:
            layout.follow = True
            self._set_unseen(layout, 0)
        elif by_user:
            layout.follow = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._layout is not None and not self._adjusting:
            self._note_position(self._layout, by_user=True)

    def _set_unseen(self, layout: _Layout, count: int) -> None:
        if layout.unseen != count:
            layout.unseen = count
            if layout is self._layout:
                self._schedule_unseen()

    def _schedule_unseen(self) -> None:
        # One message per batch of arrivals, not one per entry during a flood.
        if not self._unseen_scheduled:
            self._unseen_scheduled = True
            self.call_later(self._post_unseen)

    def _post_unseen(self) -> None:
        self._unseen_scheduled = False
        count = self.unseen
        if count != self._unseen_posted:
            self._unseen_posted = count
            self.post_message(self.UnseenChanged(self, count))

    def on_resize(self, event: events.Resize) -> None:
        self._update()
        self._flush()
        if self._layout is not None and self._layout.follow:
            self._scroll_to_y(self.max_scroll_y)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._rows.clear()

    # --- rendering -------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        # Selections are in content rows: the row's place in the scrolled whole.
        content_row = round(self.scroll_y) + y
        row = self._row_strip(content_row)
        if row is None:
            return Strip.blank(width, self.rich_style)
        selection = self.text_selection
        span = selection.get_span(content_row) if selection is not None else None
        if span is None:
            # Offsets cost a style per segment: reuse them while the row stays where it is.
            cached = self._placed.get(content_row)
            if cached is not None and cached[0] is row and cached[1].cell_length == width:
                return cached[1]
        strip = row if row.cell_length == width else row.crop_extend(0, width, None)
        if span is not None:
            return self._highlight(strip, *span).apply_offsets(0, content_row)
        placed = strip.apply_offsets(0, content_row)
        if len(self._placed) > 512:
            self._placed.clear()
        self._placed[content_row] = (row, placed)
        return placed

    def _row_strip(self, content_row: int) -> Strip | None:
        """The rendered row at ``content_row``, or None past the entries."""
        layout, scrollback = self._layout, self._scrollback
        if layout is None or scrollback is None or layout.stale:
            return None
        row = layout.origin + content_row
        k = layout.find(row)
        if k is None:
            return None
        index = layout.base + k - scrollback.first_index
        if not 0 <= index < len(scrollback):
            return None
        rows = self._render_entry(scrollback[index], layout.width)
        within = row - layout.starts[k]
        return rows[within] if within < len(rows) else None

    def _highlight(self, strip: Strip, start: int, end: int) -> Strip:
        text = Text.assemble(*((seg.text, seg.style) for seg in strip if not seg.control))
        text.stylize(
            self.screen.get_component_rich_style("screen--selection"),
            start,
            len(text) if end == -1 else end,
        )
        return Strip(text.render(self.app.console), strip.cell_length)

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The selected rows as shown, for ctrl+c; rows above the selection are left empty."""
        first = selection.start.y if selection.start is not None else 0
        last = selection.end.y if selection.end is not None else self.virtual_size.height - 1
        rows = [""] * first
        for content_row in range(first, last + 1):
            strip = self._row_strip(content_row)
            rows.append("" if strip is None else strip.text.rstrip())
        return selection.extract("\n".join(rows)), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()

    def _render_entry(self, entry: Entry, width: int) -> list[Strip]:
        rows = self._rows.get(entry)
        if rows is None:
            rows = self._rows[entry] = self._build_rows(entry, width)
        return rows

    def _style(self, role: str, overlay: bool = False) -> Style:
        """The full style of a role; ``overlay``: only what the role adds (to combine)."""
        key = f"+{role}" if overlay else role
        style = self._styles.get(key)
        if style is None:
            if role in {"", "text"}:
                style = self.rich_style
            elif role.startswith("#"):
                style = self.rich_style + Style(color=role, bold=True)
            else:
                name = {"pending-mark": "pending", "refused-mark": "error"}.get(role, role)
                # The full style has translucent colours blended; the partial one is for
                # combining with another style (colours with alpha do not survive in it).
                style = self.get_component_rich_style(f"message-log--{name}", partial=overlay)
            self._styles[key] = style
        return style

    def _build_rows(self, entry: Entry, width: int) -> list[Strip]:
        plan = plan_entry(entry, width, self.time_format)
        own_name = self._own_name()
        is_message = entry.kind is EntryKind.MESSAGE
        own = entry.own or (is_message and own_name is not None and entry.sender == own_name)
        base = self._style("")
        if is_message:
            text_style = self._style("text")
            if entry.state is SendState.PENDING:
                text_style = self._style("pending")
            elif entry.state is SendState.REFUSED:
                text_style = self._style("refused")
            elif entry.mention and not own:
                text_style = self._style("mention")
            sender_style = self._style(sender_colour(entry.sender or "?"))
            if own:
                sender_style += self._style("own", overlay=True)
        else:
            text_style = self._style(entry.kind.value)
            sender_style = base
        highlight = own_name if is_message and not own and own_name else None
        name_style = self._style("name", overlay=True)

        head: list[Segment] = []
        for piece, role in plan.head:
            if role == "sender":
                style = sender_style
            elif role == "mark":
                style = text_style
            else:
                style = self._style(role)
            head.append(Segment(piece, style))
        indent = Segment(" " * plan.indent, base)
        strips: list[Strip] = []
        for number, start, end in plan.rows:
            segments = list(head) if not strips else [indent]
            if number >= 0:
                line = plan.lines[number]
                segments.extend(_text_segments(line, start, end, text_style, highlight, name_style))
            strips.append(Strip(segments).crop_extend(0, width, base))
        return strips


def _text_segments(
    line: str, start: int, end: int, style: Style, highlight: str | None, name_style: Style
) -> list[Segment]:
    """``line[start:end]`` with occurrences of our own name picked out."""
    if not highlight or highlight not in line:
        return [Segment(line[start:end], style)]
    segments: list[Segment] = []
    position = start
    for match in re.finditer(re.escape(highlight), line):
        left, right = max(match.start(), start), min(match.end(), end)
        if left >= right:
            continue
        if left > position:
            segments.append(Segment(line[position:left], style))
        segments.append(Segment(line[left:right], style + name_style))
        position = right
    if position < end:
        segments.append(Segment(line[position:end], style))
    return segments


def _find(scrollback: Scrollback, entry: Entry) -> int | None:
    """Index of ``entry`` (by identity); changed entries are nearly always recent ones."""
    for back, candidate in enumerate(reversed(scrollback), 1):
        if candidate is entry:
            return len(scrollback) - back
    return None
