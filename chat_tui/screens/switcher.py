"""The quick switcher (ctrl+k): filter the joined rooms as you type, or join a new one."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol, runtime_checkable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from chat_protocol import names
from chat_tui.widgets.chat_input import InOrderInput, hand_over_keys

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


def joinable(name: str) -> bool:
    """A room name, or a conversation as the sidebar shows it ("@name")."""
    peer = names.direct_peer(name)
    return names.is_valid_room(name) if peer is None else names.is_valid_name(peer)


@runtime_checkable
class Picker(Protocol):
    """A screen that picks from a list under its field (the switcher, search everywhere)."""

    def submit(self, value: str) -> None: ...

    def action_move(self, step: int) -> None: ...


class PickerInput(InOrderInput):
    """A picker's field: enter, up and down are taken in order with the keys typed around
    them ("down down enter" in one read chose the first room)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit_field", show=False),
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def action_submit_field(self) -> None:
        screen = self.screen
        if isinstance(screen, Picker):
            screen.submit(self.value)

    def action_move(self, step: int) -> None:
        screen = self.screen
        if isinstance(screen, Picker):
            screen.action_move(step)


class SwitcherInput(PickerInput):
    """The switcher's field."""


class SwitcherScreen(ModalScreen[str | None]):
    """Dismisses with the chosen room name (joined or to join), or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self, rooms: list[str], active: str | None, on_choice: Callable[[str | None], None]
    ) -> None:
        super().__init__()
        self.rooms = list(rooms)
        self.active = active
        self._on_choice = on_choice  # called at once, before the keys that follow the enter
        self._shown_for: str | None = None  # the field's value the list shows the matches of
        self._ended = False

    def compose(self) -> ComposeResult:
        with Vertical(id="switcher"):
            yield Static("Switch to a room, or type a new name to join it", id="switcher-title")
            yield SwitcherInput(placeholder="room name", id="switcher-input")
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
        self._shown_for = query
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
            if joinable(name):
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

    def submit(self, value: str) -> None:
        """Enter, run by the field in order with the keys around it: the highlighted room if
        the list shows ``value``'s matches, else ``value``'s first match (the list is
        redrawn a message later than the keys: "gen" and enter in one burst chose from
        what "ge" matched, or nothing)."""
        options = self.query_one("#switcher-options", OptionList)
        if self._shown_for == value and options.highlighted is not None:
            chosen = options.get_option_at_index(options.highlighted).id
        else:
            name = value.strip()
            matches = filter_rooms(self.rooms, name)
            chosen = None
            if matches:
                chosen = ROOM_PREFIX + matches[0]
            elif name and joinable(name):
                chosen = JOIN_PREFIX + name
        if chosen is None:
            if not value.strip():
                self._end(None)
            # Otherwise the error line already says why nothing can be chosen.
            return
        self._choose(chosen)

    @on(OptionList.OptionSelected, "#switcher-options")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose(event.option.id)

    def _choose(self, option_id: str | None) -> None:
        if option_id is None:
            return
        _, _, room = option_id.partition(":")
        self._end(room)

    def action_cancel(self) -> None:
        self._end(None)

    def _end(self, room: str | None) -> None:
        """Go with ``room`` (or none), once: a second enter of the same burst found the screen
        gone (Textual: "Can't pop screen"). The room is taken now and the keys typed after
        the enter, still queued for this screen's field, go to the main screen in order:
        "ctrl+k gen enter hello enter" as fast as a terminal sends it says hello in gen."""
        if self._ended:
            return
        self._ended = True
        field = self.query_one("#switcher-input", SwitcherInput)
        self.dismiss(room)
        self._on_choice(room)
        screen = self.app.screen
        hand_over_keys(field, screen.focused or screen)
