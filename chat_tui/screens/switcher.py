"""The quick switcher (ctrl+k): filter the joined rooms as you type, or join a new one."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from chat_protocol import names

JOIN_PREFIX = "join:"
ROOM_PREFIX = "room:"


def filter_rooms(rooms: list[str], query: str) -> list[str]:
    """Joined rooms matching ``query`` (case-insensitive): prefix matches first, then others."""
    q = query.strip().lower()
    if not q:
        return list(rooms)
    prefix = [r for r in rooms if r.lower().startswith(q)]
    inside = [r for r in rooms if q in r.lower() and r not in prefix]
    return prefix + inside


def move_highlight(options: OptionList, step: int) -> None:
    """Up and down in a list whose input keeps the focus: round from the last to the first."""
    if options.option_count:
        current = options.highlighted if options.highlighted is not None else -1
        options.highlighted = (current + step) % options.option_count


class SwitcherScreen(ModalScreen[str | None]):
    """Dismisses with the chosen room name (joined or to join), or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
    ]

    def __init__(self, rooms: list[str], active: str | None) -> None:
        super().__init__()
        self.rooms = list(rooms)
        self.active = active

    def compose(self) -> ComposeResult:
        with Vertical(id="switcher"):
            yield Static("Switch to a room, or type a new name to join it", id="switcher-title")
            yield Input(placeholder="room name", id="switcher-input")
            yield OptionList(id="switcher-options")
            yield Static("", id="switcher-error", markup=False)
        # Its own keys at the bottom: the main screen's do not work while it is open.
        yield Footer()

    def on_mount(self) -> None:
        self._refresh_options("")
        self.query_one("#switcher-options", OptionList).can_focus = False
        self.query_one("#switcher-input", Input).focus()

    @on(Input.Changed, "#switcher-input")
    def _changed(self, event: Input.Changed) -> None:
        self._refresh_options(event.value)

    def _refresh_options(self, query: str) -> None:
        options = self.query_one("#switcher-options", OptionList)
        error = self.query_one("#switcher-error", Static)
        name = query.strip()
        matches = filter_rooms(self.rooms, name)
        items: list[Option] = []
        for room in matches:
            label = Text(room)
            if room == self.active:
                label.append("  (active)", style="dim")
            items.append(Option(label, id=ROOM_PREFIX + room))
        problem = ""
        if name and name not in self.rooms:
            if names.is_valid_room(name):
                items.append(Option(Text(f"join {name}", style="bold"), id=JOIN_PREFIX + name))
            else:
                problem = f"{name!r} cannot be joined: {names.ROOM_RULE}"
        options.set_options(items)
        if items:
            options.highlighted = 0
        error.update(problem)
        error.set_class(bool(problem), "-visible")

    def action_move(self, step: int) -> None:
        move_highlight(self.query_one("#switcher-options", OptionList), step)

    @on(Input.Submitted, "#switcher-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        options = self.query_one("#switcher-options", OptionList)
        if options.highlighted is None or not options.option_count:
            name = event.value.strip()
            if not name:
                self.dismiss(None)
            # Otherwise the error line already says why nothing can be chosen.
            return
        self._choose(options.get_option_at_index(options.highlighted).id)

    @on(OptionList.OptionSelected, "#switcher-options")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose(event.option.id)

    def _choose(self, option_id: str | None) -> None:
        if option_id is None:
            return
        _, _, room = option_id.partition(":")
        self.dismiss(room)

    def action_cancel(self) -> None:
        self.dismiss(None)
