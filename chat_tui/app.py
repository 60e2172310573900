"""The chat client's Textual app: rooms, keys, commands; the glue between connections and widgets.

Data flows one way. Each room's :class:`RoomConnection` appends what happens to its own ordered
queue and wakes the app with one :class:`ChatApp.EventsWaiting` when the queue stops being
empty; the app takes the queue in one go and applies it to the room's model
(:class:`~chat_tui.rooms.Room`). The widgets observe the models: the message log syncs once
with the shown scrollback after each burst of changes, and the chrome (sidebar, status line,
members panel, terminal title) is redrawn once after each burst of changes to any room.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import httpx
from textual import events, on, work
from textual._ansi_sequences import ANSI_SEQUENCES_KEYS
from textual.actions import SkipAction
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from chat_protocol import names, text
from chat_protocol.frames import Frame
from chat_tui import autostart, commands
from chat_tui.config import Config
from chat_tui.connection import (
    Acked,
    ConnectionState,
    Echo,
    NameAssigned,
    Refused,
    RoomConnection,
    StateChanged,
    Welcomed,
)
from chat_tui.identity import Identity, TokenStore
from chat_tui.rooms import Room, countdown
from chat_tui.screens.help import HelpScreen
from chat_tui.screens.switcher import SwitcherScreen
from chat_tui.scrollback import EntryKind
from chat_tui.widgets import status_line as status
from chat_tui.widgets.chat_input import ChatInput
from chat_tui.widgets.members import MembersPanel
from chat_tui.widgets.message_log import MessageLog
from chat_tui.widgets.search_bar import SearchBar
from chat_tui.widgets.sidebar import RoomInfo, RoomList
from chat_tui.widgets.status_line import StatusLine

# Builds the connection of one room from (server URL, room, wake); tests may pass their own.
ConnectionFactory = Callable[[str, str, Callable[[], object]], RoomConnection]

# Below this many columns the sidebar shows only room numbers and marks (ctrl+b toggles).
SIDEBAR_COLLAPSE_BELOW = 100
# Below this many columns the members panel is hidden (f2 toggles).
MEMBERS_HIDE_BELOW = 120
# Events applied per turn: a flood is taken in slices, so that keys typed meanwhile (which
# wait in the same queue) are handled between two slices.
DRAIN_LIMIT = 500
APP_NAME = "chat"
# ctrl+q with messages not yet acknowledged by a connected room: how long to wait for them.
QUIT_WAIT = 3.0


def route_alt_digits() -> None:
    """Make ESC+digit arrive as alt+digit, so that alt+1 … alt+9 reach their bindings.

    xterm-like terminals and tmux send alt+2 as ESC "2". Textual maps ESC+digit to the
    characters macOS types for Option+digit ("™" for ESC "2", for WezTerm's sake), so without
    this the keys would never be seen as alt+N. Dropping those entries from its table lets the
    parser's generic ESC-prefix rule produce "alt+2". Idempotent; affects only this process.
    """
    for digit in "0123456789":
        ANSI_SEQUENCES_KEYS.pop("\x1b" + digit, None)


def title_text(unread: int) -> str:
    return f"({unread}) {APP_NAME}" if unread else APP_NAME


@dataclass(eq=False)
class _Link:
    """A room's connection and the worker running it."""

    connection: RoomConnection
    worker: Worker[None] | None = None


class ChatApp(App[None]):
    """The full-screen chat client."""

    CSS_PATH = "app.tcss"
    TITLE = APP_NAME
    ENABLE_COMMAND_PALETTE = False

    # priority=True: these must work while the input box has focus (it would eat some of them).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+k", "switcher", "Switch room", priority=True),
        Binding("alt+a", "next_unread", "Next unread", priority=True),
        Binding("ctrl+f", "search", "Search", priority=True),
        Binding("f2", "toggle_members", "Members"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar", show=False, priority=True),
        Binding("ctrl+r", "reconnect", "Reconnect", show=False, priority=True),
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
        # Reached only when nothing is selected: the input and the screen copy a selection.
        Binding("ctrl+c", "quit", "Quit", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    # Actions that belong to the main screen: not while the help or switcher is open.
    _MAIN_SCREEN_ACTIONS: ClassVar[frozenset[str]] = frozenset(
        {
            "switcher",
            "next_unread",
            "cycle_room",
            "goto_room",
            "scroll_log",
            "log_bottom",
            "search",
            "toggle_members",
            "toggle_sidebar",
            "reconnect",
        }
    )

    class EventsWaiting(Message):
        """The connection of ``room`` has events queued (posted once per empty -> non-empty)."""

        def __init__(self, room: str, connection: RoomConnection) -> None:
            super().__init__()
            self.room = room
            self.connection = connection

    class ServerStarting(Message):
        """No server answers and one is being started."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class StartupDone(Message):
        """Startup checks are over: connect the rooms."""

        def __init__(self, result: autostart.StartResult | None) -> None:
            super().__init__()
            self.result = result

    class ServerRestarted(Message):
        """The server we had started was gone and has been started again (or could not be)."""

        def __init__(self, result: autostart.StartResult) -> None:
            super().__init__()
            self.result = result

    class CommandOutput(Message):
        """The answer of an HTTP look-up (/rooms, /who) for ``room``'s log."""

        def __init__(self, room: str, text: str) -> None:
            super().__init__()
            self.room = room
            self.text = text

    class MembersListed(Message):
        """The server's member list of ``room`` (None: it has none), asked at ``asked_at``."""

        def __init__(self, room: str, names: list[str] | None, asked_at: int) -> None:
            super().__init__()
            self.room = room
            self.names = names
            self.asked_at = asked_at

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
        connection_factory: ConnectionFactory | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        token_store: TokenStore | None = None,
    ) -> None:
        super().__init__()
        route_alt_digits()
        self.config = config
        # One name in every room and across reconnects (and restarts, with keep_name).
        store = token_store
        # Another chat-tui of this user runs already: the kept name is its (see acquire).
        self.name_in_use = store is not None and config.keep_name and not store.acquire()
        if store is not None and not config.keep_name:
            store.forget(config.server)
        if not config.keep_name or self.name_in_use:
            store = None
        self.identity = Identity.kept(config.server, store)
        # The wall clock for times shown, and the monotonic one for countdowns (tests fix both).
        self.clock: Callable[[], datetime] = clock or datetime.now
        self.monotonic: Callable[[], float] = monotonic or time.monotonic
        self._http_transport = http_transport  # for the HTTP look-ups; tests may pass their own
        self._connection_factory = connection_factory or (
            lambda url, room, wake: RoomConnection(
                url, room, wake, history=config.history, identity=self.identity
            )
        )
        self._quit_asked = False  # ctrl+q once with messages not sent: the next one quits
        self.rooms: dict[str, Room] = {}
        self._links: dict[str, _Link] = {}
        self.active: str | None = None
        self._connecting = False  # True once startup is done: new rooms connect at once
        self._quitting = False
        self._autostarted = False  # we started the local server (so we start it again)
        self._restarting = False
        self._chrome_due = False
        self._sidebar_choice: bool | None = None  # collapsed, as the user chose with ctrl+b
        self._members_choice: bool | None = None  # shown, as the user chose with f2
        self.terminal_title = title_text(0)
        self._title_written: str | None = None
        self.bells = 0  # mention bells rung (for tests: headless apps write nothing)
        # Kept, not queried: while a modal screen is open, queries search that screen.
        self._status = StatusLine(id="status")
        self._sidebar = RoomList(id="sidebar")
        self._members = MembersPanel(id="members")
        self.log_view = MessageLog(
            time_format=config.time_format, own_name=self._own_name, id="log"
        )
        # The input keeps the focus: keys scroll the log, clicks must not steal focus.
        self.log_view.can_focus = False
        self._unseen = Static("", id="unseen", markup=False)
        self.search_bar = SearchBar(id="search")
        self.input_box = ChatInput(placeholder="Message, or /help", id="input")

    # --- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self._status
        with Horizontal(id="main"):
            yield self._sidebar
            with Vertical(id="chat"):
                yield self.log_view
                yield self._unseen
                yield self.search_bar
                yield self.input_box
            yield self._members
        yield Footer()

    @property
    def current(self) -> Room | None:
        return self.rooms.get(self.active) if self.active is not None else None

    @property
    def connections(self) -> dict[str, RoomConnection]:
        return {room: link.connection for room, link in self._links.items()}

    def _own_name(self) -> str | None:
        current = self.current
        return current.name if current is not None else None

    def on_mount(self) -> None:
        # Everything alive now (modules, Textual, the widgets) lives as long as the app: out of
        # the garbage collector's sight, so that its full collections, which come more often as
        # scrollback grows, scan only what came after (they took 60+ ms with all of it).
        gc.freeze()
        self.search_bar.display = False
        self.watch(self.log_view, "unseen", self._show_unseen, init=False)
        for room in self.config.rooms:
            self._add_room(room)
        if self.config.rooms:
            self._activate(self.config.rooms[0])
        if self.config.theme in self.available_themes:
            self.theme = self.config.theme
        else:
            self._local(EntryKind.ERROR, f"unknown theme {self.config.theme!r}; using the default")
        if self.name_in_use:
            self._local(
                EntryKind.STATUS,
                "another chat-tui of yours is running and keeps your name; this one gets a "
                "name of its own",
            )
        self._fit_layout(self.size.width)
        self.input_box.focus()
        # The countdown to the next attempt is shown live; it decides nothing.
        self.set_interval(1.0, self._tick, name="countdown")
        self._startup()

    def on_unmount(self) -> None:
        # Back under the collector, so that an app that is gone can be collected (tests run
        # many apps in one process).
        gc.unfreeze()
        if self._title_written is not None:
            self._write_terminal("\x1b[23;0t")  # the title the terminal had before

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
            members = self.config.members and width >= MEMBERS_HIDE_BELOW
        self._members.display = members
        self._schedule_chrome()

    # --- startup and the local server -------------------------------------------------------

    @work(group="startup", exit_on_error=False)
    async def _startup(self) -> None:
        server = self.config.server
        result: autostart.StartResult | None = None
        if (
            self.config.autostart
            and autostart.is_local(server)
            and not await autostart.server_reachable(server)
        ):
            self.post_message(
                self.ServerStarting(f"no chat server answers at {server}; starting one")
            )
            result = await asyncio.to_thread(autostart.start_local_server, server)
        self.post_message(self.StartupDone(result))

    @on(ServerStarting)
    def _server_starting(self, event: ServerStarting) -> None:
        for room in self.rooms.values():
            room.detail = "starting a local server"
            room.changed()
        self._local(EntryKind.STATUS, event.text)

    @on(StartupDone)
    def _startup_done(self, event: StartupDone) -> None:
        if self._connecting:
            return
        if event.result is not None:
            self._autostarted = event.result.started
            kind = EntryKind.ERROR if event.result.failed else EntryKind.STATUS
            self._local(kind, event.result.message)
        self._connecting = True
        for room in self.rooms.values():
            self._connect(room)

    @work(group="autostart", exclusive=True, exit_on_error=False)
    async def _start_server_again(self) -> None:
        server = self.config.server
        if await autostart.server_reachable(server):
            return  # someone else started one meanwhile; the rooms find it themselves
        self.post_message(
            self.ServerStarting(f"the chat server at {server} is gone; starting it again")
        )
        self.post_message(
            self.ServerRestarted(await asyncio.to_thread(autostart.start_local_server, server))
        )

    @on(ServerRestarted)
    def _server_restarted(self, event: ServerRestarted) -> None:
        self._restarting = False
        kind = EntryKind.ERROR if event.result.failed else EntryKind.STATUS
        self._local(kind, event.result.message)
        self.action_reconnect(quiet=True)

    def _server_gone(self) -> None:
        """Nothing answers where the server we started was: start it again, once at a time."""
        if (
            self._autostarted
            and self.config.autostart
            and autostart.is_local(self.config.server)
            and not self._restarting
            and not self._quitting
        ):
            self._restarting = True
            self._start_server_again()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state is WorkerState.SUCCESS and worker.group == "autostart":
            self._restarting = False  # it found a server answering
            return
        if event.state is not WorkerState.ERROR:
            return
        if worker.group == "startup":
            # Autostart failing must not keep the rooms from connecting (and retrying).
            self._local(EntryKind.ERROR, f"could not start a local server: {worker.error}")
            self.post_message(self.StartupDone(None))
            return
        if worker.group == "autostart":
            self._restarting = False
            self._local(EntryKind.ERROR, f"could not start the server again: {worker.error}")
            return
        for name, link in self._links.items():
            if link.worker is worker:
                self.rooms[name].local(
                    EntryKind.ERROR, f"connection stopped: {worker.error!r}", self.clock()
                )

    # --- rooms ------------------------------------------------------------------------------

    def _add_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is not None:
            return room
        room = Room(name, self.config.scrollback)
        connection: RoomConnection | None = None

        def wake() -> None:
            if connection is not None:
                self.post_message(self.EventsWaiting(name, connection))

        connection = self._connection_factory(self.config.server, name, wake)
        self.rooms[name] = room
        self._links[name] = _Link(connection)
        room.subscribe(self._schedule_chrome)
        if self._connecting:
            self._connect(room)
        self._schedule_chrome()
        return room

    def _connect(self, room: Room) -> None:
        link = self._links[room.room]
        # One worker per room, exclusive within the room's own group: a restart replaces it.
        link.worker = self.run_worker(
            link.connection.run(),
            name=f"room {room.room}",
            group=f"rooms/{room.room}",
            exclusive=True,
            exit_on_error=False,
        )

    def _activate(self, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        old = self.current
        chat_input = self.input_box
        if old is not None and old is not room:
            old.draft = chat_input.value
            old.cursor = chat_input.cursor_position
            old.look_away(leaving=True)
        self.active = name
        if self.search_bar.display:
            self._close_search()
        room.look()
        self.log_view.show(room.scrollback)
        if old is not room:
            chat_input.load(room.history, room.draft, room.cursor)
        chat_input.completions = room.completions
        self._show_unseen(self.log_view.unseen)
        self._schedule_chrome()

    def _leave(self, name: str) -> None:
        room = self.rooms.get(name)
        link = self._links.get(name)
        if room is None or link is None:
            return
        order = list(self.rooms)
        index = order.index(name)
        del self.rooms[name]
        del self._links[name]
        if self.active == name:
            self.active = None
            neighbour = order[index + 1] if index + 1 < len(order) else order[index - 1]
            # The left room's draft must not follow us: clear the box before loading the next.
            self.input_box.value = ""
            self._activate(neighbour)
        self.run_worker(link.connection.close(), group="closing", exit_on_error=False)
        self._local(EntryKind.STATUS, f"left {name}")
        self._schedule_chrome()

    def _room_order(self) -> list[str]:
        return list(self.rooms)

    # --- what the connections say -------------------------------------------------------------

    @on(EventsWaiting)
    def _events_waiting(self, event: EventsWaiting) -> None:
        connection = event.connection
        room = self.rooms.get(event.room)
        link = self._links.get(event.room)
        if room is None or link is None or link.connection is not connection:
            return  # a room left meanwhile: what its connection still says is dropped
        # One time for the burst: it arrived within a few milliseconds.
        now = self.clock()
        ring = False
        for item in connection.take(DRAIN_LIMIT):
            if isinstance(item, Frame):
                if room.frame(item, now) and (room.room != self.active or not self.app_focus):
                    ring = True
            elif isinstance(item, Acked):
                room.acked(item.send_id, item.text, item.offset, item.time)
            elif isinstance(item, Welcomed):
                mention = room.welcomed(item.welcome, item.backlog, item.since, now)
                if mention and (room.room != self.active or not self.app_focus):
                    ring = True
                self._fetch_members(room.room, room.presence_version)
            elif isinstance(item, Echo):
                room.echo(item.send_id, item.frame)
            elif isinstance(item, Refused):
                room.refused(item.send_id)
            elif isinstance(item, StateChanged):
                self._state_changed(room, item, now)
            elif isinstance(item, NameAssigned):
                room.name_assigned(item.name, now)
                self._fetch_members(room.room, room.presence_version)
        if connection.events:  # more than one slice: the rest after what else waits
            self.post_message(self.EventsWaiting(event.room, connection))
        if ring and self.config.bell:
            self.bells += 1
            self.bell()

    def _state_changed(self, room: Room, event: StateChanged, now: datetime) -> None:
        room.connection_changed(event.state, event.detail, event.retry_in, now, self.monotonic())
        if event.state is ConnectionState.CONNECTED:
            # The server is back: no other room of it should wait for its own next attempt.
            for other, link in self._links.items():
                if other != room.room and self.rooms[other].state is ConnectionState.OFFLINE:
                    link.connection.retry_now()
        elif event.state is ConnectionState.OFFLINE and event.unreachable:
            self._server_gone()

    @work(group="members", exit_on_error=False)
    async def _fetch_members(self, room: str, asked_at: int) -> None:
        _, names = await commands.fetch_members(
            self.config.server, room, transport=self._http_transport
        )
        self.post_message(self.MembersListed(room, names, asked_at))

    @on(MembersListed)
    def _members_listed(self, event: MembersListed) -> None:
        room = self.rooms.get(event.room)
        if room is None:
            return
        if event.names is None:
            room.members_unavailable()
        else:
            room.members_listed(event.names, event.asked_at)

    # --- the log ----------------------------------------------------------------------------

    def _local(self, kind: EntryKind, text: str) -> None:
        """A line for the user in the active room's log (command output, local errors)."""
        room = self.current
        if room is not None:
            room.local(kind, text, self.clock())

    def _show_unseen(self, count: int) -> None:
        unseen = self._unseen
        if count:
            plural = "" if count == 1 else "s"
            unseen.update(f"↓ {count} new message{plural} (end or escape: jump to the newest)")
        unseen.set_class(count > 0, "-visible")

    def on_click(self, event: events.Click) -> None:
        if event.widget is not None and event.widget.id == "unseen":
            self.log_view.scroll_to_bottom()

    # --- the terminal -----------------------------------------------------------------------

    def on_app_blur(self, event: events.AppBlur) -> None:
        room = self.current
        if room is not None:
            room.look_away(leaving=False)

    def on_app_focus(self, event: events.AppFocus) -> None:
        room = self.current
        if room is not None:
            room.look()

    def _write_terminal(self, sequence: str) -> None:
        if not self.is_headless and self._driver is not None:
            self._driver.write(sequence)

    def _set_title(self, unread: int) -> None:
        self.terminal_title = title_text(unread)
        if self.config.title and self._title_written != self.terminal_title:
            if self._title_written is None:
                self._write_terminal("\x1b[22;0t")  # keep the terminal's own title to restore
            self._title_written = self.terminal_title
            # Only digits and our own words: nothing from the network reaches the terminal.
            self._write_terminal(f"\x1b]2;{self.terminal_title}\x07")

    # --- chrome: status line, sidebar, members panel, title -----------------------------------

    def _schedule_chrome(self) -> None:
        """A room changed: redraw the chrome once, after whatever is changing it now."""
        if not self._chrome_due:
            self._chrome_due = True
            self.call_later(self._refresh_chrome)

    def _tick(self) -> None:
        if any(room.retry_at is not None for room in self.rooms.values()):
            self._refresh_chrome()

    def _refresh_chrome(self) -> None:
        self._chrome_due = False
        if not self._sidebar.is_attached:
            return  # before compose, or while exiting
        now = self.monotonic()
        self._sidebar.set_rooms(
            [
                RoomInfo(
                    room.room,
                    room.state.value,
                    room.unread,
                    room.mentions,
                    countdown(room.retry_at - now) if room.retry_at is not None else "",
                    room.detail,
                )
                for room in self.rooms.values()
            ],
            self.active,
        )
        self._status.set_parts(self.status_parts(now))
        current = self.current
        if current is not None and self._members.display:
            self._members.show_members(current.members(), current.name, current.member_source)
        self._set_title(sum(room.unread for room in self.rooms.values()))

    def status_parts(self, now: float | None = None) -> list[tuple[str, int]]:
        """The status line's parts, in order, with their priorities."""
        room = self.current
        parts = [(self.config.server, status.SERVER)]
        if room is None:
            return [*parts, ("no room", status.STATE)]
        parts.append((f"#{room.room}", status.ROOM))
        parts.append((f"you are {room.name}" if room.name else "name not known yet", status.NAME))
        state = room.state.value
        if room.retry_at is not None:
            left = room.retry_at - (self.monotonic() if now is None else now)
            state += f", retrying in {countdown(left)}"
        parts.append((state, status.STATE))
        down = room.state in (ConnectionState.OFFLINE, ConnectionState.FAILED)
        starting = room.state is ConnectionState.CONNECTING and not self._connecting
        if room.detail and (down or starting):
            parts.append((room.detail, status.DETAIL))
        if room.pending:
            parts.append((f"{len(room.pending)} pending", status.PENDING))
        return parts

    def status_text(self) -> str:
        return self._status.full_text

    # --- input ------------------------------------------------------------------------------

    @on(ChatInput.Submitted, "#input")
    def _submitted(self, event: ChatInput.Submitted) -> None:
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
        room = self.current
        match action:
            case commands.SendText(text):
                if room is not None:
                    self.send_text(room, text)
            case commands.Join(name):
                return self.join(name)
            case commands.Leave(name):
                return self._command_leave(name)
            case commands.ListRooms():
                if room is not None:
                    self._lookup_rooms(room.room)
            case commands.Who():
                if room is not None:
                    self._lookup_members(room.room)
            case commands.Clear():
                if room is not None:
                    room.clear()
            case commands.Reconnect():
                self.action_reconnect()
            case commands.Help():
                self.action_help()
            case commands.Quit():
                self.run_worker(self.action_quit(), group="quit")
            case commands.CommandError(message):
                self._local(EntryKind.ERROR, message)
                return False
        return True

    def send_text(self, room: Room, line: str) -> None:
        if text.sanitize(line) is None:
            return
        send_id = self._links[room.room].connection.send(line)
        room.sending(send_id, line, self.clock())
        self._quit_asked = False  # a new message not sent yet: ctrl+q warns again
        self.log_view.scroll_to_bottom()  # sending means you are back in the conversation

    def join(self, name: str) -> bool:
        """Join ``name`` (or switch to it); a failed room is connected again."""
        problem = names.room_problem(name)
        if problem is not None:
            self._local(EntryKind.ERROR, problem)
            return False
        room = self.rooms.get(name)
        if room is None:
            room = self._add_room(name)
        elif self._connecting and self._stopped(name):
            self._connect(room)  # it gave up (e.g. closed with 1008): try again now
        self._activate(name)
        return True

    def _stopped(self, name: str) -> bool:
        worker = self._links[name].worker
        return worker is None or worker.is_finished

    def _command_leave(self, name: str | None) -> bool:
        target = name or self.active
        if target is None or target not in self.rooms:
            self._local(EntryKind.ERROR, f"/leave: you are not in {target}")
            return False
        if len(self.rooms) == 1:
            self._local(
                EntryKind.ERROR,
                f"/leave: {target} is your only room; /join another first, or /quit",
            )
            return False
        self._leave(target)
        return True

    @work(group="http", exit_on_error=False)
    async def _lookup_rooms(self, room: str) -> None:
        text = await commands.fetch_rooms(self.config.server, transport=self._http_transport)
        self.post_message(self.CommandOutput(room, text))

    @work(group="http", exit_on_error=False)
    async def _lookup_members(self, room: str) -> None:
        asked_at = self.rooms[room].presence_version if room in self.rooms else 0
        text, names = await commands.fetch_members(
            self.config.server, room, transport=self._http_transport
        )
        self.post_message(self.MembersListed(room, names, asked_at))
        self.post_message(self.CommandOutput(room, text))

    @on(CommandOutput)
    def _command_output(self, event: CommandOutput) -> None:
        room = self.rooms.get(event.room)
        if room is not None:
            room.local(EntryKind.STATUS, event.text, self.clock())

    @on(RoomList.Selected)
    def _room_clicked(self, event: RoomList.Selected) -> None:
        self._activate(event.room)
        self.input_box.focus()

    # --- search -----------------------------------------------------------------------------

    @on(SearchBar.Changed)
    def _search_changed(self, event: SearchBar.Changed) -> None:
        self.search_bar.show_result(*self.log_view.search(event.query))

    @on(SearchBar.Step)
    def _search_step(self, event: SearchBar.Step) -> None:
        self.search_bar.show_result(*self.log_view.search_step(event.older))

    @on(SearchBar.Closed)
    def _search_closed(self, event: SearchBar.Closed) -> None:
        self._close_search()

    def _close_search(self) -> None:
        self.search_bar.display = False
        self.search_bar.field.value = ""
        self.log_view.end_search()
        self.input_box.focus()

    # --- actions (keys) ---------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While a modal screen is open, its keys win over the main screen's.
        return not (action in self._MAIN_SCREEN_ACTIONS and len(self.screen_stack) > 1)

    def action_cycle_room(self, step: int) -> None:
        order = self._room_order()
        if not order:
            return
        index = order.index(self.active) if self.active in order else 0
        self._activate(order[(index + step) % len(order)])

    def action_goto_room(self, number: int) -> None:
        order = self._room_order()
        if 1 <= number <= len(order):
            self._activate(order[number - 1])
        else:
            self.bell()

    def action_next_unread(self) -> None:
        order = self._room_order()
        if not order:
            return
        start = order.index(self.active) + 1 if self.active in order else 0
        ring = order[start:] + order[:start]
        for wanted in (lambda r: r.mentions > 0, lambda r: r.unread > 0):
            for name in ring:
                if wanted(self.rooms[name]):
                    self._activate(name)
                    return
        self.bell()

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

    def action_toggle_members(self) -> None:
        self._members_choice = not self._members.display
        self._fit_layout(self.size.width)

    def action_toggle_sidebar(self) -> None:
        self._sidebar_choice = not self._sidebar.compact
        self._fit_layout(self.size.width)

    def action_reconnect(self, quiet: bool = False) -> None:
        """Retry every offline room now (ctrl+r, /reconnect)."""
        retried = []
        for name, link in self._links.items():
            room = self.rooms[name]
            if room.state not in (ConnectionState.OFFLINE, ConnectionState.FAILED):
                continue
            if self._connecting and self._stopped(name):
                self._connect(room)
            else:
                link.connection.retry_now()
            retried.append(name)
        if quiet:
            return
        if retried:
            self._local(EntryKind.STATUS, f"reconnecting now: {', '.join(retried)}")
        else:
            self._local(EntryKind.STATUS, "every room is connected")

    def _unsent(self, connected: bool = False) -> list[int]:
        return [
            len(room.pending)
            for room in self.rooms.values()
            if room.pending and (not connected or room.state is ConnectionState.CONNECTED)
        ]

    async def _wait_for_acks(self, timeout: float) -> None:
        """Until no connected room has messages waiting for their ack, or ``timeout``."""
        settled = asyncio.Event()

        def check() -> None:
            if not any(self._unsent(connected=True)):
                settled.set()

        stops = [room.subscribe(check) for room in self.rooms.values()]
        try:
            check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), timeout)
        finally:
            for stop in stops:
                stop()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_switcher(self) -> None:
        def chosen(room: str | None) -> None:
            if room:
                self.join(room)
            self.input_box.focus()

        self.push_screen(SwitcherScreen(self._room_order(), self.active), chosen)

    async def action_quit(self) -> None:
        """Close every connection (code 1000), then exit.

        Messages not yet acknowledged are not dropped silently: quitting waits a little for
        the connected rooms' acks, and if some are still not sent, says how many and quits
        only when asked again.
        """
        if self._quitting:
            return
        if not self._quit_asked and self._unsent():
            self._quit_asked = True
            # In a worker: the acks are handled by the app's message loop meanwhile.
            self.run_worker(self._quit_once_sent(), group="quit", exit_on_error=False)
            return
        await self._close_and_exit()

    async def _quit_once_sent(self) -> None:
        if any(self._unsent(connected=True)):
            await self._wait_for_acks(QUIT_WAIT)
        unsent = sum(self._unsent())
        if unsent:
            rooms = ", ".join(room.room for room in self.rooms.values() if room.pending)
            plural, them = ("message is", "it") if unsent == 1 else ("messages are", "them")
            self._local(
                EntryKind.ERROR,
                f"{unsent} {plural} not sent yet (pending in {rooms}); "
                f"ctrl+q again quits without {them}",
            )
            return
        await self._close_and_exit()

    async def _close_and_exit(self) -> None:
        if self._quitting:
            return
        self._quitting = True
        await asyncio.gather(
            *(link.connection.close() for link in self._links.values()), return_exceptions=True
        )
        self.exit()
