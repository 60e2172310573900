"""The message log of the active room: a line-API widget whose cost follows the screen.

Only the rows on screen are rendered (``render_line``). What the widget keeps for every entry is
one integer, the first row of the entry at the current width, so that appending is O(1), a row
can be found by bisection, and a resize re-measures entries without rendering them. Rendered rows
are cached per entry for the current width only. Layout itself (wrapping, measuring, safe
display of control characters) is :mod:`chat_tui.text_layout`'s.

Why the screen is right:

* The log observes the shown :class:`Scrollback`. A change only notes that a sync is due; the
  sync then takes in everything that happened since the last one (appends, drops, entries
  changed in place, a reordering), once, however many changes there were. Every sync that
  changed anything repaints the widget: the rows on screen may show other entries even when
  neither the virtual size nor the scroll position moved (a full scrollback dropping as many
  entries from the top as arrive at the bottom). That is what Textual's line cache needs to be
  told, and it is told in one place. In a flood, syncs come at most every
  :data:`SYNC_INTERVAL` (``sync_due`` stays true meanwhile: the screen is behind).
* ``following`` is whether the view is at the end, evaluated whenever the position changes and
  at every sync; when it is, arrivals keep the view at the end (as Textual's ``Log`` checks
  ``is_vertical_scroll_end`` before a write). Otherwise what is on screen stays on screen, and
  ``unseen`` counts the messages that arrived below. Both are reactives the app watches.
"""

from __future__ import annotations

import re
import time
import weakref
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.cache import LRUCache
from textual.color import Color
from textual.geometry import Size
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip

from chat_tui.links import find_links, suspicious
from chat_tui.messages import LinkClicked
from chat_tui.scrollback import Entry, EntryKind, Scrollback, SendState
from chat_tui.search import Search
from chat_tui.text_layout import cell_len, entry_height, find_spans, plan_entry, sender_colour

DIVIDER_TEXT = " new messages "
LOOKALIKE = "lookalike"  # the style meta key of a link whose host may not be what it seems
# In a flood (the last sync took in at least BURST_ENTRIES new entries, within 1.5 of these
# of the one before), syncs (and so repaints of the log) follow one another at least this far
# apart: a flood is drawn some 20 times a second, not at every slice (each repaint of a screen
# full of new rows costs several milliseconds). Anything else is shown at once.
SYNC_INTERVAL = 0.05
BURST_ENTRIES = 64
# Rendered rows kept: for the entries of about a screen, and the rows placed on it. Every
# object kept alive is one more for each full garbage collection to look at (a flood renders
# thousands of rows that are never shown again).
ROWS_KEPT = 64
PLACED_KEPT = 64


