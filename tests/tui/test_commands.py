"""Slash commands: pure parsing, the HTTP look-ups, and each command in the running app."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from websockets.asyncio.server import ServerConnection, serve

from chat_protocol.http import http_base
from chat_protocol.names import ROOM_RULE
from chat_protocol.v1 import SEPARATOR, format_join, format_message
from chat_testing.ports import free_port
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from chat_tui import commands
from chat_tui.commands import (
    Clear,
    CommandError,
    Grep,
    Help,
    Join,
    Leave,
    ListLinks,
    ListRooms,
    OpenLink,
    Quit,
    SendText,
    Who,
    parse,
)
from chat_tui.screens.help import HelpScreen
from tests.server.wsclients import join
from tests.tui.app_helpers import (
    SIZE,
    in_log,
    input_line,
    joined,
    log_lines,
    make_app,
    room_name,
    screen_lines,
    send,
    sidebar_lines,
    type_text,
    until,
)

# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hello", SendText("hello")),
        ("  /join x", SendText("  /join x")),  # only a leading slash makes a command
        ("//join x", SendText("/join x")),
        ("//", SendText("/")),
        ("a\nb", SendText("a\nb")),
        # Several lines are a message: a pasted path is not a command.
        ("/frobnicate\nsecond line", SendText("/frobnicate\nsecond line")),
        ("/join a\nb", SendText("/join a\nb")),
        ("/join x\n\n", Join("x")),  # a paste's final newline does not make it two lines
        ("/join slytherin", Join("slytherin")),
        ("/JOIN Slytherin", Join("Slytherin")),
        ("/join   spaced  ", Join("spaced")),
        ("/leave", Leave(None)),
        ("/leave other", Leave("other")),
        ("/part", Leave(None)),
        ("/part other", Leave("other")),
        ("/rooms", ListRooms()),
        ("/who", Who()),
        ("/clear", Clear()),
        ("/help", Help()),
        ("/quit", Quit()),
        # IRC habits: the aliases, and rooms written as the status line shows them.
        ("/j #potions", Join("potions")),
        ("/join #potions", Join("potions")),
        ("/close", Leave(None)),
        ("/close #potions", Leave("potions")),
        ("/names", Who()),
        ("/list", ListRooms()),
        ("/exit", Quit()),
        # IRC's reasons: taken, not sent (the protocol has no place for them).
        ("/quit gone for lunch", Quit()),
        ("/part #potions bye all", Leave("potions")),
        ("/me waves  at you", SendText("/me waves  at you")),
        ("/links", ListLinks()),
        ("/open", OpenLink(1)),
        ("/open 3", OpenLink(3)),
        ("/open 2!", OpenLink(2, anyway=True)),
        ("/grep  deploy failed ", Grep("deploy failed")),
        # A conversation as the sidebar shows it (the app suggests "/join @NAME" itself).
        ("/join @Nobody99", Join("@Nobody99")),
        ("/close @Nobody99", Leave("@Nobody99")),
    ],
)
def test_parse(line: str, expected: commands.Action) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/join", "usage: /join ROOM"),
        ("/join a b", "usage: /join ROOM"),
        ("/join no/slash", f"invalid room name 'no/slash': {ROOM_RULE}"),
        ("/join " + "x" * 65, ROOM_RULE),
        ("/leave bad!", ROOM_RULE),
        ("/who else", "usage: /who (it takes no arguments)"),
        ("/frobnicate x", "unknown command /frobnicate; type /help"),
        ("/", "unknown command /;"),
        ("/ join", "unknown command /;"),
        ("/me", "usage: /me TEXT"),
        ("/me   ", "usage: /me TEXT"),
        ("/open 0", "usage: /open [N] (1 to 20; see /links)"),
        ("/open x", "usage: /open [N]"),
        ("/open 1 2", "usage: /open [N]"),
        ("/grep", "usage: /grep TEXT"),
        ("/join #", ROOM_RULE),
        ("/join @no/slash", "no one can be called 'no/slash'"),
    ],
)
def test_parse_errors(line: str, error: str) -> None:
    result = parse(line)
    assert isinstance(result, CommandError)
    assert error in result.message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/kick eve", commands.Moderate("kick", "eve")),
        (
            "/kick eve  flooding the room",
            commands.Moderate("kick", "eve", None, "flooding the room"),
        ),
        ("/ban eve 2h spam", commands.Moderate("ban", "eve", 7200, "spam")),
        ("/ban eve 1d", commands.Moderate("ban", "eve", 86400)),
        ("/ban eve spam", commands.Moderate("ban", "eve", None, "spam")),
        ("/mute eve 10m", commands.Moderate("mute", "eve", 600)),
        ("/mute eve 90s", commands.Moderate("mute", "eve", 90)),
        ("/unban eve", commands.Moderate("unban", "eve")),
        ("/unmute eve", commands.Moderate("unmute", "eve")),
        ("/topic release  on friday", commands.Moderate("topic", topic="release on friday")),
        ("/topic -", commands.Moderate("topic", topic=None)),
        ("/topic", commands.ShowTopic()),
        ("/slow 5", commands.Moderate("slow", seconds=5)),
        ("/slow 0", commands.Moderate("slow", seconds=0)),
        ("/lock", commands.Moderate("lock")),
        ("/unlock", commands.Moderate("unlock")),
    ],
)
def test_parse_moderation(line: str, expected: commands.Action) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/kick", "usage: /kick NAME [REASON]"),
        ("/kick bad!name", "no one can be called 'bad!name'"),
        ("/ban eve 400d", "a ban lasts from 1s to 366d"),
        ("/ban eve 10x spam", "'10x' is not a duration: a number and its unit, 90s, 10m, 2h or 1d"),
        ("/ban eve 10 minutes", "'10' is not a duration"),
        ("/mute eve -5m", "'-5m' is not a duration"),
        ("/unban eve now", "usage: /unban NAME"),
        ("/slow", "usage: /slow SECONDS (0 to 3600)"),
        ("/slow 2h", "usage: /slow SECONDS (0 to 3600)"),
        ("/lock now", "usage: /lock"),
        ("/topic " + "x" * 301, "a topic is at most 300 characters"),
    ],
)
def test_parse_moderation_errors(line: str, error: str) -> None:
    result = parse(line)
    assert isinstance(result, CommandError)
    assert error in result.message


def test_unknown_command_explains_the_escape() -> None:
    result = parse("/shrug")
    assert isinstance(result, CommandError)
    assert "//text sends /text literally" in result.message
    assert "nothing was sent" in result.message


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("ws://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("wss://chat.example:443/", "https://chat.example:443"),
        ("ws://[::1]:9000/some/path", "http://[::1]:9000"),
    ],
)
def test_http_base(url: str, base: str) -> None:
    assert http_base(url) == base


# --- HTTP look-ups ------------------------------------------------------------------------


async def test_fetch_rooms_and_members(shared_server: RunningServer) -> None:
    room = room_name()
    member = await join(shared_server.chat_url(room))
    try:
        line = await commands.fetch_rooms(shared_server.ws_url)
        assert line.startswith("rooms on the server (")
        assert f"{room} (1)" in line
        text, names, _ = await commands.fetch_members(shared_server.ws_url, room)
        assert names == [member.name]
        assert text == f"members of {room} (1): {member.name}"
    finally:
        await member.close()


async def test_fetch_without_a_server() -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    line = await commands.fetch_rooms(url)
    assert line.startswith("/rooms is not available: no answer from")
    text, names, _ = await commands.fetch_members(url, "general")
    assert text.startswith("/who is not available: no answer from") and names is None


@contextlib.contextmanager
def http_server_without_endpoints() -> Iterator[int]:
    """A plain HTTP server that answers every request with FastAPI's 404."""

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"detail":"Not Found"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_fetch_from_a_server_without_the_endpoints() -> None:
    with http_server_without_endpoints() as port:
        url = f"ws://127.0.0.1:{port}"
        assert await commands.fetch_rooms(url) == (
            "/rooms is not available: the server has no /rooms endpoint"
        )
        text, names, _ = await commands.fetch_members(url, "general")
        assert text == "/who is not available: the server has no /rooms/general endpoint"
        assert names is None


