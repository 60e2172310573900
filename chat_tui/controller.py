"""The client's rooms and what happens to them: joins and leaves, what the connections report,
the commands, and the policies that span rooms. No Textual here.

The controller owns the room models (``rooms.py``) and one connection per room
(``connection.py``), each run as a background job. It runs in a :class:`Host`: the Textual
app, or a test. The host gives it jobs (``spawn``), wakes it when a connection has events
waiting (``wake``, so that they are applied in the host's own loop, between keys), and
notifies (``alert``) of mentions out of sight. The screen observes the controller (rooms
joined or left, the active room) and the rooms (everything else); it never changes a room
itself.

Policies kept here, where they are tested without a screen:

* a room's connection coming back retries every other offline room of the server at once;
* the local server we started, found gone, is started again (once at a time);
* quitting with messages not yet acknowledged waits for the connected rooms' acks, then says
  how many are still not sent, and quits only when asked again;
* a mention in a room out of sight (or while the terminal is unfocused) is one notification
  per burst, of its newest (the room's level and ``bell`` permitting).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from chat_protocol import admin_client, names, text
from chat_protocol.frames import Frame, FrameKind
from chat_protocol.rates import TokenBucket
from chat_protocol.v2 import TYPING_EVERY
from chat_tui import autostart, commands, grep, links
from chat_tui.config import Config, JoinFilter
from chat_tui.connection import Connection, ConnectionFactory, RoomConnection
from chat_tui.events import (
    Acked,
    ConnectionState,
    Echo,
    Lagging,
    NameAssigned,
    NameRefused,
    Refused,
    StateChanged,
    Unreadable,
    Welcomed,
)
from chat_tui.grep import Hit
from chat_tui.identity import Identity
from chat_tui.logbook import Logbook
from chat_tui.notify import Level, Notice
from chat_tui.rooms import Room, RoomState, local_time
from chat_tui.scrollback import Entry, EntryKind, Observable

# What the app says for us when we are away by idling (away_after), and how it knows it again.
IDLE_AWAY = re.compile(r"idle for \d+ minutes?")


def idle_text(minutes: int) -> str:
    return f"idle for {minutes} minute{'s' if minutes != 1 else ''}"


# Events applied per turn: a flood is taken in slices, so that keys typed meanwhile (which
# wait in the same queue) are handled between two slices.
DRAIN_LIMIT = 500
# Quitting with messages not yet acknowledged by a connected room: how long to wait for them.
QUIT_WAIT = 3.0
# Conversations a server may open by saying someone wrote to us: 10 at once, then one every 6
# s, and never past 100 open (a hostile server's 3,000 "direct" frames opened 3,000). Past
# that the user is told who wrote, at most once a minute, and opens it with /query.
SERVER_OPENS_BURST = 10
SERVER_OPENS_EVERY = 6.0
# Notifications: at most one a room in this many seconds; of all rooms, this many at once,
# then this many a second.
NOTIFY_ROOM_EVERY = 5.0
NOTIFY_BURST = 5
NOTIFY_RATE = 0.5
MAX_CONVERSATIONS = 100
NOT_OPENED_SAID_EVERY = 60.0


class Job(Protocol):
    """A background job the host runs for the controller (a Textual worker, an asyncio task)."""

    @property
    def is_finished(self) -> bool: ...

    def cancel(self) -> None: ...


class Host(Protocol):
    def spawn(self, work: Coroutine[Any, Any, None], *, group: str, exclusive: bool = False) -> Job:
        """Run ``work`` in the background (``exclusive``: replacing the group's running job)."""

    def wake(self, room: str) -> None:
        """Events wait in ``room``'s connection: call :meth:`ChatController.drain` soon."""

    def alert(self, notice: Notice) -> None:
        """A mention (or a message where the room notifies of all) the user is not looking
        at: notify as the config says."""


@dataclass(eq=False)
class RoomLink:
    """A room's connection and the job running it."""

    connection: Connection
    job: Job | None = None


class ChatController(Observable):
    """Observers are called when rooms are joined or left, or another room becomes active;
    ``on_activate(old, new)`` is called first when the active room changes."""

    def __init__(
        self,
        config: Config,
        host: Host,
        *,
        identity: Identity | None = None,
        connection_factory: ConnectionFactory | None = None,
        clock: Callable[[], datetime] = datetime.now,
        monotonic: Callable[[], float] | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        logbook: Logbook | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.host = host
        self.identity = identity or Identity(config.server)
        self.identity.token_file = config.token_file or None
        self.clock = clock
        self.monotonic: Callable[[], float] = monotonic or time.monotonic
        self._http_transport = http_transport
        self._connection_factory = connection_factory or (
            lambda url, room, wake: RoomConnection(
                url, room, wake, history=config.history, identity=self.identity
            )
        )
        self.rooms: dict[str, Room] = {}
        self.links: dict[str, RoomLink] = {}
        self.active: str | None = None
        self.focused = True  # the terminal window has the focus (as far as it says)
        self.logbook = logbook
        self.on_activate: Callable[[Room | None, Room], None] | None = None
        self.connecting = False  # True once startup is done: new rooms connect at once
        self._quitting = False
        self._quit_asked = False  # asked once with messages not sent: the next one quits
        self._autostarted = False  # we started the local server (so we start it again)
        self._restarting = False
        self._typed_at: dict[str, float] = {}  # room -> when we last said we are typing
        self._last_key = self.monotonic()  # the user's last edit of the input box
        self._idle_away = False  # we said we are away because the user was idle
        self._away_said: str | None = None  # what we said we are away with (None: not away)
        self._links_shown: dict[str, list[str]] = {}  # each room's last /links, numbered
        # When each room last notified, and the notifications of all rooms (see _alert).
        self._notified: dict[str, float] = {}
        self._notifications = TokenBucket(NOTIFY_RATE, NOTIFY_BURST, self.monotonic())
        self._server_opens = TokenBucket(
            1 / SERVER_OPENS_EVERY, SERVER_OPENS_BURST, self.monotonic()
        )
        self._not_opened: list[str] = []  # who wrote, not opened since it was last said
        self._not_opened_count = 0
        self._not_opened_said = -math.inf
        # Each applies one kind of event; notifying is after the burst (_alert), not here.
        self._apply: dict[type, Callable[[Room, Any, datetime], None]] = {
            Frame: self._frame,
            Echo: self._echo,
            Acked: self._acked,
            Refused: self._refused,
            Welcomed: self._welcomed,
            NameAssigned: self._name_assigned,
            StateChanged: self._state_changed,
            Unreadable: self._unreadable,
            NameRefused: self._name_refused,
            Lagging: self._lagging,
        }

    @property
    def current(self) -> Room | None:
        return self.rooms.get(self.active) if self.active is not None else None

    @property
    def me_away(self) -> bool:
        """Whether we are away, as the active room says; a room joined or a conversation
        opened after we said it has not heard it (the server tells the rooms we are in when it
        changes): then as the other rooms we are connected to say."""
        room = self.current
        if room is None or room.me_away:
            return room is not None
        return any(
            other.me_away
            for other in self.rooms.values()
            if other is not room and other.state is RoomState.CONNECTED
        )

    def order(self) -> list[str]:
        """The joined rooms in sidebar order: rooms, then conversations with people."""
        return sorted(self.rooms, key=lambda name: self.rooms[name].direct)

    # --- startup and the local server -------------------------------------------------------

    def start(self, rooms: list[str]) -> None:
        """Join ``rooms`` (the first is active), then look for the server (starting a local
        one if need be) and connect them."""
        for name in rooms:
            self.add_room(name)
        if rooms:
            self.activate(rooms[0])
        self.host.spawn(self._startup(), group="startup")

    async def _startup(self) -> None:
        server = self.config.server
        result: autostart.StartResult | None = None
        try:
            if (
                self.config.autostart
                and autostart.is_local(server)
                and not await autostart.server_reachable(server)
            ):
                self._server_starting(f"no chat server answers at {server}; starting one")
                result = await asyncio.to_thread(autostart.start_local_server, server)
        except Exception as exc:
            # Autostart failing must not keep the rooms from connecting (and retrying).
            self.say(EntryKind.ERROR, f"could not start a local server: {exc}")
            result = None
        self._startup_done(result)

    def _server_starting(self, line: str) -> None:
        for room in self.rooms.values():
            room.detail = "starting a local server"
            room.changed()
        self.say(EntryKind.STATUS, line)

    def _startup_done(self, result: autostart.StartResult | None) -> None:
        if self.connecting:
            return
        if result is not None:
            self._autostarted = result.started
            self.say(EntryKind.ERROR if result.failed else EntryKind.STATUS, result.message)
        self.connecting = True
        for room in self.rooms.values():
            self._connect(room)

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
            self.host.spawn(self._start_server_again(), group="autostart", exclusive=True)

    async def _start_server_again(self) -> None:
        server = self.config.server
        try:
            if await autostart.server_reachable(server):
                return  # someone else started one meanwhile; the rooms find it themselves
            self._server_starting(f"the chat server at {server} is gone; starting it again")
            result = await asyncio.to_thread(autostart.start_local_server, server)
        except Exception as exc:
            self.say(EntryKind.ERROR, f"could not start the server again: {exc}")
            return
        finally:
            self._restarting = False
        self.say(EntryKind.ERROR if result.failed else EntryKind.STATUS, result.message)
        self.reconnect(quiet=True)

    # --- rooms ------------------------------------------------------------------------------

    def add_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is not None:
            return room
        room = Room(name, self.config.scrollback)
        room.highlights = tuple(self.config.highlight)
        room.notify = Level(self.config.notify_rooms.get(name, Level.MENTIONS))
        room.joins = JoinFilter(self.config.joins)
        if self.logbook is not None:
            room.record = self._record
        # By the room's name now: a conversation follows its person's nick changes.
        connection = self._connection_factory(
            self.config.server, name, lambda: self.host.wake(room.name)
        )
        self.rooms[name] = room
        self.links[name] = RoomLink(connection)
        if self.connecting:
            self._connect(room)
        self.changed()
        return room

    def _connect(self, room: Room) -> None:
        link = self.links[room.name]
        # One job per room, exclusive within the room's own group: a restart replaces it.
        link.job = self.host.spawn(
            self._run(room, link.connection), group=f"rooms/{room.name}", exclusive=True
        )

    async def _run(self, room: Room, connection: Connection) -> None:
        try:
            await connection.run()
        except Exception as exc:  # a bug: the room says so, and ctrl+r starts it again
            room.connection_changed(
                RoomState.FAILED, f"connection stopped: {exc!r}", None, self.clock(), 0.0
            )

    def _stopped(self, name: str) -> bool:
        job = self.links[name].job
        return job is None or job.is_finished

    def activate(self, name: str, *, old: Room | None = None) -> None:
        """Show ``name`` (``old``: the room shown until now, if it is no longer joined)."""
        room = self.rooms.get(name)
        if room is None:
            return
        old = old or self.current
        if old is not None and old is not room:
            old.look_away(leaving=True)
        self.active = name
        if self.focused:
            room.look()
        if self.on_activate is not None:
            self.on_activate(old, room)
        self.changed()

    def open_conversation(self, peer: str) -> Room:
        """The conversation with ``peer`` (opened, not shown, if it was not)."""
        name = self._open_as(names.DIRECT_PREFIX + peer)
        if name in self.rooms:
            return self.rooms[name]
        room = self.add_room(name)
        room.conversation_with(peer, self.current.me if self.current is not None else None)
        away = next(
            (said for r in self.rooms.values() if (said := r.away_of().get(peer)) is not None),
            None,
        )
        room.peer_away(peer, away)  # as a room we share with them says
        return room

    def _self_problem(self, peer: str) -> str | None:
        """Why there is no conversation with ``peer`` if ``peer`` is us."""
        me = self.current.me if self.current is not None else None
        if me is None or names.name_key(me) != names.name_key(peer):
            return None
        return f"{peer} is you: a conversation is with someone else"

    def _someone_wrote(self, peer: str) -> None:
        """The server says ``peer`` wrote to us: their conversation opens, within bounds."""
        if self._open_as(names.DIRECT_PREFIX + peer) in self.rooms:
            return
        now = self.monotonic()
        open_now = sum(1 for name in self.rooms if names.direct_peer(name) is not None)
        if open_now < MAX_CONVERSATIONS and self._server_opens.spend(1, now):
            self.open_conversation(peer)
            return
        # Said at the end of the burst (_say_not_opened): the first few names, and a count.
        if len(self._not_opened) < 5 and peer not in self._not_opened:
            self._not_opened.append(peer)
        self._not_opened_count += 1

    def _say_not_opened(self) -> None:
        """Who wrote to us and was not opened: said once a minute at most, for a burst."""
        now = self.monotonic()
        if not self._not_opened or now - self._not_opened_said < NOT_OPENED_SAID_EVERY:
            return
        self._not_opened_said = now
        more = self._not_opened_count - len(self._not_opened)
        shown = ", ".join(self._not_opened) + (f" and {more} more" if more > 0 else "")
        self._not_opened, self._not_opened_count = [], 0
        self.say(
            EntryKind.ERROR,
            f"wrote to you, not opened (too many conversations at once): {shown}; "
            "/query NAME opens one",
        )

    def _open_as(self, name: str) -> str:
        """``name``, or the conversation already open with the same person under another
        case (a name is one name whatever its case: @bob and @Bob were two conversations
        whose connections replaced each other at the server)."""
        peer = names.direct_peer(name)
        if peer is None or name in self.rooms:
            return name
        key = names.name_key(peer)
        for existing in self.rooms:
            other = names.direct_peer(existing)
            if other is not None and names.name_key(other) == key:
                return existing
        return name

    def _follow(self, old: str, new: str) -> None:
        """``old`` is known as ``new`` now: our conversation with them follows (while the
        app runs: the server knows it by the person, not the name)."""
        before, after = names.DIRECT_PREFIX + old, names.DIRECT_PREFIX + new
        if before not in self.rooms or after in self.rooms:
            return
        self.rooms = {(after if k == before else k): v for k, v in self.rooms.items()}
        self.links = {(after if k == before else k): v for k, v in self.links.items()}
        room = self.rooms[after]
        room.name = after
        room.nick_changed(old, new, self.clock())  # it may not hear it itself
        self.links[after].connection.readdress(after)
        if self.active == before:
            self.active = after
        # What its connection queued meanwhile was to be drained under the old name.
        self.host.wake(after)
        self.changed()

    def join(self, name: str) -> bool:
        """Join ``name`` (or switch to it); a room whose connection gave up connects again."""
        peer = names.direct_peer(name)
        problem = names.room_problem(name) if peer is None else None
        if peer is not None and not names.is_valid_name(peer):
            problem = f"no one can be called {peer!r}: {names.CHOSEN_RULE}"
        elif peer is not None:
            problem = self._self_problem(peer)
        if problem is not None:
            self.say(EntryKind.ERROR, problem)
            return False
        name = self._open_as(name)
        room = self.rooms.get(name)
        if room is None:
            room = self.add_room(name)
        elif self.connecting and self._stopped(name):
            self._connect(room)  # it gave up (e.g. closed with 1008): try again now
        self.activate(name)
        return True

    def leave(self, name: str | None) -> bool:
        target = self._open_as(name) if name else self.active
        if target is None or target not in self.rooms:
            self.say(EntryKind.ERROR, f"/leave: you are not in {target}")
            return False
        if len(self.rooms) == 1:
            self.say(
                EntryKind.ERROR,
                f"/leave: {target} is your only room; /join another first, or /quit",
            )
            return False
        order = self.order()
        index = order.index(target)
        left = self.rooms.pop(target)
        link = self.links.pop(target)
        if self.active == target:
            self.active = None
            neighbour = order[index + 1] if index + 1 < len(order) else order[index - 1]
            self.activate(neighbour, old=left)
        self.host.spawn(link.connection.close(), group="closing")
        unsent = len(left.pending)
        self.say(
            EntryKind.STATUS,
            f"left {target}" + (f" ({unsent} message(s) not sent)" if unsent else ""),
        )
        self.changed()
        return True

    def cycle(self, step: int) -> None:
        order = self.order()
        if order:
            index = order.index(self.active) if self.active in order else 0
            self.activate(order[(index + step) % len(order)])

    def goto(self, number: int) -> bool:
        """Room ``number`` of the sidebar (1 first); False if there is none."""
        order = self.order()
        if not 1 <= number <= len(order):
            return False
        self.activate(order[number - 1])
        return True

    def next_unread(self) -> bool:
        """The next room with unread messages, mentions first; False if there is none."""
        order = self.order()
        start = order.index(self.active) + 1 if self.active in order else 0
        ring = order[start:] + order[:start]
        for wanted in (lambda r: r.mentions > 0, lambda r: r.unread > 0):
            for name in ring:
                if wanted(self.rooms[name]):
                    self.activate(name)
                    return True
        return False

    def focus(self, focused: bool) -> None:
        """The terminal window got (or lost) the focus."""
        self.focused = focused
        room = self.current
        if room is not None:
            if focused:
                room.look()
            else:
                room.look_away(leaving=False)

    # --- commands ---------------------------------------------------------------------------

    def run(self, action: commands.Action) -> bool:
        """Carry out one parsed input line; False if it could not (the log says why). Help and
        Quit are the screen's."""
        room = self.current
        match action:
            case commands.SendText(line):
                if room is not None:
                    return self.send(room, line)
            case commands.Join(name):
                return self.join(name)
            case commands.Leave(name):
                return self.leave(name)
            case commands.ListRooms():
                if room is not None:
                    self.host.spawn(self._list_rooms(room.name), group="http")
            case commands.Who():
                if room is not None and room.direct:
                    self.say(EntryKind.STATUS, f"{room.name}: a conversation of two")
                elif room is not None:
                    self.host.spawn(self._who(room.name), group="http")
            case commands.Away(message):
                self._idle_away = False  # said by the user: theirs to undo
                if message is None and room is not None and not self.me_away:
                    self.say(EntryKind.STATUS, "you are not away")
                    return True
                self.set_away(message)
            case commands.Nick(name):
                return self.nick(name)
            case commands.Query(name) | commands.Msg(name) if problem := self._self_problem(name):
                self.say(EntryKind.ERROR, problem)
                return False
            case commands.Query(name):
                self.activate(self.open_conversation(name).name)
            case commands.Msg(name, said):
                conversation = self.open_conversation(name)
                if not self.send(conversation, said):
                    return False
                if conversation is not room:
                    self.say(EntryKind.STATUS, f"to {conversation.name}: {said}")
            case commands.Moderate():
                return self.moderate(action)
            case commands.ShowTopic():
                if room is not None:
                    self.say(EntryKind.STATUS, f"topic: {room.topic}" if room.topic else "no topic")
            case commands.ListLinks():
                if room is not None:
                    self.list_links(room)
            case commands.OpenLink(number, anyway):
                if room is not None:
                    # The numbers of the list shown, if one was: in a busy room the newest
                    # are others by the time /open is typed (link 2 opened one never shown).
                    found = self._links_shown.get(room.name) or self.room_links(room)
                    if number > len(found):
                        self.say(EntryKind.ERROR, f"there is no link {number} here (/links)")
                        return False
                    return self.open_link(found[number - 1], anyway=anyway, number=number)
            case commands.Clear():
                if room is not None:
                    room.clear()
            case commands.Reconnect():
                self.reconnect()
            case commands.CommandError(message):
                self.say(EntryKind.ERROR, message)
                return False
        return True

    # --- search across rooms and days ------------------------------------------------------------

    async def grep(self, query: str) -> list[Hit]:
        """Matches of ``query`` in every room's scrollback and this server's logs, newest
        first. Both are searched in a thread (a year of logs takes a tenth of a second, tens
        of thousands of entries some tens of milliseconds): only the list of the entries is
        taken here, where the scrollbacks change: each frozen as it is (the entries that are
        objects, and the packed ones' chunks); a hit's entry is then the scrollback's own."""
        frozen = {r.name: r.scrollback.frozen() for r in self.rooms.values()}
        live = await asyncio.to_thread(grep.search_live, list(frozen.items()), query)
        live = [
            dataclasses.replace(hit, entry=f.scrollback.held(f, hit.index, hit.entry))
            if hit.entry is not None and hit.index is not None and (f := frozen.get(hit.room))
            else hit
            for hit in live
        ]
        logged: list[Hit] = []
        if self.logbook is not None:
            book = self.logbook
            await asyncio.to_thread(book.flush)  # what was just said is on disk too
            server = book.directory.name
            logged = await asyncio.to_thread(grep.search_logs, book.root, server, query)
        return grep.merge(logged, live)

    # --- links ------------------------------------------------------------------------------

    def room_links(self, room: Room) -> list[str]:
        """The room's recent links, newest first (at most :data:`commands.MAX_LINKS`)."""
        said = (
            e.text for e in room.scrollback.scan(newest_first=True) if e.kind is EntryKind.MESSAGE
        )
        return links.recent_links(said, commands.MAX_LINKS)

    def list_links(self, room: Room) -> None:
        found = self.room_links(room)
        self._links_shown[room.name] = found
        if not found:
            self.say(EntryKind.STATUS, "no links here")
            return
        rows = [f"{n}. {links.shown_url(url)}" for n, url in enumerate(found, 1)]
        rows = [
            row + (f"  ⚠ {links.shown_host(url)}" if links.suspicious(url) else "")
            for row, url in zip(rows, found, strict=True)
        ]
        self.say(EntryKind.STATUS, "links here, newest first (/open N):\n" + "\n".join(rows))

    def open_link(self, url: str, *, anyway: bool = False, number: int | None = None) -> bool:
        """Open ``url`` in the browser, unless its host may not be what it looks like (then
        say what it is, and how to open it anyway)."""
        if not links.urlsplit_ok(url):
            self.say(
                EntryKind.ERROR, f"only http and https links are opened: {links.shown_url(url)}"
            )
            return False
        if links.suspicious(url) and not anyway:
            again = f"/open {number}!" if number is not None else "/links, then /open N!"
            self.say(
                EntryKind.ERROR,
                f"not opened: its host is {links.shown_host(url)}; {again} opens it anyway",
            )
            return False
        command = links.opener()
        if command is None:
            self.say(EntryKind.ERROR, f"no browser to open {links.shown_url(url)}: set $BROWSER")
            return False
        try:
            links.open_link(url, command)
        except OSError as exc:
            self.say(EntryKind.ERROR, f"could not run {command[0]}: {exc.strerror or exc}")
            return False
        self.say(EntryKind.STATUS, f"opening {links.shown_url(url)}")
        return True

    def moderate(self, action: commands.Moderate) -> bool:
        """A moderator's action in the active room, through the server's admin API with the
        token of ``moderator_token_file``; the log says whether it was done."""
        room = self.current
        # A moderator token, else a private server's signed token (its "mod" claim).
        path = self.config.moderator_token_file or self.config.token_file
        if room is None or room.direct:
            self.say(EntryKind.ERROR, f"/{action.verb} acts in a room, not a conversation")
            return False
        if not path:
            self.say(EntryKind.ERROR, f"/{action.verb} needs moderator_token_file in the config")
            return False
        self.host.spawn(self._moderate(room.name, action, path), group="http")
        return True

    async def _moderate(self, room: str, action: commands.Moderate, path: str) -> None:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            self._output(
                room, f"/{action.verb}: cannot read {path}: {exc.strerror or exc}", error=True
            )
            return
        method, api_path, body = commands.moderation_request(action, room)
        try:
            answer = await admin_client.call(
                self.config.server, token, method, api_path, body, transport=self._http_transport
            )
        except admin_client.Unreachable as exc:
            self._output(
                room, f"/{action.verb}: the server could not be reached ({exc})", error=True
            )
            return
        if answer.ok:
            self._output(room, commands.moderation_done(action, room))
        elif not answer.served:
            self._output(room, f"/{action.verb}: this server has no admin API", error=True)
        elif answer.status in (401, 403):
            self._output(room, f"/{action.verb}: not allowed: {answer.detail}", error=True)
        else:
            self._output(room, f"/{action.verb}: refused: {answer.detail}", error=True)

    def set_away(self, message: str | None, quiet: bool = False) -> bool:
        """Say we are away (``None``: back) through one connected chat.v2 room, the active one
        if it can: the server tells every room we are in. False if none can (said in the log
        unless ``quiet``)."""
        if self._through_one_room(lambda connection: connection.away(message)):
            self._away_said = message
            return True
        if not quiet:
            self.say(EntryKind.ERROR, self._none_to_ask("away"))
        return False

    def nick(self, name: str) -> bool:
        """Ask for the name ``name`` through one connected chat.v2 room, the active one if it
        can: the server renames us in every room (or says why not, in that room)."""
        if self._through_one_room(lambda connection: connection.nick(name)):
            return True
        self.say(EntryKind.ERROR, self._none_to_ask("/nick"))
        return False

    def _none_to_ask(self, what: str) -> str:
        """Why ``what`` found no room to go through: none connected now, or a server without
        chat.v2."""
        if not any(room.state is RoomState.CONNECTED for room in self.rooms.values()):
            return f"{what} needs the server, and no room is connected now: try again once one is"
        return f"{what} needs a room connected to a server that speaks chat.v2"

    def _through_one_room(self, ask: Callable[[Connection], bool]) -> bool:
        """``ask`` the connection of one connected room, the active one first, until one
        takes it (a chat.v2 connection); False if none does. For what the server says in
        every room we are in (away, a nick change)."""
        candidates = [self.active, *self.rooms] if self.active is not None else list(self.rooms)
        return any(
            self.rooms[name].state is RoomState.CONNECTED and ask(self.links[name].connection)
            for name in candidates
        )

    def idle_check(self) -> None:
        """The screen's once-a-second look: after ``away_after`` minutes without a key, we
        are marked away (and back at the next key), unless we said so ourselves."""
        minutes = self.config.away_after
        if minutes <= 0 or self._idle_away:
            return
        if self.monotonic() - self._last_key < minutes * 60:
            return
        if self.me_away:
            return  # away already, by our own word
        if self.set_away(idle_text(minutes), quiet=True):
            self._idle_away = True

    def _away_by_idling(self) -> bool:
        """Whether we are away with the message the app says for an idle user."""
        room = self.current
        me = room.people.get(room.me) if room is not None and room.me is not None else None
        away = me.away if me is not None else None
        return self.config.away_after > 0 and away is not None and bool(IDLE_AWAY.fullmatch(away))

    def report_read(self, following: bool) -> None:
        """The screen's once-a-second look: if the user sees the newest messages of the active
        room (it is looked at, its log follows the newest), the server keeps that they read
        them (chat.v2), for the next start of the app."""
        room = self.current
        if room is None or not following or not room.viewed:
            return
        if room.state is not RoomState.CONNECTED:
            return
        offset = room.unreported_read()
        if offset is not None:
            self.links[room.name].connection.read(offset)

    def typed(self, line: str) -> None:
        """The input box now holds ``line``: a chat.v2 room hears that we are typing, at most
        once every TYPING_EVERY seconds (a command being typed is not chat)."""
        self._last_key = self.monotonic()
        if self._idle_away or self._away_by_idling():
            # Back from idling: as the idle one said away, it says back (an away of the last
            # run too: the server keeps it across a restart, the app's flag is new).
            self._idle_away = False
            self.set_away(None)
        room = self.current
        if room is None or not self.config.typing or not line:
            return
        if line.startswith(commands.PREFIX) and not line.startswith(commands.PREFIX * 2):
            return
        now = self.monotonic()
        if now - self._typed_at.get(room.name, -TYPING_EVERY) < TYPING_EVERY:
            return
        self._typed_at[room.name] = now
        self.links[room.name].connection.typing()

    def send(self, room: Room, line: str) -> bool:
        """Send ``line`` to ``room`` (queued while offline); False if it cannot be sent."""
        clean = text.sanitize(line)
        if clean is None:
            return False
        if room.max_chars is not None and len(clean) > room.max_chars:
            # Refused here, not after a round trip: the server said what it takes. The line
            # is kept with the lines sent: up brings it back to shorten it (not put back in
            # the box, where what is typed next would be added to it).
            self._output(
                room.name,
                f"message too long ({len(clean)} characters; {room.name} takes at most "
                f"{room.max_chars}); nothing was sent (up brings it back)",
                error=True,
            )
            return False
        send_id = self.links[room.name].connection.send(line)
        room.sending(send_id, line, self.clock())
        self._quit_asked = False  # a new message not sent yet: quitting warns again
        return True

    def reconnect(self, quiet: bool = False) -> None:
        """Retry every offline room now (ctrl+r, /reconnect)."""
        retried = []
        for name, link in self.links.items():
            room = self.rooms[name]
            if room.state not in (RoomState.OFFLINE, RoomState.FAILED):
                continue
            if self.connecting and self._stopped(name):
                self._connect(room)
            else:
                link.connection.retry_now()
            retried.append(name)
        if quiet:
            return
        if retried:
            self.say(EntryKind.STATUS, f"reconnecting now: {', '.join(retried)}")
        else:
            self.say(EntryKind.STATUS, "every room is connected")

    async def _list_rooms(self, room: str) -> None:
        line = await commands.fetch_rooms(
            self.config.server,
            transport=self._http_transport,
            headers=self.identity.authorization(),
        )
        self._output(room, line)

    async def _who(self, room: str) -> None:
        asked_at = self.rooms[room].presence_version if room in self.rooms else 0
        line, listed, away = await commands.fetch_members(
            self.config.server,
            room,
            transport=self._http_transport,
            headers=self.identity.authorization(),
        )
        self._members_listed(room, listed, asked_at, away)
        self._output(room, line)

    def _output(self, room: str, line: str, error: bool = False) -> None:
        target = self.rooms.get(room)
        if target is not None:
            target.local(EntryKind.ERROR if error else EntryKind.STATUS, line, self.clock())

    def say(self, kind: EntryKind, line: str) -> None:
        """A line for the user in the active room's log (command output, local errors)."""
        room = self.current
        if room is not None:
            room.local(kind, line, self.clock())

    # --- what the connections report ----------------------------------------------------------

    def drain(self, name: str) -> int:
        """Apply what ``name``'s connection has queued (at most :data:`DRAIN_LIMIT` events;
        the rest after whatever else waits); returns how many were applied."""
        room = self.rooms.get(name)
        link = self.links.get(name)
        if room is None or link is None:
            return 0  # a room left meanwhile: what its connection still says is dropped
        connection = link.connection
        # One time for the burst: it arrived within a few milliseconds.
        now = self.clock()
        apply = self._apply
        events = connection.take(DRAIN_LIMIT)
        for event in events:
            apply[type(event)](room, event, now)
        if connection.events:  # more than one slice
            self.host.wake(name)
        else:
            self._say_not_opened()
        self._alert(room)
        return len(events)

    def _record(self, room: Room, entry: Entry) -> None:
        """An entry for the logs on disk (queued: the writing is the logbook's thread's)."""
        assert self.logbook is not None
        said, kind = entry.text, entry.kind.value
        if entry.kind is EntryKind.MESSAGE:
            acted = text.action_text(said)
            if acted is not None:
                said, kind = acted, "action"
        self.logbook.write(room.name, entry.time, kind, entry.sender, said)

    def _alert(self, room: Room) -> None:
        """One notification per burst: of its newest message that calls for one; and at most
        one a room every NOTIFY_ROOM_EVERY seconds, NOTIFY_BURST at once of all rooms then
        NOTIFY_RATE a second (a server that paces its messages made one each: 51 in 5 s; the
        sidebar counts the rest)."""
        entry, room.alert = room.alert, None
        if entry is None or not self.config.bell or room.notify is Level.NONE:
            return
        now = self.monotonic()
        if now - self._notified.get(room.name, -math.inf) < NOTIFY_ROOM_EVERY:
            return
        if not self._notifications.spend(1, now):
            return
        self._notified[room.name] = now
        self.host.alert(Notice.of(room.name, entry.sender, entry.text))

    def _frame(self, room: Room, frame: Frame, now: datetime) -> None:
        kind = frame.kind
        if kind is FrameKind.TYPING:
            if self.config.typing and frame.name is not None:
                room.typing_seen(frame.name, self.monotonic())
            return
        if kind is FrameKind.NICK and frame.name is not None:
            if frame.name == room.me:
                self.identity.renamed(frame.text)  # our token and the name we ask for follow
            else:
                self._follow(frame.name, frame.text)
        if kind is FrameKind.DIRECT:
            # Someone wrote to us where we have no connection: the conversation opens (its
            # welcome brings the unread messages, and with them the notification).
            if frame.name is not None and names.is_valid_name(frame.name):
                self._someone_wrote(frame.name)
            return
        if kind is FrameKind.AWAY or kind is FrameKind.BACK:
            if frame.name is not None:
                message = frame.text if kind is FrameKind.AWAY else None
                when = local_time(frame.time) if frame.time is not None else now
                room.away_changed(frame.name, message, when)
                talk = self.rooms.get(self._open_as(names.DIRECT_PREFIX + frame.name))
                if talk is not None and talk is not room:
                    talk.peer_away(frame.name, message)
            return
        peer = names.direct_peer(room.name)
        said_by = frame.name
        if (
            peer is not None
            and said_by is not None
            and said_by != peer
            and (names.name_key(said_by) == names.name_key(peer))
        ):
            # Opened as "@alice": the person is "Alice" (a name is one whatever its case).
            # Known by the name they hold, the conversation's logs are not split in two.
            self._follow(peer, said_by)
        room.frame(frame, now)

    def _echo(self, room: Room, echo: Echo, now: datetime) -> None:
        room.echo(echo.send_id, echo.frame)

    def _acked(self, room: Room, acked: Acked, now: datetime) -> None:
        room.acked(acked.send_id, acked.text, acked.offset, acked.time)

    def _refused(self, room: Room, refused: Refused, now: datetime) -> None:
        room.refused(refused.send_id)

    def _welcomed(self, room: Room, welcomed: Welcomed, now: datetime) -> None:
        room.welcomed(welcomed.welcome, welcomed.backlog, welcomed.since, now)
        if self._away_said is not None and not welcomed.welcome.resumed:
            # A server that did not know our token (Redis restarted empty) does not know we
            # are away either: said again, or every room shows us away but nobody else.
            self._through_one_room(lambda connection: connection.away(self._away_said))
        if not room.direct:  # a conversation has no listing: its two people are seen
            self._fetch_members(room)

    def _name_assigned(self, room: Room, assigned: NameAssigned, now: datetime) -> None:
        room.name_assigned(assigned.name, now)
        self._fetch_members(room)

    def _state_changed(self, room: Room, event: StateChanged, now: datetime) -> None:
        state = RoomState(event.state.value)
        room.connection_changed(state, event.detail, event.retry_in, now, self.monotonic())
        if event.state is ConnectionState.CONNECTED:
            # The server is back: no other room of it should wait for its own next attempt.
            for other, link in self.links.items():
                if other != room.name and self.rooms[other].state is RoomState.OFFLINE:
                    link.connection.retry_now()
        elif event.state is ConnectionState.OFFLINE and event.unreachable:
            self._server_gone()
        elif event.state is ConnectionState.FAILED and room.direct:
            # Nobody to talk to (their name is gone): what was typed there cannot be sent.
            unsent = room.refuse_pending()
            if unsent and room.name != self.active:
                self.say(
                    EntryKind.ERROR, f"{unsent} message(s) to {room.name} not sent: {event.detail}"
                )

    def _lagging(self, room: Room, lagging: Lagging, now: datetime) -> None:
        room.lagging(lagging.since)

    def _name_refused(self, room: Room, refused: NameRefused, now: datetime) -> None:
        room.name_refused(refused.asked, refused.reason, now)

    def _unreadable(self, room: Room, unreadable: Unreadable, now: datetime) -> None:
        room.unreadable(unreadable.size, unreadable.start, now)

    def _fetch_members(self, room: Room) -> None:
        self.host.spawn(self._members(room.name, room.presence_version), group="members")

    async def _members(self, room: str, asked_at: int) -> None:
        _, listed, away = await commands.fetch_members(
            self.config.server,
            room,
            transport=self._http_transport,
            headers=self.identity.authorization(),
        )
        self._members_listed(room, listed, asked_at, away)

    def _members_listed(
        self, name: str, listed: list[str] | None, asked_at: int, away: dict[str, str]
    ) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        if listed is None:
            room.members_unavailable()
        else:
            room.members_listed(listed, asked_at, away)

    # --- quitting ---------------------------------------------------------------------------

    def unsent(self, connected: bool = False) -> list[Room]:
        """Rooms with messages not yet sent (``connected``: of those, the connected ones)."""
        return [
            room
            for room in self.rooms.values()
            if room.pending and (not connected or room.state is RoomState.CONNECTED)
        ]

    async def quit(self, wait: float = QUIT_WAIT) -> bool:
        """Whether to quit now. Messages not yet acknowledged are not dropped silently: the
        first time, quitting waits up to ``wait`` seconds for the connected rooms' acks, and if
        some are still not sent, says how many and does not quit; asked again, it does."""
        if self._quitting:
            return False
        if not self._quit_asked and self.unsent():
            self._quit_asked = True
            if self.unsent(connected=True):
                await self._wait_for_acks(wait)
            unsent = sum(len(room.pending) for room in self.unsent())
            if unsent:
                rooms = ", ".join(room.name for room in self.unsent())
                plural = "message is" if unsent == 1 else "messages are"
                # Not "not sent": one already written may have arrived, its answer not yet.
                self.say(
                    EntryKind.ERROR,
                    f"{unsent} {plural} not confirmed by the server yet (pending in {rooms}); "
                    "ctrl+q again quits without waiting (what was sent may still arrive)",
                )
                return False
        await self.close()
        return True

    async def _wait_for_acks(self, timeout: float) -> None:
        """Until no connected room has messages waiting for their ack, or ``timeout``."""
        settled = asyncio.Event()

        def check() -> None:
            if not self.unsent(connected=True):
                settled.set()

        stops = [room.subscribe(check) for room in self.rooms.values()]
        try:
            check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), timeout)
        finally:
            for stop in stops:
                stop()

    async def close(self) -> None:
        """Close every connection (code 1000), once."""
        if self._quitting:
            return
        self._quitting = True
        await asyncio.gather(
            *(link.connection.close() for link in self.links.values()), return_exceptions=True
        )
