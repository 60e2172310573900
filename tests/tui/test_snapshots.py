"""Snapshots (pytest-textual-snapshot) of the main screen, the help screen and the switcher.

Update them with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the SVGs
in ``tests/tui/__snapshots__/`` before accepting them.

Why a scripted connection here, when every other test uses a real server: a snapshot must be
the same on every run, and a real server gives every member a random name. The connection
below speaks the real wire format (frames are parsed with ``parse_frame``) and posts
the same messages, in the same order, as ``RoomConnection`` does; only the socket is gone.
Everything else (app, widgets, screens, keys) is the real thing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from textual.pilot import Pilot

from chat_protocol.v1 import format_error, format_join, format_leave, format_message, parse_frame
from chat_tui.app import ChatApp
from chat_tui.config import Config
from chat_tui.events import ConnectionState, Echo, Event, NameAssigned, Refused, StateChanged
from chat_tui.screens.help import HelpScreen
from chat_tui.screens.switcher import SwitcherScreen
from tests.tui.app_helpers import (
    fixed_clock,
    in_log,
    screen_lines,
    send,
    sidebar_line,
    type_text,
    until,
)

SERVER = "ws://127.0.0.1:8000"
ME = "user_harryp07"
HERMIONE = "user_hermio42"
RON = "user_ronwea13"
DRACO = "user_dracom99"
LOST = "connection lost (1006 connection dropped)"
# What the reference server says when it drops a message sent too fast.
FLOOD = "you are sending too fast (limit 10 messages per second); messages were dropped"


@dataclass
class RoomScript:
    """What the server "sends" in one room, and how it answers what we send."""

    name: str  # ours, from our own join notice (the first frame)
    frames: list[str] = field(default_factory=list)  # wire frames after our join notice
    lost: bool = False  # the connection drops after the frames (offline, retrying)
    refuse: frozenset[str] = frozenset()  # texts answered with an error notice
    hold: frozenset[str] = frozenset()  # texts never echoed (they stay pending)
    members: list[str] | None = None  # GET /rooms/{room}; None: the server has no such endpoint


class ScriptedConnection:
    """A room's connection (the controller's ``Connection`` seam) that plays a RoomScript
    instead of opening a socket.

    It reports what RoomConnection reports, in the same order: state changes, our name from
    the first frame, then the frames (an Echo for ours, a Refused before the error notice that
    refuses one), and wakes the app once each time its queue stops being empty.
    """

    def __init__(
        self, server_url: str, room: str, wake: Callable[[], object], script: RoomScript
    ) -> None:
        self.room = room
        self.url = f"{server_url}/chat/{room}"
        self.script = script
        self.name: str | None = None
        self.events: deque[Event] = deque()
        self.pending = 0
        self._wake = wake
        self._woken = False
        self._ids = 0
        self._closed = asyncio.Event()

    def take(self, limit: int | None = None) -> list[Event]:
        self._woken = False
        taken = list(self.events)[:limit]
        for _ in taken:
            self.events.popleft()
        return taken

    def _report(self, *events: Event) -> None:
        self.events.extend(events)
        if not self._woken:
            self._woken = True
            self._wake()

    async def run(self) -> None:
        script = self.script
        self._report(
            StateChanged(ConnectionState.CONNECTING, f"connecting to {self.url}"),
            StateChanged(ConnectionState.CONNECTED, f"connected to {self.url}"),
        )
        self.name = script.name
        self._report(NameAssigned(script.name))
        self.deliver(format_join(script.name), *script.frames)
        if script.lost:
            self._report(StateChanged(ConnectionState.OFFLINE, LOST, 2.0))
        await self._closed.wait()

    def deliver(self, *wires: str) -> None:
        """More frames from the "server", now."""
        self._report(*(parse_frame(wire) for wire in wires))

    def send(self, line: str) -> str:
        self._ids += 1
        send_id = f"scripted-{self._ids}"
        if line in self.script.refuse:
            self._report(Refused(send_id), parse_frame(format_error(FLOOD)))
        elif line not in self.script.hold:
            self._report(Echo(parse_frame(format_message(self.script.name, line)), send_id))
        return send_id

    def retry_now(self) -> None:
        pass

    def typing(self) -> None:
        pass

    def read(self, offset: int) -> None:
        pass

    def away(self, message: str | None) -> bool:
        return False

    async def close(self) -> None:
        self._closed.set()
        self._report(StateChanged(ConnectionState.CLOSED, "left the room"))


def scripted_app(scripts: dict[str, RoomScript], **options: Any) -> ChatApp:
    """A ChatApp whose rooms (in this order) play ``scripts``, with fixed clocks."""

    def connect(url: str, room: str, wake: Callable[[], object]) -> ScriptedConnection:
        return ScriptedConnection(url, room, wake, scripts[room])

    def http(request: httpx.Request) -> httpx.Response:
        # The HTTP look-ups answered from the scripts too: no network at all.
        room = request.url.path.removeprefix("/rooms/")
        script = scripts.get(room)
        if script is None or script.members is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(200, json={"room": room, "members": script.members})

    options.setdefault("joins", "all")
    config = Config(server=SERVER, rooms=list(scripts), autostart=False, **options)
    return ChatApp(
        config,
        clock=fixed_clock,
        monotonic=lambda: 1000.0,
        connection_factory=connect,
        http_transport=httpx.MockTransport(http),
    )


async def played(pilot: Pilot[Any], app: ChatApp) -> None:
    """Wait until the app has taken in every room's script."""

    def done() -> bool:
        for name, room in app.controller.rooms.items():
            connection = app.controller.links[name].connection
            assert isinstance(connection, ScriptedConnection)
            script = connection.script
            # "joined ROOM as NAME", our join notice, the frames, "connection lost".
            if len(room.scrollback) < 2 + len(script.frames) + script.lost:
                return False
        return True

    await until(pilot, done, "the scripted rooms")
    await settled(pilot, app)