async def test_fetch_members_of_an_empty_room(shared_server: RunningServer) -> None:
    room = room_name()
    text, names, _ = await commands.fetch_members(shared_server.ws_url, room)
    assert text == f"/who: no room {room!r}: rooms exist while they have members"
    assert names == []


# --- in the app ---------------------------------------------------------------------------


async def test_join_and_leave(shared_server: RunningServer) -> None:
    home, other = room_name("home"), room_name("other")
    app = make_app(shared_server, home)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, home)
        await send(pilot, f"/join {other}")
        other_name = await joined(pilot, app, other)
        assert app.controller.active == other
        assert [line.split()[2] for line in sidebar_lines(app)] == [home, other]
        assert in_log(app, f"joined {other} as {other_name}")
        assert shared_server.get_json(f"/rooms/{other}")["members"] == [other_name]

        await send(pilot, "/leave")
        await until(pilot, lambda: app.controller.active == home, "back home")
        assert [line.split()[2] for line in sidebar_lines(app)] == [home]
        assert in_log(app, f"left {other}")
        await asyncio.to_thread(
            wait_until,
            lambda: f"left room={other} name={other_name} code=1000" in shared_server.log(),
            10,
        )

        # /part is /leave; the last room cannot be left. The box is emptied for what comes
        # next, and up brings the refused line back.
        await send(pilot, "/part")
        await until(pilot, lambda: in_log(app, f"/leave: {home} is your only room"), "refusal")
        assert input_line(app) == "Message, or /help"
        await pilot.press("up")
        assert input_line(app) == "/part"


