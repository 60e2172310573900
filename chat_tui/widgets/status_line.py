"""The status line: parts with priorities, so that a narrow terminal drops the least important.

The connection state has the highest priority and is never the part that is cut off.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from chat_tui.text_layout import display_line, fit_parts

# Priorities: 0 is kept longest.
STATE, ROOM, PENDING, TYPING, DETAIL, NAME, SERVER = range(7)


class StatusLine(Widget):
    """One row; the app calls :meth:`set_parts` with (text, priority) pairs in display order."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._parts: tuple[tuple[str, int], ...] = ()

    @property
    def parts(self) -> tuple[tuple[str, int], ...]:
        return self._parts

    def set_parts(self, parts: list[tuple[str, int]]) -> None:
        safe = tuple((display_line(text), priority) for text, priority in parts)
        if safe != self._parts:
            self._parts = safe
            self.refresh()

    def render(self) -> Text:
        return Text(fit_parts(self._parts, self.content_size.width), no_wrap=True)
