"""The sidebar: joined rooms in a stable order, with state, unread count and mention mark.

Collapsed (narrow terminals, or ctrl+b), each room is only its number, state and marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from rich.text import Text
from textual import events
from textual.containers import VerticalScroll
from textual.widget import Widget

from chat_tui.messages import RoomSelected
from chat_tui.text_layout import truncate

# One glyph per connection state (ConnectionState values), so the state reads at a glance.
STATE_GLYPHS: Final = {
    "connecting": "◌",
    "connected": "●",
    "offline": "○",
    "failed": "✖",
    "closed": "·",
}
STATE_STYLES: Final = {
    "connecting": "yellow",
    "connected": "green",
    "offline": "red",
    "failed": "bold red",
    "closed": "dim",
}
MENTION_MARK: Final = "@"
RETRY_MARK: Final = "↻"


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """What the sidebar shows about one room (the app builds these from its rooms)."""

    room: str
    state: str
    unread: int = 0
    mentions: int = 0
    retry: str = ""  # the countdown to the next attempt ("7 s"), while waiting for one
    detail: str = ""  # why it is offline or failed


def room_label(
    number: int, info: RoomInfo, active: bool, width: int = 0, *, compact: bool = False
) -> Text:
    """One sidebar line: "1 ● general 3 @", or "1●3@" compact. Plain Text: names are no markup.

    With ``width``, a long room name is shortened with "…" so the counts stay visible.
    """
    glyph = STATE_GLYPHS.get(info.state, "?")
    glyph_style = STATE_STYLES.get(info.state, "")
    if compact:
        # Past 9 no alt+digit reaches it, but the number still tells one room from another.
        label = Text(f"{number}", style="bold" if active else "dim")
        label.append(glyph, style=glyph_style)
        if info.unread:
            label.append(str(info.unread) if info.unread < 100 else "99+", style="bold")
        if info.mentions:
            label.append(MENTION_MARK, style="bold reverse")
        return label
    prefix = Text(f"{number} ", style="dim")
    prefix.append(glyph + " ", style=glyph_style)
    suffix = Text()
    if info.unread:
        suffix.append(f" {info.unread}", style="bold")
    if info.mentions:
        suffix.append(f" {MENTION_MARK}", style="bold reverse")
    if info.retry:
        suffix.append(f" {RETRY_MARK}{info.retry.replace(' ', '')}", style="dim")
    room_width = width - prefix.cell_len - suffix.cell_len
    room = truncate(info.room, max(room_width, 2)) if width else info.room
    label = prefix
    label.append(room, style="bold" if active or info.unread else "")
    label.append_text(suffix)
    return label


def room_tooltip(info: RoomInfo) -> str:
    text = f"{info.room}: {info.state}"
    if info.detail and info.state in ("offline", "failed"):
        text += f" ({info.detail})"
    if info.retry:
        text += f"; retrying in {info.retry} (ctrl+r: now)"
    if info.unread:
        text += f"; {info.unread} unread"
    return text


class RoomItem(Widget):
    """One room's line; the room name is kept so a click can say which room it was."""

    def __init__(self, room: str) -> None:
        super().__init__()
        self.room = room
        self._label: tuple[int, RoomInfo, bool, bool] = (
            0,
            RoomInfo(room, "connecting"),
            False,
            False,
        )

    def show(self, number: int, info: RoomInfo, active: bool, compact: bool) -> None:
        if (number, info, active, compact) != self._label:
            self._label = (number, info, active, compact)
            self.tooltip = room_tooltip(info)
            self.refresh()

    def render(self) -> Text:
        number, info, active, compact = self._label
        return room_label(number, info, active, self.content_size.width, compact=compact)

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(RoomSelected(self.room))


class RoomList(VerticalScroll, can_focus=False):
    """The joined rooms. The app calls :meth:`set_rooms`; a click on a room posts
    ``messages.RoomSelected`` (from the room's line, so it bubbles through here to the app)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._items: dict[str, RoomItem] = {}
        self._active: str | None = None  # the active room when the list was last set

    @property
    def compact(self) -> bool:
        return self.has_class("-collapsed")

    def set_rooms(self, rooms: list[RoomInfo], active: str | None) -> None:
        """Show ``rooms``; new rooms are appended, which keeps the order the app gives."""
        wanted = [info.room for info in rooms]
        for room in list(self._items):
            if room not in wanted:
                self._items.pop(room).remove()
        compact = self.compact
        for number, info in enumerate(rooms, start=1):
            item = self._items.get(info.room)
            if item is None:
                item = RoomItem(info.room)
                # In the app's order: before the first room shown that comes after it.
                later = [self._items[r] for r in wanted[number:] if r in self._items]
                self._items[info.room] = item
                if later:
                    self.mount(item, before=later[0])
                else:
                    self.mount(item)
            item.show(number, info, info.room == active, compact)
            item.set_class(info.room == active, "-active")
            item.set_class(bool(info.unread), "-unread")
            item.set_class(bool(info.mentions), "-mention")
            item.set_class(info.state in ("offline", "failed"), "-down")
        if active != self._active:
            # A room switched to (or joined) below the fold is scrolled into sight, once:
            # the user's own scrolling of the list is theirs until the next switch.
            self._active = active
            item = self._items.get(active) if active is not None else None
            if item is not None:
                self.call_after_refresh(item.scroll_visible, animate=False)
