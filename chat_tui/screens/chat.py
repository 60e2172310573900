"""The main screen: the sidebar, the active room's log, the input, the members panel and the
status line; the keys that work while you type; and the chrome, redrawn from the models.

The screen shows what the controller (``controller.py``) and its rooms hold and hands it what
the user does; it decides nothing about rooms itself. Data flows one way: each room's
connection wakes the app with one ``EventsWaiting`` when its queue stops being empty, the
controller applies the queue to the room's model, and the widgets observe the models: the
message log syncs once with the shown scrollback after each burst of changes, and the chrome
(sidebar, status line, members panel, terminal title) is redrawn once after each burst of
changes to any room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from chat_tui import commands, grep
from chat_tui.controller import ChatController
from chat_tui.grep import Hit
from chat_tui.messages import (
    EventsWaiting,
    LineSubmitted,
    LinkClicked,
    QuitAsked,
    RoomSelected,
    SearchChanged,
    SearchClosed,
    SearchStep,
    UnreadChanged,
)
from chat_tui.rooms import DOWN, Room, RoomState, countdown, typing_text
from chat_tui.screens.grep import GrepScreen
from chat_tui.screens.help import HelpScreen
from chat_tui.screens.switcher import SwitcherScreen
from chat_tui.scrollback import Entry, EntryKind
from chat_tui.text_layout import display_line
from chat_tui.widgets import status_line as status
from chat_tui.widgets.chat_input import ChatInput
from chat_tui.widgets.members import MembersPanel
from chat_tui.widgets.message_log import MessageLog
from chat_tui.widgets.search_bar import SearchBar
from chat_tui.widgets.sidebar import RoomInfo, RoomList
from chat_tui.widgets.status_line import StatusLine

# Below this many columns the sidebar shows only room numbers and marks (ctrl+b toggles).
SIDEBAR_COLLAPSE_BELOW = 100
# Below this many columns the members panel is hidden (f2 toggles).
MEMBERS_HIDE_BELOW = 120
# Below this the panel is not shown even when asked for: it would leave the log some 20
# columns (a new user's 80-column window, f2, then narrowed to 60: every line wrapped thrice).
MEMBERS_NEVER_BELOW = 72
# No freezing of the heap in a flood (gc.freeze every 2,000 events, as there was): a room's
# older entries are packed (chat_tui/scrollback.py), not objects the collector walks, so a
# freeze no longer shortened the collections measurably, and what it kept from them (the
# rows alive at each freeze, reference cycles once they die) cost 1-2 MiB after a flood.
# The startup heap is still frozen (ChatApp.on_mount).


class ChatScreen(Screen[None]):
    # priority=True: these must work while the input box has focus (it would eat some of them).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+k", "switcher", "Switch room", priority=True),
        Binding("alt+a", "next_unread", "Next unread", priority=True),
        Binding("ctrl+f", "search", "Search", priority=True),
        Binding("ctrl+g", "grep", "Search all", show=False, priority=True),
        Binding("f2", "toggle_members", "Members"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar", show=False, priority=True),
        Binding("ctrl+r", "reconnect", "Reconnect", show=False, priority=True),
        Binding("alt+j", "toggle_joins", "Joins", show=False, priority=True),
        Binding("alt+down", "cycle_room(1)", "Next room", show=False, priority=True),
        Binding("alt+up", "cycle_room(-1)", "Previous room", show=False, priority=True),
        *[
            Binding(f"alt+{n}", f"goto_room({n})", f"Room {n}", show=False, priority=True)
            for n in range(1, 10)
        ],
        Binding("pageup", "scroll_log(-1)", "Scroll up", show=False, priority=True),
        Binding("pagedown", "scroll_log(1)", "Scroll down", show=False, priority=True),
        # end: only while scrolled up, otherwise it moves the input's cursor as usual.
        Binding("end", "log_bottom(True)", "Newest", show=False, priority=True),
        Binding("escape", "log_bottom(False)", "Newest", show=False),
        # Reached when the input has no selection (it copies its own): see action_interrupt.
        Binding("ctrl+c", "interrupt", "Copy, clear or quit", show=False),
    ]

    def __init__(self, controller: ChatController) -> None:
        super().__init__()
        self.controller = controller
        config = controller.config
        self._chrome_due = False
        self._unread = -1  # last said to the app (none yet: the title is written at once)
        self._sidebar_choice: bool | None = None  # collapsed, as the user chose with ctrl+b
        self._members_choice: bool | None = None  # shown, as the user chose with f2
        self._watched: dict[Room, Callable[[], None]] = {}  # room -> stop observing it
        self._search_at: Entry | None = None  # the match a search opened from ctrl+g starts at
        self._status = StatusLine(id="status")
        self._topic = Static("", id="topic", markup=False)
        self._topic_shown: str | None = None  # the topic self._topic shows
        self._sidebar = RoomList(id="sidebar")
        self._members = MembersPanel(id="members")
        # The "N new messages" bar (#unseen, one row) sits below the log, taking a row.
        self.log_view = MessageLog(
            time_format=config.time_format, own_name=self._me, count_bar_rows=1, id="log"
        )
        # The input keeps the focus: keys scroll the log, clicks must not steal focus.
        self.log_view.can_focus = False
        self._unseen = Static("", id="unseen", markup=False)
        self.search_bar = SearchBar(id="search")
        self.input_box = ChatInput(placeholder="Message, or /help", id="input")
        self.search_bar.typing_target = self.input_box

    def compose(self) -> ComposeResult:
        yield self._status
        yield self._topic
        with Horizontal(id="main"):
            yield self._sidebar
            with Vertical(id="chat"):
                yield self.log_view
                yield self._unseen
                yield self.search_bar
                yield self.input_box
            yield self._members
        yield Footer()

    def _me(self) -> str | None:
        current = self.controller.current
        return current.me if current is not None else None

    def on_mount(self) -> None:
        self.search_bar.display = False
        self.watch(self.log_view, "unseen", self._show_unseen, init=False)
        controller = self.controller
        controller.on_activate = self._activated
        controller.subscribe(self._rooms_changed)
        self._rooms_changed()
        if controller.current is not None:
            self._activated(None, controller.current)
        self._fit_layout(self.app.size.width)
        self._refresh_chrome()  # the rooms' lines mount with the screen, before any news
        self.input_box.focus()
        # The countdown to the next attempt is shown live; it decides nothing.
        self.set_interval(1.0, self._tick, name="countdown")

    def action_interrupt(self) -> None:
        """ctrl+c as a shell has it: copy what is selected in the log; else clear the line
        being typed (up brings it back); else quit (the app's)."""
        selected = self.get_selected_text()
        if selected:
            self.app.copy_to_clipboard(selected)
            return
        box = self.input_box
        if box.value:
            box.remember(box.message)
            box.value = ""
            return
        raise SkipAction()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_layout(event.size.width)

    def _fit_layout(self, width: int) -> None:
        """Narrow terminals: the sidebar collapses and the members panel hides."""
        collapsed = self._sidebar_choice
        if collapsed is None:
            collapsed = width < SIDEBAR_COLLAPSE_BELOW
        self._sidebar.set_class(collapsed, "-collapsed")
        members = self._members_choice
        if members is None:
            members = self.controller.config.members and width >= MEMBERS_HIDE_BELOW
        self._members.display = members and width >= MEMBERS_NEVER_BELOW
        self._schedule_chrome()

    # --- following the controller --------------------------------------------------------------

    def _rooms_changed(self) -> None:
        """Rooms joined or left: observe exactly the joined ones."""
        rooms = set(self.controller.rooms.values())
        for room in list(self._watched):
            if room not in rooms:
                self._watched.pop(room)()
        for room in rooms:
            if room not in self._watched:
                self._watched[room] = room.subscribe(self._schedule_chrome)
        self._schedule_chrome()

    def _activated(self, old: Room | None, room: Room) -> None:
        """Another room is shown: its log, its draft and its lines sent."""
        chat_input = self.input_box
        if old is not None and old is not room:
            if self.controller.rooms.get(old.name) is old:
                old.draft = chat_input.value
                old.cursor = chat_input.cursor_position
            else:
                # A room left: its draft must not follow us into the next one.
                chat_input.value = ""
        if self.search_bar.display:
            self._close_search()
        self.log_view.show(room.scrollback)
        if old is not room:
            chat_input.load(room.sent_lines, room.draft, room.cursor)
        chat_input.completions = room.completions
        self._show_unseen(self.log_view.unseen)
        self._schedule_chrome()

    @on(EventsWaiting)
    def _events_waiting(self, event: EventsWaiting) -> None:
        self.controller.drain(event.room)

    # --- chrome: status line, sidebar, members panel, title -----------------------------------

    def _schedule_chrome(self) -> None:
        """A room changed: redraw the chrome once, after whatever is changing it now."""
        if not self._chrome_due:
            self._chrome_due = True
            self.call_later(self._refresh_chrome)

    def _tick(self) -> None:
        self.controller.report_read(self.log_view.following)
        self.controller.idle_check()
        rooms = self.controller.rooms.values()
        if any(room.retry_at is not None or room.lag_since is not None for room in rooms):
            self._refresh_chrome()  # the countdowns count
        elif self._status.is_attached:
            self._status.set_parts(self.status_parts())  # "is typing" goes when its time is up

    def _refresh_chrome(self) -> None:
        self._chrome_due = False
        if not self._sidebar.is_attached:
            return  # before compose, or while exiting
        controller = self.controller
        now = controller.monotonic()
        self._sidebar.set_rooms(
            [
                RoomInfo(
                    room.name,
                    room.state.value,
                    room.unread,
                    room.mentions,
                    countdown(room.retry_at - now) if room.retry_at is not None else "",
                    room.detail,
                )
                for room in map(controller.rooms.__getitem__, controller.order())
            ],
            controller.active,
        )
        self._status.set_parts(self.status_parts(now))
        current = controller.current
        topic = current.topic if current is not None else None
        if topic != self._topic_shown:
            # Only when it changed: an update asks Textual for a layout of the whole screen,
            # and the chrome is refreshed after every drain of a flood.
            self._topic_shown = topic
            # Text from the network: a Text, never markup, and one line without controls.
            self._topic.update(Text(display_line(f"topic: {topic}"), no_wrap=True) if topic else "")
            self._topic.set_class(bool(topic), "-visible")
        if current is not None and self._members.display:
            self._members.show_members(
                current.members(), current.me, current.member_source, current.away_of()
            )
        unread = sum(room.unread for room in controller.rooms.values())
        if unread != self._unread:
            self._unread = unread
            self.post_message(UnreadChanged(unread))

    def status_parts(self, now: float | None = None) -> list[tuple[str, int]]:
        """The status line's parts, in order, with their priorities."""
        controller = self.controller
        room = controller.current
        parts = [(controller.config.server, status.SERVER)]
        if room is None:
            return [*parts, ("no room", status.STATE)]
        parts.append((room.name if room.direct else f"#{room.name}", status.ROOM))
        you = f"you are {room.me}" + (" (away)" if controller.me_away else "")
        parts.append((you if room.me else "name not known yet", status.NAME))
        state = room.state.value
        now = controller.monotonic() if now is None else now
        if room.retry_at is not None:
            state += f", retrying in {countdown(room.retry_at - now)}"
        if room.lag_since is not None and room.state is RoomState.CONNECTED:
            state += f", no answer for {countdown(now - room.lag_since)} (lag)"
        parts.append((state, status.STATE))
        starting = room.state is RoomState.CONNECTING and not controller.connecting
        if room.detail and (room.state in DOWN or starting):
            parts.append((room.detail, status.DETAIL))
        if room.pending:
            parts.append((f"{len(room.pending)} pending", status.PENDING))
        typists = room.typists(now)
        if typists:
            parts.append((typing_text(typists), status.TYPING))
        return parts

    def _show_unseen(self, count: int) -> None:
        unseen = self._unseen
        if count:
            plural = "" if count == 1 else "s"
            unseen.update(f"↓ {count} new message{plural} (end or escape: jump to the newest)")
        unseen.set_class(count > 0, "-visible")

    def on_click(self, event: events.Click) -> None:
        if event.widget is not None and event.widget.id == "unseen":
            self.log_view.scroll_to_bottom()

    # --- input ------------------------------------------------------------------------------

    @on(Input.Changed, "#input")
    def _typed(self, event: Input.Changed) -> None:
        if event.value != self.input_box.loaded:  # a draft shown again is not typing
            self.controller.typed(event.value)

    @on(LineSubmitted)
    def _submitted(self, event: LineSubmitted) -> None:
        event.stop()
        chat_input = self.input_box
        # The box was emptied on enter; what is in it now was typed after enter and belongs to
        # the next message (in the room /join goes to, if that is what enter sent).
        after = chat_input.value
        chat_input.value = ""
        self.run_command(commands.parse(event.line))
        if after:
            chat_input.value += after
            chat_input.cursor_position = len(chat_input.value)

    def run_command(self, action: commands.Action) -> bool:
        """Carry out one parsed input line; False if it could not (the log says why)."""
        match action:
            case commands.Help():
                self.action_help()
            case commands.Quit():
                self.post_message(QuitAsked())
            case commands.Grep(query):
                self.action_grep(query)
            case commands.SendText():
                if not self.controller.run(action):
                    return False
                self.log_view.scroll_to_bottom()  # sending means you are back in the talk
            case _:
                # Its answer is said in the log (now, or when the server answers): to the
                # newest, or it is said out of sight with nothing to show it came.
                self.log_view.scroll_to_bottom()
                return self.controller.run(action)
        return True

    @on(LinkClicked)
    def _link_clicked(self, event: LinkClicked) -> None:
        self.controller.open_link(event.url)

    @on(RoomSelected)
    def _room_clicked(self, event: RoomSelected) -> None:
        self.controller.activate(event.room)
        self.input_box.focus()

    # --- search -----------------------------------------------------------------------------

    @on(SearchChanged)
    def _search_changed(self, event: SearchChanged) -> None:
        at, self._search_at = self._search_at, None
        self.search_bar.show_result(*self.log_view.search(event.query, at))

    @on(SearchStep)
    def _search_step(self, event: SearchStep) -> None:
        self.search_bar.show_result(*self.log_view.search_step(event.older))

    @on(SearchClosed)
    def _search_closed(self, event: SearchClosed) -> None:
        self._close_search()

    def _close_search(self) -> None:
        self.search_bar.display = False
        self.search_bar.field.value = ""
        self.log_view.end_search()
        self.input_box.focus()

    # --- actions (keys) ---------------------------------------------------------------------

    def action_cycle_room(self, step: int) -> None:
        self.controller.cycle(step)

    def action_goto_room(self, number: int) -> None:
        if not self.controller.goto(number):
            self.app.bell()

    def action_next_unread(self) -> None:
        if not self.controller.next_unread():
            self.app.bell()

    def action_scroll_log(self, direction: int) -> None:
        self.log_view.page(direction)

    def action_log_bottom(self, only_if_scrolled: bool) -> None:
        log = self.log_view
        if only_if_scrolled and log.following:
            raise SkipAction()  # let the input have its "end" key
        log.scroll_to_bottom()

    def action_search(self) -> None:
        self.search_bar.open()
        if self.search_bar.query:
            self.search_bar.show_result(*self.log_view.search(self.search_bar.query))

    # A toggle that lands on what the width would choose gives the choice back to the width:
    # the layout follows resizes again, as before the first toggle.

    def action_toggle_members(self) -> None:
        width = self.app.size.width
        if width < MEMBERS_NEVER_BELOW:
            self.controller.say(
                EntryKind.STATUS,
                f"the members panel needs {MEMBERS_NEVER_BELOW} columns (/who lists them)",
            )
            return
        shown = not self._members.display
        automatic = self.controller.config.members and width >= MEMBERS_HIDE_BELOW
        self._members_choice = None if shown == automatic else shown
        self._fit_layout(width)

    def action_toggle_sidebar(self) -> None:
        width = self.app.size.width
        collapsed = not self._sidebar.compact
        self._sidebar_choice = None if collapsed == (width < SIDEBAR_COLLAPSE_BELOW) else collapsed
        self._fit_layout(width)

    def action_toggle_joins(self) -> None:
        """Show the joins, leaves and renames the filter hides in this room, or hide them."""
        room = self.controller.current
        if room is None:
            return
        hidden = room.scrollback.hide_quiet
        room.show_quiet(hidden)
        if hidden:
            said = "showing the joins, leaves and renames the smart filter hides"
        else:
            said = "hiding the joins, leaves and renames of those who have not spoken"
        self.notify(f"{said} in {room.name} (alt+j)", timeout=3)

    def action_reconnect(self) -> None:
        self.controller.reconnect()

    def action_grep(self, query: str = "") -> None:
        """Search every room and the logs (ctrl+g, /grep TEXT)."""
        controller = self.controller

        async def search(text: str) -> list[Hit]:
            return await controller.grep(text)

        async def context(hit: Hit) -> list[str]:
            if hit.path is None or hit.line_number is None:
                return []
            return await asyncio.to_thread(grep.context, hit.path, hit.line_number)

        def chosen(result: tuple[Hit, str] | None) -> None:
            hit, found_by = result if result is not None else (None, "")
            if hit is None or hit.entry is None or hit.room not in controller.rooms:
                self.set_focus(self.input_box)
                return
            # The room's own search (ctrl+f) for the query, at the chosen match, stepping
            # through the matches as after enter in it: n / N step, typing goes to the box.
            controller.activate(hit.room)
            self._search_at = hit.entry
            self.search_bar.open(stepping=True)
            self.search_bar.field.value = found_by

        self.app.push_screen(GrepScreen(query, search, context, chosen))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_switcher(self) -> None:
        def chosen(room: str | None) -> None:
            if room:
                self.controller.join(room)
            self.input_box.focus()

        self.app.push_screen(
            SwitcherScreen(self.controller.order(), self.controller.active, chosen)
        )
