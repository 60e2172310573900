"""The sidebar: joined rooms in a stable order, with state, unread count and mention mark."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from rich.text import Text
from textual import events
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widget import Widget

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


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """What the sidebar shows about one room (the app builds these from its room state)."""

    room: str
    state: str
    unread: int = 0
    mentions: int = 0


def room_label(number: int, info: RoomInfo, active: bool, width: int = 0) -> Text:
    """One sidebar line: "1 ● general 3 @". Plain Text: room names are never markup.

    With ``width``, a long room name is shortened with "…" so the counts stay visible.
    """
    prefix = Text(f"{number} " if number <= 9 else "  ", style="dim")
    prefix.append(STATE_GLYPHS.get(info.state, "?") + " ", style=STATE_STYLES.get(info.state, ""))
    suffix = Text()
    if info.unread:
        suffix.append(f" {info.unread}", style="bold")
    if info.mentions:
        suffix.append(f" {MENTION_MARK}", style="bold reverse")
    room = info.room
    room_width = width - prefix.cell_len - suffix.cell_len
    if width and len(room) > room_width:
        room = room[: max(room_width - 1, 1)] + "…"
    label = prefix
    label.append(room, style="bold" if active or info.unread else "")
    label.append_text(suffix)
    return label


class RoomItem(Widget):
    """One room's line; the room name is kept so a click can say which room it was."""

    def __init__(self, room: str) -> None:
        super().__init__()
        self.room = room
        self._label: tuple[int, RoomInfo, bool] = (0, RoomInfo(room, "connecting"), False)

    def show(self, number: int, info: RoomInfo, active: bool) -> None:
        if (number, info, active) != self._label:
            self._label = (number, info, active)
            self.refresh()

    def render(self) -> Text:
        number, info, active = self._label
        return room_label(number, info, active, self.content_size.width)

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(RoomList.Selected(self.room))


class RoomList(VerticalScroll, can_focus=False):
    """The joined rooms. The app calls :meth:`set_rooms`; a click on a room posts
    :class:`Selected` (from the room's line, so it bubbles through here to the app)."""

    class Selected(Message):
        """The user clicked a room."""

        def __init__(self, room: str) -> None:
            super().__init__()
            self.room = room

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._items: dict[str, RoomItem] = {}

    def set_rooms(self, rooms: list[RoomInfo], active: str | None) -> None:
        """Show ``rooms``; new rooms are appended, which keeps the order the app gives."""
        wanted = [info.room for info in rooms]
        for room in list(self._items):
            if room not in wanted:
                self._items.pop(room).remove()
        for number, info in enumerate(rooms, start=1):
            item = self._items.get(info.room)
            if item is None:
                item = RoomItem(info.room)
                self._items[info.room] = item
                self.mount(item)
            item.show(number, info, info.room == active)
            item.set_class(info.room == active, "-active")
            item.set_class(bool(info.unread), "-unread")
            item.set_class(bool(info.mentions), "-mention")
            item.set_class(info.state in ("offline", "failed"), "-down")