async def settled(pilot: Pilot[Any], app: ChatApp) -> None:
    # The blinking cursor would make the picture depend on when it is taken.
    for widget in app.screen.query("Input"):
        widget.cursor_blink = False  # type: ignore[attr-defined]
    await pilot.pause()
    await until(
        pilot, lambda: not app.main_screen.log_view.sync_due, "the log to take in every entry"
    )
    await pilot.pause()


MAIN_SCRIPTS = {
    "general": RoomScript(
        ME,
        frames=[
            format_join(HERMIONE),
            format_message(HERMIONE, "has anyone seen the potions essay?"),
            format_join(RON),
            format_message(RON, f"ask {ME}, he always knows"),
            format_message(
                HERMIONE,
                "It is due on Monday, and it has to be two rolls of parchment long, "
                "which is far longer than anything we have written this term.",
            ),
            format_message(
                DRACO, "roses are red\nviolets are blue\n  [bold red]this is not markup[/]"
            ),
            format_leave(DRACO),
        ],
        refuse=frozenset({"spam spam spam"}),
        hold=frozenset({"anyone still there?"}),
        members=[ME, HERMIONE, RON, DRACO],
    ),
    "slytherin": RoomScript(
        "user_harryp08",
        frames=[
            format_message(DRACO, "who let him in here"),
            format_message(DRACO, "user_harryp08, out"),
            format_message("user_gregor11", "yeah"),
        ],
    ),
    "ravenclaw": RoomScript(
        "user_harryp09", frames=[format_message("user_lunalo33", "nargles again")]
    ),
    "hufflepuff": RoomScript(
        "user_harryp10",
        frames=[format_message("user_cedric20", "practice at six")],
        lost=True,
    ),
}


def test_main_screen(snap_compare: Any) -> None:
    """general active: joins, a leave, several senders, our own sent, refused and pending
    messages, a mention of us, a wrapped and a multi-line message with text that looks like
    markup; the sidebar shows unread counts, a mention mark and an offline room."""
    app = scripted_app(MAIN_SCRIPTS)

    async def run_before(pilot: Pilot[Any]) -> None:
        await played(pilot, app)
        await until(pilot, lambda: "@" in sidebar_line(app, "slytherin"), "the mention mark")
        await send(pilot, "I was in the library")
        await send(pilot, "spam spam spam")
        await send(pilot, "anyone still there?")
        await type_text(pilot, "half-typed dra")
        await until(pilot, lambda: in_log(app, "(refused)"), "the refused message")
        await until(pilot, lambda: in_log(app, "(pending)"), "the pending message")
        await settled(pilot, app)

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


def test_help_screen(snap_compare: Any) -> None:
    """F1 over the main screen: every key and command."""
    app = scripted_app({"general": RoomScript(ME), "slytherin": RoomScript("user_harryp08")})

    async def run_before(pilot: Pilot[Any]) -> None:
        await played(pilot, app)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await settled(pilot, app)

    assert snap_compare(app, terminal_size=(100, 48), run_before=run_before)


