"""The chat client's Textual app: rooms, keys, commands; the glue between connections and widgets.

Connections run in async workers and only post messages (``RoomConnection.*``); this app is the
one place that updates the per-room :class:`Scrollback` and the widgets in answer.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from textual import events, on, work
from textual._ansi_sequences import ANSI_SEQUENCES_KEYS
from textual.actions import SkipAction
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from chat_server import protocol
from chat_server.protocol import Frame, FrameKind
from chat_tui import autostart, commands
from chat_tui.config import Config
from chat_tui.connection import Arrival, ConnectionState, Echo, RoomConnection
from chat_tui.screens.help import HelpScreen
from chat_tui.screens.switcher import SwitcherScreen
from chat_tui.scrollback import Entry, EntryKind, Scrollback, SendState
from chat_tui.widgets.chat_input import ChatInput, from_display
from chat_tui.widgets.message_log import MessageLog
from chat_tui.widgets.sidebar import RoomInfo, RoomList

# Builds the connection of one room; tests and snapshots may pass their own.
ConnectionFactory = Callable[[str, str, Callable[[Message], object]], RoomConnection]


def mentions(name: str, text: str) -> bool:
    """Whether ``text`` names ``name`` as a word of its own (case-insensitive)."""
    return _mention_pattern(name).search(text) is not None


@functools.lru_cache(maxsize=64)
def _mention_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])", re.IGNORECASE)


def route_alt_digits() -> None:
    """Make ESC+digit arrive as alt+digit, so that alt+1 … alt+9 reach their bindings.

    xterm-like terminals and tmux send alt+2 as ESC "2". Textual maps ESC+digit to the
    characters macOS types for Option+digit ("™" for ESC "2", for WezTerm's sake), so without
    this the keys would never be seen as alt+N. Dropping those entries from its table lets the
    parser's generic ESC-prefix rule produce "alt+2". Idempotent; affects only this process.
    """
    for digit in "0123456789":
        ANSI_SEQUENCES_KEYS.pop("\x1b" + digit, None)


def format_delay(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 1 else f"{round(seconds)} s"


@dataclass(eq=False)
class RoomState:
    """Everything the app keeps about one joined room."""

    room: str
    scrollback: Scrollback
    connection: RoomConnection
    worker: Worker[None] | None = None
    state: ConnectionState = ConnectionState.CONNECTING
    detail: str = ""
    retry_in: float | None = None
    name: str | None = None
    unread: int = 0
    mentions: int = 0
    history: list[str] = field(default_factory=list)
    draft: str = ""
    cursor: int = 0
    names: dict[str, None] = field(default_factory=dict)  # ordered set of names seen here
    pending: dict[int, Entry] = field(default_factory=dict)  # local_id -> our entry
    ever_connected: bool = False
    lost: bool = False  # a "connection lost" marker is in the log; cleared on reconnect
    announce_reconnect: bool = False  # say "reconnected" once we know our new name


class ChatApp(App[None]):
    """The full-screen chat client."""

    CSS_PATH = "app.tcss"
    TITLE = "chat"
    ENABLE_COMMAND_PALETTE = False

    # priority=True: these must work while the input box has focus (it would eat some of them).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+k", "switcher", "Switch room", priority=True),
        Binding("alt+a", "next_unread", "Next unread", priority=True),
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
        {"switcher", "next_unread", "cycle_room", "goto_room", "scroll_log", "log_bottom"}
    )

    class ServerStarting(Message):
        """The startup worker found no server and is starting one."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class StartupDone(Message):
        """Startup checks are over: connect the rooms. ``text`` is what autostart said."""

        def __init__(self, text: str | None) -> None:
            super().__init__()
            self.text = text

    class CommandOutput(Message):
        """The answer of an HTTP look-up (/rooms, /who) for ``room``'s log."""

        def __init__(self, room: str, text: str, names: list[str] | None = None) -> None:
            super().__init__()
            self.room = room
            self.text = text
            self.names = names or []

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] | None = None,
        connection_factory: ConnectionFactory | None = None,
    ) -> None:
        super().__init__()
        route_alt_digits()
        self.config = config
        self.clock: Callable[[], datetime] = clock or datetime.now
        self._connection_factory = connection_factory or (
            lambda url, room, post: RoomConnection(url, room, post)
        )
        self.rooms: dict[str, RoomState] = {}
        self.active: str | None = None
        self._connecting = False  # True once startup is done: new rooms connect at once
        self._quitting = False
        # Kept, not queried: while a modal screen is open, queries search that screen.
        self._status = Static("", id="status", markup=False)
        self._sidebar = RoomList(id="sidebar")
        self.log_view = MessageLog(
            time_format=config.time_format, own_name=self._own_name, id="log"
        )
        # The input keeps the focus: keys scroll the log, clicks must not steal focus.
        self.log_view.can_focus = False
        self._unseen = Static("", id="unseen", markup=False)
        self.input_box = ChatInput(placeholder="Message, or /help", id="input")

    # --- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self._status
        with Horizontal(id="main"):
            yield self._sidebar
            with Vertical(id="chat"):
                yield self.log_view
                yield self._unseen
                yield self.input_box
        yield Footer()

    @property
    def current(self) -> RoomState | None:
        return self.rooms.get(self.active) if self.active is not None else None

    def _own_name(self) -> str | None:
        current = self.current
        return current.name if current is not None else None

    def on_mount(self) -> None:
        # Everything alive now (modules, Textual, the widgets) lives as long as the app: out of
        # the garbage collector's sight, so that its full collections, which come more often as
        # scrollback grows, scan only what came after (they took 60+ ms with all of it).
        gc.freeze()
        for room in self.config.rooms:
            self._add_room(room)
        if self.config.rooms:
            self._activate(self.config.rooms[0])
        if self.config.theme in self.available_themes:
            self.theme = self.config.theme
        else:
            self._local(EntryKind.ERROR, f"unknown theme {self.config.theme!r}; using the default")
        self.input_box.focus()
        self._startup()

    def on_unmount(self) -> None:
        # Back under the collector, so that an app that is gone can be collected (tests run
        # many apps in one process).
        gc.unfreeze()

    # --- startup ----------------------------------------------------------------------------

    @work(group="startup", exit_on_error=False)
    async def _startup(self) -> None:
        server = self.config.server
        text: str | None = None
        if (
            self.config.autostart
            and autostart.is_loopback(server)
            and not await autostart.server_reachable(server)
        ):
            self.post_message(
                self.ServerStarting(f"no chat server answers at {server}; starting one")
            )
            text = await asyncio.to_thread(autostart.start_local_server, server)
        self.post_message(self.StartupDone(text))

    @on(ServerStarting)
    def _server_starting(self, event: ServerStarting) -> None:
        for rs in self.rooms.values():
            rs.detail = "starting a local server"
        self._local(EntryKind.STATUS, event.text)
        self._refresh_chrome()

    @on(StartupDone)
    def _startup_done(self, event: StartupDone) -> None:
        if self._connecting:
            return
        if event.text:
            kind = EntryKind.ERROR if event.text.startswith("could not") else EntryKind.STATUS
            self._local(kind, event.text)
        self._connecting = True
        for rs in self.rooms.values():
            self._connect(rs)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR:
            return
        worker = event.worker
        if worker.group == "startup":
            # Autostart failing must not keep the rooms from connecting (and retrying).
            self._local(EntryKind.ERROR, f"could not start a local server: {worker.error}")
            self.post_message(self.StartupDone(None))
            return
        for rs in self.rooms.values():
            if rs.worker is worker:
                text = f"connection stopped: {worker.error!r}"
                self._append(rs, Entry(EntryKind.ERROR, text, self.clock()))

    # --- rooms ------------------------------------------------------------------------------

    def _add_room(self, room: str) -> RoomState:
        rs = self.rooms.get(room)
        if rs is not None:
            return rs

        def post(message: Message) -> None:
            # Drop what a left room's connection still says, so a rejoin starts clean.
            if self.rooms.get(room) is rs:
                self.post_message(message)

        rs = RoomState(
            room,
            Scrollback(self.config.scrollback),
            self._connection_factory(self.config.server, room, post),
        )
        self.rooms[room] = rs
        if self._connecting:
            self._connect(rs)
        self._refresh_chrome()
        return rs

    def _connect(self, rs: RoomState) -> None:
        # One worker per room, exclusive within the room's own group: a restart replaces it.
        rs.worker = self.run_worker(
            rs.connection.run(),
            name=f"room {rs.room}",
            group=f"rooms/{rs.room}",
            exclusive=True,
            exit_on_error=False,
        )

    def _activate(self, room: str) -> None:
        rs = self.rooms.get(room)
        if rs is None:
            return
        old = self.current
        chat_input = self.input_box
        if old is not None and old is not rs:
            old.draft = chat_input.value
            old.cursor = chat_input.cursor_position
        self.active = room
        rs.unread = 0
        rs.mentions = 0
        self.log_view.show(rs.scrollback)
        if old is not rs:
            chat_input.load(rs.history, rs.draft, rs.cursor)
        chat_input.names = lambda: rs.names.keys()
        self._show_unseen(self.log_view.unseen)
        self._refresh_chrome()

    def _leave(self, room: str) -> None:
        rs = self.rooms.get(room)
        if rs is None:
            return
        order = list(self.rooms)
        index = order.index(room)
        del self.rooms[room]
        if self.active == room:
            self.active = None
            neighbour = order[index + 1] if index + 1 < len(order) else order[index - 1]
            # The left room's draft must not follow us: clear the box before loading the next.
            self.input_box.value = ""
            self._activate(neighbour)
        self.run_worker(rs.connection.close(), group="closing", exit_on_error=False)
        self._local(EntryKind.STATUS, f"left {room}")
        self._refresh_chrome()

    def _room_order(self) -> list[str]:
        return list(self.rooms)

    # --- connection messages ----------------------------------------------------------------

    @on(RoomConnection.StateChanged)
    def _state_changed(self, event: RoomConnection.StateChanged) -> None:
        rs = self.rooms.get(event.room)
        if rs is None:
            return
        rs.state = event.state
        rs.detail = event.detail
        rs.retry_in = event.retry_in
        state = event.state
        if state is ConnectionState.CONNECTED:
            if rs.lost:
                rs.lost = False
                rs.announce_reconnect = True
            rs.ever_connected = True
        elif state is ConnectionState.OFFLINE:
            if not rs.lost:
                # The first failure is the gap marker; later retries only update the status.
                rs.lost = True
                what = "connection lost" if rs.ever_connected else "cannot connect"
                retry = f", retrying in {format_delay(event.retry_in)}" if event.retry_in else ""
                text = f"{what}: {event.detail}{retry}"
                self._append(rs, Entry(EntryKind.STATUS, text, self.clock()))
        elif state is ConnectionState.FAILED:
            rs.lost = True
            retry = (
                f"; trying again in {format_delay(event.retry_in)}"
                if event.retry_in
                else f"; not retrying (/join {rs.room} tries again)"
            )
            self._append(rs, Entry(EntryKind.ERROR, f"{event.detail}{retry}", self.clock()))
        self._refresh_chrome()

    @on(RoomConnection.NameAssigned)
    def _name_assigned(self, event: RoomConnection.NameAssigned) -> None:
        rs = self.rooms.get(event.room)
        if rs is None:
            return
        rs.name = event.name
        rs.names[event.name] = None
        if rs.announce_reconnect:
            rs.announce_reconnect = False
            text = f"reconnected as {event.name}"
        else:
            text = f"joined {rs.room} as {event.name}"
        self._append(rs, Entry(EntryKind.STATUS, text, self.clock()))
        if rs.room == self.active:
            self.log_view.refresh_all()  # "you" highlighting depends on the name
        self._refresh_chrome()

    @on(RoomConnection.FramesReceived)
    def _frames_received(self, event: RoomConnection.FramesReceived) -> None:
        self._take_arrivals(event.room, event.items)

    @on(RoomConnection.FrameReceived)
    def _frame_received(self, event: RoomConnection.FrameReceived) -> None:
        frame, local_id = event.frame, event.local_id
        self._take_arrivals(event.room, [frame if local_id is None else Echo(frame, local_id)])

    def _take_arrivals(self, room: str, items: list[Arrival]) -> None:
        """A burst of arrivals: taken in one go, the log and the chrome updated once."""
        rs = self.rooms.get(room)
        if rs is None:
            return
        # One time for the burst: it arrived within a few milliseconds.
        now = self.clock()
        unread = rs.unread
        appended = False
        for item in items:
            if isinstance(item, Frame):
                appended |= self._take_frame(rs, item, None, now)
            elif isinstance(item, Echo):
                appended |= self._take_frame(rs, item.frame, item.local_id, now)
            else:
                self._set_send_state(rs, item.local_id, SendState.REFUSED)
        if appended:
            self._entries_added(rs)
        if rs.unread != unread:
            self._refresh_chrome()

    def _take_frame(self, rs: RoomState, frame: Frame, local_id: int | None, now: datetime) -> bool:
        """Put one frame in the room's scrollback; True if entries were appended.

        The log is told by the caller (:meth:`_entries_added`), once for a whole batch.
        """
        appended = False
        if rs.announce_reconnect:
            # A server that does not send our join notice first: no name to show.
            rs.announce_reconnect = False
            rs.name = rs.connection.name
            rs.scrollback.append(Entry(EntryKind.STATUS, "reconnected", now))
            appended = True
        name = frame.name
        if name is not None:
            rs.names[name] = None
        kind = frame.kind
        if kind is FrameKind.MESSAGE:
            if local_id is not None:
                self._echo(rs, local_id, frame)  # the log takes in what was appended first
                return appended
            own_name = rs.name
            own = own_name is not None and name == own_name
            mention = not own and own_name is not None and mentions(own_name, frame.text)
            entry = Entry(EntryKind.MESSAGE, frame.text, now, name, own=own, mention=mention)
            rs.scrollback.append(entry)
            if rs.room != self.active:
                rs.unread += 1
                rs.mentions += mention
        elif kind is FrameKind.ERROR:
            rs.scrollback.append(Entry(EntryKind.ERROR, f"error: {frame.text}", now))
        else:
            rs.scrollback.append(Entry(EntryKind.NOTICE, frame.text, now))
        return True

    def _entry_changed(self, rs: RoomState, entry: Entry) -> None:
        if self.log_view.is_attached:
            self.log_view.entry_changed(rs.scrollback, entry)
        self._refresh_chrome()

    def _echo(self, rs: RoomState, local_id: int, frame: protocol.Frame) -> None:
        """Our own message came back: update its pending entry instead of adding another."""
        entry = rs.pending.get(local_id)
        if entry is None:
            return  # cleared from the log meanwhile (/clear)
        # What the room saw (the server sanitises) and under which name (it may have changed).
        entry.text = frame.text
        entry.sender = frame.name
        entry.state = SendState.SENT
        rs.pending.pop(local_id, None)
        self._entry_changed(rs, entry)

    @on(RoomConnection.SendStateChanged)
    def _send_state_changed(self, event: RoomConnection.SendStateChanged) -> None:
        rs = self.rooms.get(event.room)
        if rs is not None:
            self._set_send_state(rs, event.local_id, event.state)

    def _set_send_state(self, rs: RoomState, local_id: int, state: SendState) -> None:
        entry = rs.pending.get(local_id)
        if entry is None:
            return
        entry.state = state
        if state is not SendState.PENDING:
            rs.pending.pop(local_id, None)
        self._entry_changed(rs, entry)

    # --- the log ----------------------------------------------------------------------------

    def _append(self, rs: RoomState, entry: Entry) -> None:
        rs.scrollback.append(entry)
        self._entries_added(rs)

    def _entries_added(self, rs: RoomState) -> None:
        if self.log_view.is_attached:  # not while exiting
            self.log_view.entry_added(rs.scrollback)

    def _local(self, kind: EntryKind, text: str) -> None:
        """A line for the user in the active room's log (command output, local errors)."""
        rs = self.current
        if rs is not None:
            self._append(rs, Entry(kind, text, self.clock()))

    @on(MessageLog.UnseenChanged)
    def _unseen_changed(self, event: MessageLog.UnseenChanged) -> None:
        self._show_unseen(event.count)

    def _show_unseen(self, count: int) -> None:
        unseen = self._unseen
        if count:
            plural = "" if count == 1 else "s"
            unseen.update(f"↓ {count} new message{plural} (end or escape: jump to the newest)")
        unseen.set_class(count > 0, "-visible")

    def on_click(self, event: events.Click) -> None:
        if event.widget is not None and event.widget.id == "unseen":
            self.log_view.scroll_to_bottom()

    # --- chrome: status line and sidebar ----------------------------------------------------

    def _refresh_chrome(self) -> None:
        if not self._sidebar.is_attached:
            return  # before compose, or while exiting
        self._sidebar.set_rooms(
            [
                RoomInfo(rs.room, rs.state.value, rs.unread, rs.mentions)
                for rs in self.rooms.values()
            ],
            self.active,
        )
        self._status.update(self.status_text())

    def status_text(self) -> str:
        rs = self.current
        parts = [self.config.server]
        if rs is None:
            parts.append("no room")
        else:
            parts.append(f"#{rs.room}")
            parts.append(f"you are {rs.name}" if rs.name else "name not known yet")
            state = rs.state.value
            if rs.state in (ConnectionState.OFFLINE, ConnectionState.FAILED) and rs.detail:
                state += f": {rs.detail}"
            elif rs.state is ConnectionState.CONNECTING and rs.detail and not self._connecting:
                state += f" ({rs.detail})"
            parts.append(state)
            pending = len(rs.pending)
            if pending:
                parts.append(f"{pending} pending")
        return " │ ".join(parts)

    # --- input ------------------------------------------------------------------------------

    @on(ChatInput.Submitted, "#input")
    def _submitted(self, event: ChatInput.Submitted) -> None:
        event.stop()
        chat_input = self.input_box
        # event.value, not the box: keys typed after enter may already be in it (they reach
        # the input before this message bubbles up here) and belong to the next message.
        submitted = event.value
        line = from_display(submitted)
        if not line.strip():
            return
        action = commands.parse(line)
        if isinstance(action, commands.CommandError):
            # Keep the text in the box so that nothing typed is lost; the log says why.
            self._local(EntryKind.ERROR, action.message)
            return
        shown = chat_input.value
        after = shown[len(submitted) :] if shown.startswith(submitted) else shown
        # Cleared first: /join saves the box as the old room's draft when it switches.
        chat_input.value = ""
        if self.run_command(action):
            chat_input.remember(line)
            restored = after
        else:
            restored = shown  # the log says why; nothing typed is lost
        if restored:
            chat_input.value = restored
            chat_input.cursor_position = len(restored)

    def run_command(self, action: commands.Action) -> bool:
        """Carry out one parsed input line; False if it could not (the log says why)."""
        rs = self.current
        match action:
            case commands.SendText(text):
                if rs is not None:
                    self.send_text(rs, text)
            case commands.Join(room):
                return self.join(room)
            case commands.Leave(room):
                return self._command_leave(room)
            case commands.ListRooms():
                if rs is not None:
                    self._lookup_rooms(rs.room)
            case commands.Who():
                if rs is not None:
                    self._lookup_members(rs.room)
            case commands.Clear():
                if rs is not None:
                    rs.scrollback.clear()
                    rs.pending.clear()
                    self.log_view.refresh_all()
            case commands.Help():
                self.action_help()
            case commands.Quit():
                self.run_worker(self.action_quit(), group="quit")
            case commands.CommandError(message):
                self._local(EntryKind.ERROR, message)
                return False
        return True

    def send_text(self, rs: RoomState, text: str) -> None:
        if protocol.sanitize(text) is None:
            return
        entry = Entry(
            EntryKind.MESSAGE, text, self.clock(), rs.name, own=True, state=SendState.PENDING
        )
        local_id = rs.connection.send(text)
        rs.pending[local_id] = entry
        self._append(rs, entry)
        self.log_view.scroll_to_bottom()  # sending means you are back in the conversation
        self._refresh_chrome()

    def join(self, room: str) -> bool:
        """Join ``room`` (or switch to it); a failed room is connected again."""
        if not protocol.is_valid_room(room):
            self._local(EntryKind.ERROR, f"invalid room name {room!r}: {protocol.ROOM_RULE}")
            return False
        rs = self.rooms.get(room)
        if rs is None:
            rs = self._add_room(room)
        elif self._connecting and (rs.worker is None or rs.worker.is_finished):
            self._connect(rs)  # it gave up (e.g. closed with 1008): try again now
        self._activate(room)
        return True

    def _command_leave(self, room: str | None) -> bool:
        target = room or self.active
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
        text = await commands.fetch_rooms(self.config.server)
        self.post_message(self.CommandOutput(room, text))

    @work(group="http", exit_on_error=False)
    async def _lookup_members(self, room: str) -> None:
        text, names = await commands.fetch_members(self.config.server, room)
        self.post_message(self.CommandOutput(room, text, names))

    @on(CommandOutput)
    def _command_output(self, event: CommandOutput) -> None:
        rs = self.rooms.get(event.room)
        if rs is None:
            return
        for name in event.names:
            rs.names[name] = None
        self._append(rs, Entry(EntryKind.STATUS, event.text, self.clock()))

    @on(RoomList.Selected)
    def _room_clicked(self, event: RoomList.Selected) -> None:
        self._activate(event.room)
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
        for wanted in (lambda rs: rs.mentions > 0, lambda rs: rs.unread > 0):
            for room in ring:
                if wanted(self.rooms[room]):
                    self._activate(room)
                    return
        self.bell()

    def action_scroll_log(self, direction: int) -> None:
        log = self.log_view
        if direction < 0:
            log.scroll_page_up(animate=False)
        else:
            log.scroll_page_down(animate=False)

    def action_log_bottom(self, only_if_scrolled: bool) -> None:
        log = self.log_view
        if only_if_scrolled and log.at_bottom:
            raise SkipAction()  # let the input have its "end" key
        log.scroll_to_bottom()

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
        """Close every connection (code 1000), then exit."""
        if self._quitting:
            return
        self._quitting = True
        await asyncio.gather(
            *(rs.connection.close() for rs in self.rooms.values()), return_exceptions=True
        )
        self.exit()
