"""The members panel (f2): who is in the active room, our own name first and marked.

Its cost follows the screen, as the log's does: only the rows shown are drawn. It was a
``Static`` of every name: a room of thousands laid out again at each change, seconds of a
join flood's screen updates.
"""

from __future__ import annotations

from typing import Final

from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from chat_tui.rooms import MemberSource
from chat_tui.text_layout import display_line, sender_colour, truncate

OWN_MARK: Final = "(you)"
AWAY_MARK: Final = "(away)"


def heading(count: int, own: str | None, source: MemberSource) -> list[Text]:
    """The panel's first rows: where the list comes from (and a note on it)."""
    if source is MemberSource.SEEN:
        title, note = f"seen here ({count})", "(no list from server)"
    elif source is MemberSource.CONVERSATION:
        title, note = "conversation", ""
    else:
        title = f"members ({count})"
        # Unknown: asked for once we are in the room (our name known), not before.
        waiting = "asking the server…" if own is not None else "not in the room yet"
        note = waiting if source is MemberSource.UNKNOWN else ""
    rows = [Text.assemble((title, "bold"))]
    if note:
        rows.append(Text.assemble((note, "dim italic")))
    return rows


def member_row(name: str, own: str | None, away: bool, width: int) -> Text:
    """One member's row, cut to ``width`` (names are shown literally: a ``Text``)."""
    mark = f" {OWN_MARK}" if name == own else f" {AWAY_MARK}" if away else ""
    shown = truncate(display_line(name), max(1, width - len(mark)))
    if name == own:
        return Text.assemble((shown, f"bold {sender_colour(name)}"), (mark, "dim"))
    if away:
        return Text.assemble((shown, f"{sender_colour(name)} dim"), (mark, "dim italic"))
    return Text.assemble((shown, sender_colour(name)))


class MembersPanel(ScrollView, can_focus=False):
    """The active room's members; the app calls :meth:`show_members` when they change."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._names: list[str] = []
        self._own: str | None = None
        self._away: frozenset[str] = frozenset()
        self._head: list[Text] = []
        self._shown: tuple[tuple[str, ...], str | None, MemberSource, frozenset[str]] | None = None

    def show_members(
        self,
        names: list[str],
        own: str | None,
        source: MemberSource,
        away: dict[str, str] | None = None,
    ) -> None:
        key = (tuple(names), own, source, frozenset(away or ()))
        if key == self._shown:
            return
        self._shown = key
        self._names, self._own, self._away = names, own, key[3]
        self._head = heading(len(names), own, source)
        self.virtual_size = Size(0, len(self._head) + len(names))
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        row = round(self.scroll_y) + y
        head = self._head
        if row < len(head):
            text = head[row].copy()
            text.truncate(width, overflow="ellipsis")
        elif row - len(head) < len(self._names):
            name = self._names[row - len(head)]
            text = member_row(name, self._own, name in self._away, width)
        else:
            return Strip.blank(width, self.rich_style)
        base = self.rich_style
        strip = Strip(list(text.render(self.app.console, end="")))
        return strip.crop_extend(0, width, None).apply_style(base)