def test_quick_switcher(snap_compare: Any) -> None:
    """ctrl+k, then "er" typed: the joined rooms that match (the active one marked) and an
    offer to join "er"."""
    rooms = ["general", "slytherin", "ravenclaw", "hufflepuff", "gryffindor"]
    app = scripted_app({room: RoomScript(f"user_harryp{n:02d}") for n, room in enumerate(rooms)})

    async def run_before(pilot: Pilot[Any]) -> None:
        await played(pilot, app)
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, SwitcherScreen), "the switcher")
        await type_text(pilot, "er")
        await until(pilot, lambda: "join er" in "".join(screen_lines(app)), "the filtered list")
        await settled(pilot, app)

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


def flood_frames(count: int, start: int = 0) -> list[str]:
    return [
        format_message(HERMIONE if n % 3 else RON, f"flood line {n}")
        for n in range(start, start + count)
    ]


def test_wide_screen_with_the_members_panel(snap_compare: Any) -> None:
    """140 columns: the members panel on the right, our own name first and marked."""
    app = scripted_app(MAIN_SCRIPTS)

    async def run_before(pilot: Pilot[Any]) -> None:
        await played(pilot, app)
        await until(pilot, lambda: "members (3)" in "".join(screen_lines(app)), "the server's list")
        await settled(pilot, app)

    assert snap_compare(app, terminal_size=(140, 24), run_before=run_before)


def test_narrow_screen_collapses_the_sidebar(snap_compare: Any) -> None:
    """80 columns: room numbers and marks only; the status line keeps the state."""
    app = scripted_app(MAIN_SCRIPTS)

    async def run_before(pilot: Pilot[Any]) -> None:
        await played(pilot, app)
        await pilot.press("alt+4")  # hufflepuff: offline, retrying
        await settled(pilot, app)

    assert snap_compare(app, terminal_size=(80, 20), run_before=run_before)


def test_log_following_at_the_scrollback_bound(snap_compare: Any) -> None:
    """scrollback = 50 and 300 messages: the newest are on screen, the oldest were dropped."""
    app = scripted_app({"general": RoomScript(ME, frames=flood_frames(300))}, scrollback=50)

    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: in_log(app, "flood line 299"), "the last line")
        await settled(pilot, app)

    assert snap_compare(app, terminal_size=(80, 16), run_before=run_before)


def test_log_scrolled_to_the_top_at_the_scrollback_bound(snap_compare: Any) -> None:
    """Scrolled to the top of a full scrollback, then more arrives: the oldest held entry
    is at the top, and "N new messages" counts what arrived."""
    app = scripted_app({"general": RoomScript(ME, frames=flood_frames(60))}, scrollback=50)

    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: in_log(app, "flood line 59"), "the flood")
        await settled(pilot, app)
        while round(app.main_screen.log_view.scroll_y) > 0:
            await pilot.press("pageup")
        connection = app.controller.links["general"].connection
        assert isinstance(connection, ScriptedConnection)
        connection.deliver(*flood_frames(5, start=60))
        await until(pilot, lambda: "5 new messages" in "".join(screen_lines(app)), "five more")
        await settled(pilot, app)

    assert snap_compare(app, terminal_size=(80, 16), run_before=run_before)


def test_new_messages_divider_and_search(snap_compare: Any) -> None:
    """Entering a room with unread messages shows the divider above the first of them;
    ctrl+f then searches, the matches picked out and "1 of 2" counted."""
    scripts = {
        "general": RoomScript(ME),
        "slytherin": RoomScript("user_harryp08", frames=flood_frames(3)),
    }
    app = scripted_app(scripts)

    async def run_before(pilot: Pilot[Any]) -> None:
        await played(pilot, app)
        connection = app.controller.links["slytherin"].connection
        assert isinstance(connection, ScriptedConnection)
        connection.deliver(
            format_message(DRACO, "the potion needs Moonstone"),
            format_message(RON, "what is moonstone"),
        )
        await until(pilot, lambda: "2" in sidebar_line(app, "slytherin"), "two unread")
        await pilot.press("alt+2")
        await until(pilot, lambda: in_log(app, "new messages"), "the divider")
        await pilot.press("ctrl+f")
        await type_text(pilot, "moonstone")
        await until(pilot, lambda: "1 of 2" in "".join(screen_lines(app)), "the count")
        await settled(pilot, app)

    assert snap_compare(app, terminal_size=(100, 16), run_before=run_before)
