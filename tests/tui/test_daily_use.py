"""Issue 9, in the running app against real servers: what a user living in chat-tui meets.

The three defects (a stale screen at the scrollback bound, keys of one read glued together,
invisible selected text), the friction points, the members panel, mentions, search; and the
README's promises that had no test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from textual import events
from websockets.asyncio.server import ServerConnection, serve

from chat_protocol.v1 import format_join, format_message, parse_frame
from chat_testing.ports import free_port
from chat_testing.servers import RunningServer
from chat_tui.app import ChatApp
from chat_tui.connection import RoomConnection
from chat_tui.screens.help import HelpScreen
from tests.server.wsclients import Member, join
from tests.tui.app_helpers import (
    SIZE,
    MaxRandom,
    app_config,
    bells_rung,
    fixed_clock,
    in_log,
    input_line,
    joined,
    log_lines,
    log_text,
    make_app,
    members_lines,
    room_name,
    screen_lines,
    screen_segments,
    send,
    sidebar_lines,
    status_line,
    terminal_keys,
    type_text,
    unseen_line,
    until,
    widget_lines,
)

WIDE = (140, 30)


def slow_backoff(*rooms: str, seconds: float = 3600) -> Callable[..., RoomConnection]:
    """Connections of ``rooms`` wait ``seconds`` before every retry (others: the default)."""

    def factory(url: str, room: str, wake: Callable[[], object]) -> RoomConnection:
        if room in rooms:
            return RoomConnection(
                url, room, wake, backoff_base=seconds, backoff_cap=seconds, rng=MaxRandom()
            )
        return RoomConnection(url, room, wake, backoff_base=0.05, backoff_cap=0.2)

    return factory


def app_with(server_url: str, *rooms: str, factory: Any = None, **options: Any) -> ChatApp:
    config = app_config(server_url, *rooms, **options)
    return ChatApp(config, clock=fixed_clock, connection_factory=factory)


# --- the three defects ----------------------------------------------------------------------


async def test_a_flood_past_the_scrollback_bound_reaches_the_screen(
    shared_server: RunningServer,
) -> None:
    """Defect 1: once the scrollback was full, the screen stopped at the row it had."""
    room = room_name()
    app = make_app(shared_server, room, scrollback=100)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            for n in range(2000):  # twenty times the bound
                await peer.ws.send(f"flood {n}")
            await until(pilot, lambda: in_log(app, f"{peer.name} flood 1999"), "the flood's end")
            for n in range(500):  # and later floods are shown too
                await peer.ws.send(f"again {n}")
            await until(pilot, lambda: in_log(app, f"{peer.name} again 499"), "the second flood")
            assert len(app.controller.rooms[room].scrollback) == 100
            assert log_lines(app)[-1].endswith(f"{peer.name} again 499")
        finally:
            await peer.close()


async def test_keys_that_arrive_in_one_read_become_one_message_each(
    shared_server: RunningServer,
) -> None:
    """Defect 2: 'one' Enter 'two' Enter 'three' Enter in one read (tmux send-keys, a paste
    without bracketed paste mode) sent "one", "onetwo", "onetwothree"."""
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            terminal_keys(app, "one\rtwo\rthree\r")
            got = [await peer.recv(timeout=10) for _ in range(3)]
            assert got == [format_message(name, t) for t in ("one", "two", "three")]
            await until(pilot, lambda: not app.controller.rooms[room].pending, "the echoes")
            assert input_line(app) == "Message, or /help"
            # Keys typed after an enter in the same read stay for the next message.
            terminal_keys(app, "four\rfi")
            assert await peer.recv(timeout=10) == format_message(name, "four")
            await until(pilot, lambda: input_line(app) == "fi", "the rest in the box")
            with contextlib.suppress(TimeoutError):  # nothing else was sent
                extra = await peer.recv(timeout=0.5)
                raise AssertionError(f"sent more than typed: {extra!r}")
        finally:
            await peer.close()


async def test_selected_text_in_the_log_is_readable(shared_server: RunningServer) -> None:
    """Defect 3: selected cells had the same colour for text and background."""
    room = room_name()
    app = make_app(shared_server, room, theme="nord")
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        await send(pilot, "copy this sentence please")
        await until(pilot, lambda: in_log(app, "copy this sentence please"), "the echo")
        log = app.main_screen.log_view
        row = next(i for i, line in enumerate(log_lines(app)) if "copy this" in line)
        column = log_lines(app)[row].index("copy this")
        await pilot.mouse_down(log, offset=(column, row))
        await pilot.hover(log, offset=(column + 9, row))
        await pilot.mouse_up(log, offset=(column + 9, row))
        await until(pilot, lambda: app.screen.get_selected_text() is not None, "a selection")
        await pilot.pause()
        position, styles = 0, []
        for segment in screen_segments(app, log, row):
            if column <= position < column + 9:
                styles.append(segment.style)
            position += len(segment.text)
        assert styles and all(s.color is not None and s.color != s.bgcolor for s in styles)


# --- friction --------------------------------------------------------------------------------


async def test_a_pasted_trailing_newline_is_not_sent(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            app.post_message(events.Paste("two lines\nof text\n\n"))
            await until(pilot, lambda: "⏎" in input_line(app), "the paste")
            await pilot.press("enter")
            assert await peer.recv(timeout=10) == format_message(name, "two lines\nof text")
        finally:
            await peer.close()


async def test_ctrl_r_reconnects_every_offline_room_now(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    room = room_name()
    app = app_with(server.ws_url, room, factory=slow_backoff(room))
    async with app.run_test(size=SIZE) as pilot:
        first = await joined(pilot, app, room)
        server.stop()
        await until(pilot, lambda: "retrying in 3600 s" in status_line(app), "an hour to wait")
        await until(pilot, lambda: "retrying in 3599 s" in status_line(app), "a live countdown")
        restarted = await asyncio.to_thread(server.restart)
        try:
            await pilot.press("ctrl+r")
            await until(pilot, lambda: in_log(app, f"reconnecting now: {room}"), "feedback")
            second = await until(
                pilot,
                lambda: (
                    app.controller.rooms[room].me not in (None, first)
                    and app.controller.rooms[room].me
                ),
                "reconnected long before the hour",
            )
            await until(pilot, lambda: in_log(app, f"reconnected as {second}"), "the notice")
            await send(pilot, "/reconnect")
            await until(pilot, lambda: in_log(app, "every room is connected"), "nothing to do")
        finally:
            restarted.stop()


async def test_a_room_back_online_brings_the_others_back(server_factory) -> None:
    """Once one room reconnects, the server is back: no room waits for its next attempt."""
    server: RunningServer = server_factory(rate_limit=0)
    quick, slow = room_name("quick"), room_name("slow")
    app = app_with(server.ws_url, quick, slow, factory=slow_backoff(slow))
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, quick)
        slow_name = await joined(pilot, app, slow)
        server.stop()
        await until(
            pilot, lambda: app.controller.rooms[slow].retry_at is not None, "slow waiting an hour"
        )
        restarted = await asyncio.to_thread(server.restart)
        try:
            await until(
                pilot,
                lambda: app.controller.rooms[slow].me not in (None, slow_name),
                "the slow room back with the quick one",
            )
        finally:
            restarted.stop()


async def test_narrow_terminals_collapse_the_sidebar_and_keep_the_state(
    shared_server: RunningServer,
) -> None:
    rooms = [room_name("a"), room_name("b")]
    app = make_app(shared_server, *rooms)
    async with app.run_test(size=(80, 24)) as pilot:
        await joined(pilot, app, rooms[0])
        await joined(pilot, app, rooms[1])
        sidebar = app.query_one("#sidebar")
        await until(pilot, lambda: sidebar.region.width <= 8, "the collapsed sidebar")
        assert [line.strip() for line in widget_lines(app, sidebar, content=True)][:2] == [
            "1●",
            "2●",
        ]
        assert status_line(app).endswith("connected")  # the server URL gave way first
        await pilot.press("ctrl+b")
        await until(pilot, lambda: sidebar.region.width > 8, "the full sidebar")
        assert [line.split()[2] for line in sidebar_lines(app)] == rooms
        await pilot.resize_terminal(44, 24)
        await until(pilot, lambda: status_line(app).endswith("connected"), "the state kept")

        # Toggled back to what the width gives, the layout follows the width again: wide,
        # the full sidebar and the members panel come back by themselves.
        members = app.query_one("#members")
        await pilot.resize_terminal(80, 24)
        await pilot.press("ctrl+b", "f2", "f2")  # the sidebar collapsed again; members hidden
        await until(pilot, lambda: sidebar.region.width <= 8, "collapsed again")
        assert not members.display
        await pilot.resize_terminal(130, 30)
        await until(pilot, lambda: sidebar.region.width > 8, "the width's full sidebar")
        await until(pilot, lambda: members.display and members.region.width > 0, "the panel")


async def test_the_members_panel_gives_way_on_a_terminal_too_narrow_for_it(
    shared_server: RunningServer,
) -> None:
    """Shown with f2 at 80 columns, then the window narrowed to 60: the panel kept its 26
    columns and left the log 20 (every line wrapped thrice). Below 72 it gives way, and comes
    back with the width; f2 there says why it does not show."""
    room = room_name("narrow")
    app = make_app(shared_server, room)
    async with app.run_test(size=(80, 24)) as pilot:
        await joined(pilot, app, room)
        members = app.query_one("#members")
        await pilot.press("f2")
        await until(pilot, lambda: members.display and members.region.width > 0, "shown")
        await pilot.resize_terminal(60, 20)
        await until(pilot, lambda: not members.display, "given way")
        await pilot.press("f2")
        await until(pilot, lambda: in_log(app, "the members panel needs 72 columns"), "why")
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: members.display and members.region.width > 0, "back")


async def test_a_long_room_list_keeps_the_active_room_in_sight_and_numbers_every_room(
    shared_server: RunningServer,
) -> None:
    """More rooms than the sidebar has rows: a room switched to below the fold is scrolled
    into sight, and in the collapsed list rooms past 9 still have their numbers."""
    rooms = [room_name(f"r{n}") for n in range(1, 13)]
    app = make_app(shared_server, *rooms)
    async with app.run_test(size=(80, 12)) as pilot:
        for room in rooms:
            await joined(pilot, app, room)
        sidebar = app.query_one("#sidebar")
        await until(pilot, lambda: sidebar.region.width <= 8, "the collapsed sidebar")
        assert len(sidebar_lines(app)) < len(rooms)  # not all of them fit
        await send(pilot, f"/join {rooms[-1]}")  # already joined: switches to it
        await until(pilot, lambda: app.controller.active == rooms[-1], "the last room active")
        await until(pilot, lambda: "12●" in sidebar_lines(app), "the last room's line in sight")
        await send(pilot, f"/join {rooms[0]}")
        await until(pilot, lambda: "1●" in sidebar_lines(app), "back up to the first room")
        await pilot.press("ctrl+b")  # the full list: numbers and names past 9 too
        await until(pilot, lambda: sidebar.region.width > 8, "the full sidebar")
        await send(pilot, f"/join {rooms[10]}")
        await until(
            pilot,
            lambda: any(line.startswith("11 ● r11-") for line in sidebar_lines(app)),
            "room 11 in sight, numbered and named",
        )


# --- features --------------------------------------------------------------------------------


async def test_mentions_ring_and_the_title_counts_unread(shared_server: RunningServer) -> None:
    here, there = room_name("a"), room_name("b")
    app = make_app(shared_server, here, there)
    bells = bells_rung(app)
    async with app.run_test(size=SIZE) as pilot:
        name_here = await joined(pilot, app, here)
        name_there = await joined(pilot, app, there)
        peer_there = await join(shared_server.chat_url(there))
        peer_here = await join(shared_server.chat_url(here))
        try:
            await peer_there.ws.send("just chat")
            await until(pilot, lambda: app.terminal_title == "(1) chat", "one unread")
            assert len(bells) == 0
            await peer_there.ws.send(f"{name_there}: look")  # elsewhere: rings
            await until(pilot, lambda: app.terminal_title == "(2) chat", "two unread")
            assert len(bells) == 1
            await peer_here.ws.send(f"{name_here}: here")  # in view: no bell, not unread
            await until(pilot, lambda: in_log(app, "here"), "the mention in view")
            assert (len(bells), app.terminal_title) == (1, "(2) chat")

            app.post_message(events.AppBlur())  # the terminal window lost focus
            await peer_here.ws.send(f"still {name_here}?")
            await until(pilot, lambda: len(bells) == 2, "a bell while away")
            assert app.terminal_title == "(3) chat"
            app.post_message(events.AppFocus())
            await until(pilot, lambda: app.terminal_title == "(2) chat", "back")
            await until(pilot, lambda: "new messages" in log_text(app), "the divider")

            await pilot.press("alt+2")
            await until(pilot, lambda: app.terminal_title == "chat", "all read")
        finally:
            await peer_there.close()
            await peer_here.close()


async def test_no_bell_when_the_config_says_so(shared_server: RunningServer) -> None:
    here, there = room_name("a"), room_name("b")
    app = make_app(shared_server, here, there, bell=False)
    bells = bells_rung(app)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, here)
        name = await joined(pilot, app, there)
        peer = await join(shared_server.chat_url(there))
        try:
            await peer.ws.send(f"{name}: look")
            await until(pilot, lambda: app.controller.rooms[there].mentions == 1, "the mention")
            assert len(bells) == 0
        finally:
            await peer.close()


async def test_members_panel_from_the_servers_list_kept_current(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    room = room_name()
    before = await join(server.chat_url(room))  # only the server's list names this one
    app = make_app(server, room)
    try:
        async with app.run_test(size=WIDE) as pilot:
            name = await joined(pilot, app, room)
            await until(pilot, lambda: members_lines(app)[:1] == ["members (2)"], "the list")
            assert members_lines(app)[1:] == [f"{name} (you)", before.name]
            later = await join(server.chat_url(room))
            await until(pilot, lambda: later.name in members_lines(app), "a join")
            await before.close()
            await until(pilot, lambda: before.name not in members_lines(app), "a leave")
            assert members_lines(app) == ["members (2)", f"{name} (you)", later.name]
            await later.close()
            await pilot.press("f2")
            await until(pilot, lambda: members_lines(app) == [], "hidden with f2")
            await pilot.resize_terminal(*SIZE)
            await pilot.press("f2")  # shown again, on a narrow terminal too
            await until(pilot, lambda: members_lines(app)[:1] == ["members (1)"], "shown")
    finally:
        with contextlib.suppress(Exception):
            await before.close()


@contextlib.asynccontextmanager
async def server_without_http() -> AsyncIterator[str]:
    """A chat server with the WebSocket protocol only: no /rooms endpoints."""
    members: set[ServerConnection] = set()
    count = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal count
        count += 1
        name = f"user_noends{count:02d}"
        await ws.send(format_join(name))
        for other in list(members):
            await other.send(format_join(name))
        members.add(ws)
        try:
            async for text in ws:
                for member in list(members):
                    await member.send(format_message(name, str(text)))
        finally:
            members.discard(ws)

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"


async def test_members_panel_without_the_endpoint_says_so() -> None:
    async with server_without_http() as url:
        app = app_with(url, "general")
        async with app.run_test(size=WIDE) as pilot:
            name = await joined(pilot, app, "general")
            await until(pilot, lambda: members_lines(app)[:1] == ["seen here (1)"], "seen")
            assert members_lines(app)[1:] == ["(no list from server)", f"{name} (you)"]
            async with contextlib.AsyncExitStack():
                from websockets.asyncio.client import connect

                async with connect(f"{url}/chat/general") as peer:
                    other = parse_frame(str(await peer.recv())).name
                    await until(pilot, lambda: other in members_lines(app), "the newcomer")


async def test_members_panel_before_joining_does_not_claim_to_ask() -> None:
    """Nothing answers: nobody is asking the server for its list yet, and the panel says so."""
    app = app_with(f"ws://127.0.0.1:{free_port()}", "general")
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: in_log(app, "cannot connect"), "offline")
        assert members_lines(app) == ["members (0)", "not in the room yet"]


async def test_search_the_log_with_ctrl_f(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            for n in range(60):
                await peer.ws.send(f"line {n} {'Needle' if n in (5, 30, 55) else 'hay'}")
            await until(pilot, lambda: in_log(app, "line 59"), "the lines")
            await pilot.press("ctrl+f")
            await type_text(pilot, "needle")
            bar = app.query_one("#search")
            await until(pilot, lambda: "1 of 3" in widget_lines(app, bar)[0], "the count")
            await pilot.press("enter")  # to the next older match; n / N step from here
            await until(pilot, lambda: "2 of 3" in widget_lines(app, bar)[0], "the second")
            await until(pilot, lambda: in_log(app, "line 30 Needle"), "scrolled to it")
            await pilot.press("n")
            await until(pilot, lambda: in_log(app, "line 5 Needle"), "the oldest")
            await pilot.press("N")
            await until(pilot, lambda: "2 of 3" in widget_lines(app, bar)[0], "back up")
            await pilot.press("escape")
            await until(pilot, lambda: not bar.display, "the search closed")
            assert app.focused is app.main_screen.input_box
            await pilot.press("end")
            await until(pilot, lambda: in_log(app, "line 59"), "back at the newest")
        finally:
            await peer.close()


# --- README promises ---------------------------------------------------------------------------


async def test_the_config_in_the_running_app(shared_server: RunningServer) -> None:
    """theme, time_format and scrollback, as the README lists them."""
    room = room_name()
    app = make_app(shared_server, room, theme="gruvbox", time_format="[%H:%M:%S]", scrollback=5)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        assert app.theme == "gruvbox"
        peer = await join(shared_server.chat_url(room))
        try:
            for n in range(20):
                await peer.ws.send(f"kept {n}")
            await until(pilot, lambda: in_log(app, "kept 19"), "the last")
            shown = [line for line in log_lines(app) if line.strip()]
            # In the format given (the time is the server's: chat.v2 messages carry it).
            assert len(shown) == 5
            for line, n in zip(shown, range(15, 20), strict=True):
                assert re.fullmatch(rf"\[\d\d:\d\d:\d\d\] {peer.name} kept {n}", line), line
        finally:
            await peer.close()


async def test_a_message_the_server_refuses_as_too_fast_is_marked(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=1, rate_burst=2)
    room = room_name()
    app = make_app(server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        # Typed in one go: the client sends them at once (its own pace allows a burst of 16),
        # the server lets 2 through and drops the third, saying so.
        terminal_keys(app, "".join(f"quick {n}\r" for n in range(3)))
        await until(pilot, lambda: in_log(app, "quick 2"), "all three typed")
        await until(
            pilot, lambda: not app.controller.rooms[room].pending, "every answer", timeout=30
        )
        assert in_log(app, f"{name} quick 0") and in_log(app, f"{name} quick 1")
        assert in_log(app, f"{name} (refused) quick 2")
        assert in_log(app, "error: you are sending too fast")


async def test_join_of_a_joined_room_switches_to_it(shared_server: RunningServer) -> None:
    home, other = room_name("home"), room_name("other")
    app = make_app(shared_server, home, other)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, home)
        other_name = await joined(pilot, app, other)
        await send(pilot, f"/join {other}")
        await until(pilot, lambda: app.controller.active == other, "switched")
        await send(pilot, f"/join {home}")
        await until(pilot, lambda: app.controller.active == home, "and back")
        assert app.controller.rooms[other].me == other_name  # the same connection, not a new one
        assert shared_server.get_json(f"/rooms/{other}")["members"] == [other_name]
        assert len(sidebar_lines(app)) == 2


async def scrolled_up_after_80_lines(pilot: Any, app: ChatApp, peer: Member) -> None:
    """80 lines from ``peer``, then two pages up: the newest out of sight."""
    for n in range(80):
        await peer.ws.send(f"line {n:02d}")
    await until(pilot, lambda: in_log(app, "line 79"), "the last line")
    await pilot.press("pageup", "pageup")
    await until(pilot, lambda: not in_log(app, "line 79"), "scrolled up")


async def test_pageup_and_pagedown_in_the_app(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            await scrolled_up_after_80_lines(pilot, app, peer)
            await peer.ws.send("while away")
            await until(pilot, lambda: "1 new message " in unseen_line(app), "counted")
            await pilot.press("pagedown", "pagedown", "pagedown")
            await until(pilot, lambda: in_log(app, "while away"), "back at the bottom")
            assert unseen_line(app) == ""
        finally:
            await peer.close()


async def test_a_commands_answer_is_shown_when_the_log_was_scrolled_up(
    shared_server: RunningServer,
) -> None:
    """/who typed while reading further up: its answer was said below the screen, with no
    "new messages" bar to say it came (found by a new-user run)."""
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            await scrolled_up_after_80_lines(pilot, app, peer)
            await send(pilot, "/who")
            await until(pilot, lambda: in_log(app, f"members of {room} (2)"), "the answer")
        finally:
            await peer.close()


async def test_the_help_screen_closes_with_q(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=(100, 50)) as pilot:
        await joined(pilot, app, room)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        assert "ctrl+f" in "\n".join(screen_lines(app))
        await pilot.press("q")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), "closed with q")
        assert app.focused is app.main_screen.input_box


async def test_the_draft_survives_a_visit_to_the_search(shared_server: RunningServer) -> None:
    """The input gets the focus back after a search: what you type goes after your draft."""
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        await type_text(pilot, "half a thought")
        await pilot.press("ctrl+f")
        await type_text(pilot, "joined")
        await pilot.press("escape")
        await until(
            pilot, lambda: app.focused is app.main_screen.input_box, "the input focused again"
        )
        await type_text(pilot, ", finished")
        await until(pilot, lambda: input_line(app) == "half a thought, finished", "the draft kept")
