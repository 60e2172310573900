"""The members panel (f2): who is in the active room, our own name first and marked."""

from __future__ import annotations

from typing import Final

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from chat_tui.rooms import MemberSource
from chat_tui.text_layout import display_line, sender_colour

OWN_MARK: Final = "(you)"
AWAY_MARK: Final = "(away)"


def members_text(
    names: list[str], own: str | None, source: MemberSource, away: dict[str, str] | None = None
) -> Text:
    """The panel's content: a heading that says where the list comes from, then the names
    (those away marked, dimmed)."""
    if source is MemberSource.SEEN:
        heading = f"seen here ({len(names)})"
        note = "(no list from server)"
    elif source is MemberSource.CONVERSATION:
        heading, note = "conversation", ""
    else:
        heading = f"members ({len(names)})"
        # Unknown: asked for once we are in the room (our name known), not before.
        waiting = "asking the server…" if own is not None else "not in the room yet"
        note = waiting if source is MemberSource.UNKNOWN else ""
    text = Text(heading, style="bold")
    if note:
        text.append(f"\n{note}", style="dim italic")
    for name in names:
        shown = display_line(name)
        text.append("\n")
        if name == own:
            text.append(shown, style=f"bold {sender_colour(name)}")
            text.append(f" {OWN_MARK}", style="dim")
        else:
            text.append(
                shown, style=sender_colour(name) + (" dim" if away and name in away else "")
            )
        if away and name in away:
            text.append(f" {AWAY_MARK}", style="dim italic")
    return text


class MembersPanel(VerticalScroll, can_focus=False):
    """The active room's members; the app calls :meth:`show_members` when they change."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._content = Static("", id="members-text", markup=False)
        self._shown: tuple[tuple[str, ...], str | None, MemberSource, tuple[str, ...]] | None = None

    def compose(self) -> ComposeResult:
        yield self._content

    def show_members(
        self,
        names: list[str],
        own: str | None,
        source: MemberSource,
        away: dict[str, str] | None = None,
    ) -> None:
        key = (tuple(names), own, source, tuple(sorted(away or ())))
        if key != self._shown:
            self._shown = key
            self._content.update(members_text(names, own, source, away))