@dataclass(slots=True, eq=False)
class _Layout:
    """Row positions of one scrollback's entries at one width, plus where its view was.

    ``starts[k]`` is the first row of the entry with absolute index ``base + k`` (absolute:
    counting every append ever made), and the last item is the end row. Rows are counted from
    an arbitrary zero that never moves while the width stays the same. ``origin`` is the row
    shown at the top of the scrollable area: it catches up with ``top`` (the first row of the
    oldest entry still held) at each sync, so that dropping entries never moves what is on
    screen in between. Dropped entries stay at the front of ``starts`` until enough pile up to
    compact the list in one go.
    """

    width: int = 0
    base: int = 0
    first: int = 0
    origin: int = 0
    # An array of machine integers: 8 bytes an entry, where a list of ints costs some 36.
    starts: array[int] = field(default_factory=lambda: array("q", [0]))
    stale: bool = True  # rows must be measured again before use
    generation: int = -1  # the scrollback's generation these rows were measured for
    style_generation: int = -1
    # Where the view was when this scrollback was last shown.
    following: bool = True
    revealed: Entry | None = None  # the "new messages" marker last brought into view
    anchor: tuple[int, int] | None = None  # (entry, row within it) at the top of the view
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
        "message-log--divider",
        "message-log--history",
        "message-log--match",
        "message-log--match-current",
        "message-log--link",
        "message-log--link-lookalike",
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
        & > .message-log--divider { color: $text-error; text-style: bold; }
        & > .message-log--history { text-style: dim; }
        & > .message-log--match { background: $warning 45%; }
        & > .message-log--match-current { background: $warning; text-style: bold; }
        & > .message-log--link { color: $text-accent; text-style: underline; }
        & > .message-log--link-lookalike { color: $text-error; text-style: underline reverse; }
    }
    """

    BINDINGS: ClassVar = [("end", "scroll_to_bottom", "Bottom"), ("escape", "scroll_to_bottom")]

    following: var[bool] = var(True, init=False)
    """The view is at the end: arrivals keep it there."""
    unseen: var[int] = var(0, init=False)
    """Messages from others that arrived below the view while it was not following."""

    def __init__(
        self,
        *,
        time_format: str = "%H:%M",
        own_name: Callable[[], str | None] | None = None,
        count_bar_rows: int = 0,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.time_format = time_format
        # Rows that the screen's bar telling ``unseen`` takes from the log when it shows.
        self._count_bar_rows = count_bar_rows
        self._own_name = own_name or (lambda: None)
        self._scrollback: Scrollback | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._layout: _Layout | None = None
        self._layouts: weakref.WeakKeyDictionary[Scrollback, _Layout] = weakref.WeakKeyDictionary()
        self._rows: LRUCache[Entry, list[Strip]] = LRUCache(ROWS_KEPT)
        self._styles: dict[str, Style] = {}
        # content row -> (row as rendered, the same with mouse offsets): see render_line.
        self._placed: dict[int, tuple[Strip, Strip]] = {}
        self._sync_due = False
        self._synced_at = 0.0  # time.monotonic() of the last sync
        self._burst = False  # the last sync was one of a flood's (see SYNC_INTERVAL)
        self._search: Search | None = None

    # --- public API ---------------------------------------------------------------------------

    @property
    def scrollback(self) -> Scrollback | None:
        return self._scrollback

    @property
    def sync_due(self) -> bool:
        """Changes were noted that the screen does not show yet (they are, once this is False)."""
        return self._sync_due

    def show(self, scrollback: Scrollback) -> None:
        """Display ``scrollback``, where its view was when it was last shown.

        With a "new messages" marker (what arrived since) the view goes to the marker instead.
        Showing the scrollback already shown changes nothing: where the view is now is where
        it belongs (what was saved when it was last left is out of date).
        """
        if scrollback is self._scrollback:
            return
        old = self._layout
        if old is not None:
            self.sync()
            old.anchor = self._top_anchor(old)
            old.following, old.unseen = self.following, self.unseen
            self.end_search()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._scrollback = scrollback
        self._unsubscribe = scrollback.subscribe(self._note_change)
        layout = self._layouts.get(scrollback)
        if layout is None:
            layout = self._layouts[scrollback] = _Layout()
        if scrollback.marker is not None:
            # Unread entries to show: from the end, the marker is revealed (see _sync).
            layout.following, layout.unseen, layout.anchor = True, 0, None
        self._layout = layout
        self.following, self.unseen = layout.following, layout.unseen
        self._sync(restore=True)

    def sync(self) -> None:
        """Take in now whatever changed since the last sync (normally done once per burst)."""
        self._sync()

    def scroll_to_bottom(self) -> None:
        """Jump to the newest entry and follow again (End / Esc)."""
        self.sync()
        self._move_to(self.max_scroll_y)
        self.following = True

    def action_scroll_to_bottom(self) -> None:
        self.scroll_to_bottom()

    def page(self, direction: int) -> None:
        """Scroll a page up (``direction`` < 0) or down, as the user asked."""
        if direction < 0:
            self.scroll_page_up(animate=False)
        else:
            self.scroll_page_down(animate=False)

    # --- search ---------------------------------------------------------------------------------

    def search(self, query: str, at: Entry | None = None) -> tuple[int, int]:
        """Highlight ``query`` and go to its newest match (or to ``at``, if it is one);
        returns (position, count)."""
        self.sync()
        if not query:
            self.end_search()
            return 0, 0
        search = Search(query)
        self._search = search
        self._rows.clear()
        scrollback = self._scrollback
        if scrollback is not None:
            search.update(scrollback)
        index = scrollback.index_of(at) if scrollback is not None and at is not None else None
        if index is not None and index in search.matches:
            search.current = index
        else:
            search.step(older=True)
        self._show_match()
        self.refresh()
        return search.position, search.count

    def search_step(self, older: bool) -> tuple[int, int]:
        """Go to the next older (or newer) match; returns (position, count)."""
        search = self._search
        if search is None:
            return 0, 0
        self.sync()
        previous = search.current
        search.step(older)
        self._rows.clear()  # which match is current changed
        if previous != search.current:
            self._show_match()
        self.refresh()
        return search.position, search.count

    @property
    def search_result(self) -> tuple[int, int]:
        search = self._search
        return (search.position, search.count) if search is not None else (0, 0)

    def end_search(self) -> None:
        if self._search is not None:
            self._search = None
            self._rows.clear()
            self.refresh()

    def _show_match(self) -> None:
        layout, search = self._layout, self._search
        if layout is None or search is None or search.current is None or layout.stale:
            return
        k = search.current - layout.base
        if not 0 <= k < len(layout.starts) - 1:
            return
        row = layout.starts[k] - layout.top
        height = self.scrollable_content_region.height
        top = round(self.scroll_y)
        entry_rows = layout.starts[k + 1] - layout.starts[k]
        if top <= row and row + entry_rows <= top + height:
            return  # already on screen
        self._move_to(max(0, row - height // 2))

    # --- keeping the layout up to date ----------------------------------------------------------

    @property
    def _wrap_width(self) -> int:
        return self.scrollable_content_region.width

    def _note_change(self) -> None:
        """The shown scrollback changed: sync once, after whatever is changing it now (and
        no sooner than :data:`SYNC_INTERVAL` after the last sync)."""
        if not self._sync_due:
            self._sync_due = True
            wait = self._synced_at + SYNC_INTERVAL - time.monotonic()
            if self._burst and wait > 0:
                self.set_timer(wait, self._sync_if_due)
            else:
                self.call_later(self._sync_if_due)

    def _sync_if_due(self) -> None:
        if self._sync_due:  # else someone synced meanwhile
            self._sync()

    def _sync(self, restore: bool = False) -> None:
        """Bring the view up to date with its scrollback and the widget's width.

        ``restore``: the scrollback has just been shown again; go back to where it was left.
        """
        self._sync_due = False
        now = time.monotonic()
        soon = now - self._synced_at < SYNC_INTERVAL * 1.5
        self._synced_at = now
        self._burst = False
        layout, scrollback = self._layout, self._scrollback
        if layout is None or scrollback is None:
            return
        width = self._wrap_width
        if width <= 0:  # not laid out yet: measured on the first resize
            layout.stale = True
            return
        at_end = self.following
        anchor = layout.anchor if restore and not at_end else None
        if (
            layout.stale
            or layout.width != width
            or layout.generation != scrollback.generation
            or layout.style_generation != scrollback.style_generation
        ):
            if anchor is None and not at_end:
                anchor = self._top_anchor(layout)
            self._relayout(layout, scrollback, width)
            scrollback.take_changes()  # measured with everything else
            self._apply(layout, at_end, anchor=anchor)
        else:
            self._burst = soon and scrollback.total_appended - layout.known_end >= BURST_ENTRIES
            unseen = self._measure_appended(layout, scrollback)
            extra = self._measure_changes(layout, scrollback)
            self._apply(layout, at_end, extra=extra, anchor=anchor)
            if unseen and not at_end:
                # Counted as they come, but no more than the scrollback still holds: what
                # was dropped from its top can no longer be shown.
                self.unseen = min(self.unseen + unseen, len(scrollback))
        if restore or (scrollback.marker is not None and scrollback.marker is not layout.revealed):
            # Entering the room, or a divider set while it is shown (the unread of a start,
            # which come with the welcome): shown on top, not left a screen or more above.
            self._reveal_marker(layout, scrollback)
        if self._search is not None:
            self._search.update(scrollback)
        self.following = self.is_vertical_scroll_end
        if self.following:
            self.unseen = 0
        self.refresh()

    def _height(self, entry: Entry, marker: Entry | None, width: int) -> int:
        hide = self._scrollback is not None and self._scrollback.hide_quiet
        return entry_height(entry, width, self.time_format, hide) + (entry is marker)

    def _measure_appended(self, layout: _Layout, scrollback: Scrollback) -> int:
        """Measure entries appended since the last sync; returns how many are others' messages."""
        first = scrollback.first_index
        total = scrollback.total_appended
        if first > layout.known_end:  # everything we knew has gone: start after it
            layout.base = first
            layout.starts = array("q", [layout.starts[-1]])
        starts = layout.starts
        messages = 0
        if total > layout.known_end:
            width, time_format, marker = layout.width, self.time_format, scrollback.marker
            hide = scrollback.hide_quiet
            row = starts[-1]
            for entry in scrollback.scan(layout.known_end - first):
                row += entry_height(entry, width, time_format, hide) + (entry is marker)
                starts.append(row)
                if entry.kind is EntryKind.MESSAGE and not entry.own:
                    messages += 1
        layout.first = first
        k = first - layout.base
        if k > 4096 and k > len(starts) // 2:  # compact now and then, O(1) amortised
            del starts[:k]
            layout.base = first
        return messages

    def _measure_changes(self, layout: _Layout, scrollback: Scrollback) -> int:
        """Re-measure entries changed in place; returns how many rows appeared above the view."""
        extra = 0
        view_top = layout.origin + round(self.scroll_y)
        starts = layout.starts
        for entry in scrollback.take_changes():
            self._rows.discard(entry)
            index = scrollback.index_of(entry)
            if index is None or index < layout.first:
                continue  # dropped meanwhile
            k = index - layout.base
            old = starts[k + 1] - starts[k]
            new = self._height(entry, scrollback.marker, layout.width)
            if new != old:
                delta = new - old
                if starts[k] < view_top:
                    extra += delta
                starts[k + 1 :] = array("q", [row + delta for row in starts[k + 1 :]])
        return extra

    def _relayout(self, layout: _Layout, scrollback: Scrollback, width: int) -> None:
        time_format, marker = self.time_format, scrollback.marker
        hide = scrollback.hide_quiet
        starts = array("q", [0])
        row = 0
        for entry in scrollback.scan():
            row += entry_height(entry, width, time_format, hide) + (entry is marker)
            starts.append(row)
        layout.starts = starts
        layout.base = layout.first = scrollback.first_index
        layout.origin = 0
        layout.width = width
        layout.stale = False
        layout.generation = scrollback.generation
        layout.style_generation = scrollback.style_generation
        self._rows.clear()

    def _top_anchor(self, layout: _Layout) -> tuple[int, int] | None:
        """(absolute entry index, row within it) at the top of the view, to keep it there."""
        if layout.stale:
            return None
        row = layout.origin + round(self.scroll_y)
        k = layout.find(row)
        if k is None:
            return (layout.first, 0) if row < layout.top else None
        return layout.base + k, row - layout.starts[k]

    def _apply(
        self,
        layout: _Layout,
        at_end: bool,
        *,
        extra: int = 0,
        anchor: tuple[int, int] | None = None,
    ) -> None:
        """Set the virtual size and put the view where it belongs.

        ``extra``: rows that appeared (or vanished) above the view, besides dropped entries.
        """
        shift = layout.origin - layout.top + extra  # < 0: entries above were dropped
        layout.origin = layout.top
        size = Size(layout.width, layout.height)
        if size != self.virtual_size:
            # Without the layout refresh that assigning ``virtual_size`` asks for: this
            # widget's box does not depend on its content (height: 1fr), and a layout of the
            # whole screen for every burst is what made a flood expensive.
            self.set_reactive(MessageLog.virtual_size, size)
            self._scroll_update(size)
        if at_end:
            self._move_to(self.max_scroll_y)
        elif anchor is not None:
            index, within = anchor
            k = index - layout.base
            if k < layout.first - layout.base:  # that entry has been dropped meanwhile
                self._move_to(0)
            elif k < len(layout.starts) - 1:
                height = layout.starts[k + 1] - layout.starts[k]
                self._move_to(layout.starts[k] + min(within, height - 1) - layout.top)
        elif shift:
            # Move with the content, so that what is on screen stays there.
            self._move_to(max(0, round(self.scroll_y) + shift))

    def _reveal_marker(self, layout: _Layout, scrollback: Scrollback) -> None:
        """Entering a room: if its "new messages" divider is above the view, show it on top."""
        marker = scrollback.marker
        if marker is None or not self.following:
            return
        index = scrollback.index_of(marker)
        if index is None:
            return
        layout.revealed = marker
        row = layout.starts[index - layout.base] - layout.top
        if row >= round(self.scroll_y):
            return  # on screen already
        self._move_to(max(row - 1, 0))  # one row of what came before, for context
        self.unseen = self._unseen_below(layout, scrollback)

    def _unseen_below(self, layout: _Layout, scrollback: Scrollback) -> int:
        """Others' messages that start below the view's last row (none are seen there). The
        screen's bar that tells a count takes rows from the view: if it is not shown yet,
        the view's last rows are about to go."""
        height = self.scrollable_content_region.height
        if self.unseen == 0:
            height -= self._count_bar_rows
        bottom = layout.top + round(self.scroll_y) + height
        below = layout.find(bottom)
        if below is None:
            return 0
        if layout.starts[below] < bottom:
            below += 1  # its top rows are in view: it has been seen
        return scrollback.others_messages(layout.base + below - scrollback.first_index)

    def _move_to(self, y: int) -> None:
        self.scroll_to(y=y, animate=False, immediate=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.following = self.is_vertical_scroll_end
        layout, scrollback = self._layout, self._scrollback
        if new_value > old_value and self.unseen and layout is not None and scrollback is not None:
            # Scrolling down reads what was counted: the count goes down with it.
            self.unseen = min(self.unseen, self._unseen_below(layout, scrollback))

    def watch_following(self, following: bool) -> None:
        if following:
            self.unseen = 0

    def on_resize(self, event: events.Resize) -> None:
        # self.following is still what it was before the resize: kept at the end if it was.
        self._sync()

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
        if len(self._placed) > PLACED_KEPT:
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
        rows = self._render_entry(scrollback[index], layout.base + k, layout.width)
        within = row - layout.starts[k]
        return rows[within] if within < len(rows) else None

    def _selection_style(self) -> Style:
        """Selected cells: the theme's selection background, and a foreground that reads on it.

        The theme's selection colour is translucent and its foreground usually "transparent"
        (keep the text's colour); blended for the terminal, that foreground would become the
        background itself, and the selected text would vanish.
        """
        style = self._styles.get("selection")
        if style is None:
            full = self.screen.get_component_rich_style("screen--selection")
            partial = self.screen.get_component_rich_style("screen--selection", partial=True)
            background = full.bgcolor or self.rich_style.bgcolor
            foreground = full.color if partial.color is not None else None
            if background is not None and (foreground is None or foreground == background):
                back = Color.from_rich_color(background)
                foreground = back.get_contrast_text(1.0).rich_color
            style = Style(color=foreground, bgcolor=background)
            self._styles["selection"] = style
        return style

    def _highlight(self, strip: Strip, start: int, end: int) -> Strip:
        text = Text.assemble(*((seg.text, seg.style) for seg in strip if not seg.control))
        text.stylize(self._selection_style(), start, len(text) if end == -1 else end)
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

    def _render_entry(self, entry: Entry, index: int, width: int) -> list[Strip]:
        rows = self._rows.get(entry)
        if rows is None:
            rows = self._rows[entry] = self._build_rows(entry, index, width)
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
                full = self.get_component_rich_style(f"message-log--{name}")
                if overlay:
                    # Translucent colours do not survive in the partial style: take the
                    # colours the role sets from the full (blended) one.
                    partial = self.get_component_rich_style(f"message-log--{name}", partial=True)
                    style = partial + Style(
                        color=full.color if partial.color is not None else None,
                        bgcolor=full.bgcolor if partial.bgcolor is not None else None,
                    )
                else:
                    style = full
            self._styles[key] = style
        return style

    def _build_rows(self, entry: Entry, index: int, width: int) -> list[Strip]:
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
            if entry.from_history:
                # Said before we joined: the whole row dimmed, above the "joined" line.
                history = self._style("history", overlay=True)
                text_style += history
                sender_style += history
        else:
            text_style = self._style(entry.kind.value)
            sender_style = base
        picks: list[tuple[str, bool, Style]] = []  # (what, case-insensitive, style)
        if is_message and not own and own_name:
            picks.append((own_name, False, self._style("name", overlay=True)))
        for line in plan.lines if "://" in entry.text else ():
            for _, _, url in find_links(line):
                picks.append((url, False, self._link_style(url)))
        search = self._search
        if search is not None:
            role = "match-current" if search.current == index else "match"
            picks.append((search.query, True, self._style(role, overlay=True)))

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
        scrollback = self._scrollback
        if scrollback is not None and entry is scrollback.marker:
            strips.append(self._divider(width))
        for number_of_row, (number, start, end) in enumerate(plan.rows):
            segments = list(head) if number_of_row == 0 else [indent]
            if number >= 0:
                line = plan.lines[number]
                segments.extend(_text_segments(line, start, end, text_style, picks))
            strips.append(_fitted(segments, width, base))
        return strips

    def _link_style(self, url: str) -> Style:
        """Underlined, and a terminal hyperlink (OSC 8); a link whose host may not be what it
        looks like stands out, and is no hyperlink (the terminal would open it unasked): a
        click on it says what it is instead."""
        if suspicious(url):
            return self._style("link-lookalike", overlay=True) + Style.from_meta({LOOKALIKE: url})
        return self._style("link", overlay=True) + Style(link=url)

    def on_click(self, event: events.Click) -> None:
        # The app captures the mouse, so the terminal never sees the click on its hyperlink.
        url = event.style.link or event.style.meta.get(LOOKALIKE)
        if url:
            event.stop()
            self.post_message(LinkClicked(url))

    def _divider(self, width: int) -> Strip:
        style = self._style("divider")
        side = max(width - len(DIVIDER_TEXT), 0)
        left = side // 2
        text = "─" * left + DIVIDER_TEXT + "─" * (side - left)
        return Strip([Segment(text[:width], style)]).crop_extend(0, width, self._style(""))


def _fitted(segments: list[Segment], width: int, pad: Style) -> Strip:
    """A row of exactly ``width`` cells, as ``Strip(segments).crop_extend(0, width, pad)``
    makes it, but one Strip instead of up to three (each comes with seven caches), and none
    that caches itself (a reference cycle, left for the garbage collector)."""
    cells = sum(cell_len(segment.text) for segment in segments)
    if cells < width:
        segments.append(Segment(" " * (width - cells), pad))
    elif cells > width:
        return Strip(segments, cells).crop(0, width)
    return Strip(segments, width)


def _text_segments(
    line: str, start: int, end: int, style: Style, picks: list[tuple[str, bool, Style]]
) -> list[Segment]:
    """``line[start:end]``, with what ``picks`` names picked out (later picks win)."""
    marks: list[Style | None] = []
    for needle, fold, pick_style in picks:
        if fold:
            spans = find_spans(line, needle)
        elif needle in line:
            spans = [(m.start(), m.end()) for m in re.finditer(re.escape(needle), line)]
        else:
            continue
        for left, right in spans:
            left, right = max(left, start), min(right, end)
            if left >= right:
                continue
            if not marks:
                marks = [None] * (end - start)
            for position in range(left - start, right - start):
                marks[position] = pick_style
    if not marks:
        return [Segment(line[start:end], style)]
    segments: list[Segment] = []
    run_start = 0
    for position in range(1, len(marks) + 1):
        if position == len(marks) or marks[position] is not marks[run_start]:
            mark = marks[run_start]
            text = line[start + run_start : start + position]
            segments.append(Segment(text, style if mark is None else style + mark))
            run_start = position
    return segments