async def test_leave_another_room_and_rejoin(shared_server: RunningServer) -> None:
    first, second = room_name("a"), room_name("b")
    app = make_app(shared_server, first, second)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, first)
        await joined(pilot, app, second)
        await send(pilot, f"/part {second}")
        await until(pilot, lambda: len(sidebar_lines(app)) == 1, "the sidebar")
        assert app.controller.active == first
        await send(pilot, f"/leave {second}")
        await until(pilot, lambda: in_log(app, f"/leave: you are not in {second}"), "refusal")
        await send(pilot, f"/join {second}")
        await joined(pilot, app, second)
        assert [line.split()[2] for line in sidebar_lines(app)] == [first, second]


async def test_invalid_room_names_are_refused_and_kept(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        await send(pilot, "/join bad/room")
        refusal = f"invalid room name 'bad/room': {ROOM_RULE}"[:60]
        await until(pilot, lambda: in_log(app, refusal), "the refusal")
        assert input_line(app) == "Message, or /help"  # emptied for what comes next
        assert len(sidebar_lines(app)) == 1
        await type_text(pilot, "next")  # new typing starts afresh, not after the bad line
        assert input_line(app) == "next"
        await pilot.press("up")  # nothing typed is lost: the history has it
        assert input_line(app) == "/join bad/room"


async def test_unknown_command_is_not_sent(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            await send(pilot, "/frobnicate now")
            await until(pilot, lambda: in_log(app, "unknown command /frobnicate"), "refusal")
            assert input_line(app) == "Message, or /help"
            await send(pilot, "//frobnicate literally")
            await send(pilot, "marker")
            frames = await peer.recv_until(lambda f: f.endswith("marker"))
            messages = [f for f in frames if SEPARATOR in f]
            assert messages == [
                format_message(name, "/frobnicate literally"),
                format_message(name, "marker"),
            ]
            await until(pilot, lambda: in_log(app, f"{name} /frobnicate literally"), "literal")
        finally:
            await peer.close()


async def test_rooms_and_who(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)  # its own: /rooms lists only ours
    room = room_name()
    peer = await join(server.chat_url(room))
    app = make_app(server, room)
    try:
        async with app.run_test(size=SIZE) as pilot:
            name = await joined(pilot, app, room)
            # In the room before us: only the server's member list (asked for on joining)
            # names it; tab completes it on the part after "user_".
            await until(
                pilot, lambda: peer.name in app.controller.rooms[room].members(), "the list"
            )
            await type_text(pilot, peer.name[5:9])
            await pilot.press("tab")
            assert input_line(app) == f"{peer.name}:"
            await pilot.press("ctrl+u")

            await send(pilot, "/rooms")
            listed = f"rooms on the server (1): {room} (2)"
            await until(pilot, lambda: in_log(app, listed), "/rooms")
            await send(pilot, "/who")
            members = ", ".join(sorted([name, peer.name]))
            await until(pilot, lambda: in_log(app, f"members of {room} (2): {members}"), "/who")

    finally:
        await peer.close()


@contextlib.asynccontextmanager
async def minimal_server() -> AsyncIterator[int]:
    """A server with the WebSocket protocol only: no HTTP endpoints at all."""

    async def handler(ws: ServerConnection) -> None:
        name = "user_minima00"
        await ws.send(format_join(name))
        async for text in ws:
            await ws.send(format_message(name, str(text)))

    async with serve(handler, "127.0.0.1", 0) as server:
        yield next(iter(server.sockets)).getsockname()[1]


async def test_rooms_and_who_without_endpoints() -> None:
    async with minimal_server() as port:
        app = make_app(f"ws://127.0.0.1:{port}", "general")
        async with app.run_test(size=SIZE) as pilot:
            await joined(pilot, app, "general")
            await send(pilot, "hello")
            await until(pilot, lambda: in_log(app, "user_minima00 hello"), "the echo")
            await send(pilot, "/rooms")
            await until(pilot, lambda: in_log(app, "/rooms is not available"), "/rooms")
            await send(pilot, "/who")
            await until(pilot, lambda: in_log(app, "/who is not available"), "/who")


async def test_clear_help_and_quit(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=(100, 50)) as pilot:
        name = await joined(pilot, app, room)
        await send(pilot, "soon gone")
        await until(pilot, lambda: in_log(app, f"{name} soon gone"), "the message")
        await send(pilot, "/clear")
        await until(pilot, lambda: not any(line.strip() for line in log_lines(app)), "clear")

        await send(pilot, "/help")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        text = "\n".join(screen_lines(app))
        for _ in range(3):  # it scrolls: every command is on one of its pages
            await pilot.press("pagedown")
            await pilot.pause()
            text += "\n".join(screen_lines(app))
        for command in commands.COMMANDS:
            assert command.usage in text
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "help closed")

        await send(pilot, "/quit")
        await until(pilot, lambda: not app.is_running, "the app to exit")
    await asyncio.to_thread(
        wait_until,
        lambda: f"left room={room} name={name} code=1000" in shared_server.log(),
        10,
    )
