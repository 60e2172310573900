"""ChatApp against real servers: messages, unread marks, literal text, reconnection, quitting."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from chat_protocol import v2
from chat_protocol.v1 import SEPARATOR, format_message
from chat_testing.marks import requires_redis
from chat_testing.ports import free_port
from chat_testing.proxy import TcpProxy
from chat_testing.redis_servers import start_redis
from chat_testing.servers import RunningServer, start_server
from chat_testing.waits import wait_until
from chat_tui.app import ChatApp
from chat_tui.config import Config
from chat_tui.connection import RoomConnection
from chat_tui.scrollback import SendState
from chat_tui.widgets.message_log import MessageLog
from tests.server.wsclients import join
from tests.tui.app_helpers import (
    SIZE,
    MaxRandom,
    fixed_clock,
    in_log,
    in_log_wrapped,
    input_line,
    joined,
    log_lines,
    log_text,
    make_app,
    room_name,
    send,
    sidebar_line,
    status_line,
    unseen_line,
    until,
    untimed,
)


async def test_two_apps_exchange_messages(shared_server: RunningServer) -> None:
    room = room_name()
    alice, bob = make_app(shared_server, room), make_app(shared_server, room)
    async with alice.run_test(size=SIZE) as pa, bob.run_test(size=SIZE) as pb:
        alice_name = await joined(pa, alice, room)
        bob_name = await joined(pb, bob, room)
        assert alice_name in status_line(alice) and f"#{room}" in status_line(alice)
        await until(pa, lambda: in_log(alice, f"{bob_name} joined the chat"), "bob's join")

        await send(pa, "hello from alice")
        await until(pb, lambda: in_log(bob, f"{alice_name} hello from alice"), "alice's message")
        await send(pb, "hi alice")
        await until(pa, lambda: in_log(alice, f"{bob_name} hi alice"), "bob's answer")

        # Our own message is shown once: the echo updates the pending line, adds no other.
        await until(pa, lambda: not alice.controller.rooms[room].pending, "the echo")
        own = [line for line in log_lines(alice) if "hello from alice" in line]
        assert [untimed(line) for line in own] == [f"{alice_name} hello from alice"]
        assert "pending" not in log_text(alice)
        assert "pending" not in status_line(alice)


async def test_text_from_the_network_is_shown_literally(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            await peer.ws.send("[bold red]x[/] [@click=app.quit]y[/] \x1b[31mred\x1b[0m")
            # The server strips ESC itself; what is left must still not be interpreted.
            await until(pilot, lambda: in_log(app, "[bold red]x[/] [@click=app.quit]y[/]"), "text")
            lines = log_lines(app)
            row = next(i for i, line in enumerate(lines) if "[bold red]" in line)
            assert lines[row].endswith("[bold red]x[/] [@click=app.quit]y[/] [31mred[0m")
            # A click right on the text that looks like an action must not run app.quit.
            column = lines[row].index("[@click=app.quit]y") + len("[@click=")
            await pilot.click("#log", offset=(column, row))
            await pilot.pause()
            assert app.is_running
        finally:
            await peer.close()


async def test_scrolled_up_view_does_not_move(shared_server: RunningServer) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            for n in range(60):
                await peer.ws.send(f"line {n:02d}")
            await until(pilot, lambda: in_log(app, "line 59"), "the last line")
            assert unseen_line(app) == ""

            await pilot.press("pageup", "pageup")
            before = log_lines(app)
            assert not in_log(app, "line 59")
            for n in range(5):
                await peer.ws.send(f"late {n}")
            await until(pilot, lambda: "5 new messages" in unseen_line(app), "the indicator")
            after = log_lines(app)
            # Same rows from the top; the indicator takes the bottom row of the log.
            assert after == before[: len(after)] and len(after) >= len(before) - 1

            await pilot.press("end")
            await until(pilot, lambda: in_log(app, "late 4"), "the bottom")
            assert unseen_line(app) == ""

            # Following again: new lines show up without a key.
            await peer.ws.send("after end")
            await until(pilot, lambda: in_log(app, "after end"), "following")

            await pilot.press("pageup")
            await peer.ws.send("one more")
            await until(pilot, lambda: "1 new message " in unseen_line(app), "one new")
            await pilot.press("escape")
            await until(pilot, lambda: in_log(app, "one more"), "escape to the bottom")
        finally:
            await peer.close()


async def test_new_messages_below_count_no_more_than_are_kept(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    room = room_name()
    app = make_app(server, room, scrollback=40)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(server.chat_url(room))
        try:
            for n in range(40):
                await peer.ws.send(f"line {n:02d}")
            await until(pilot, lambda: in_log(app, "line 39"), "the last line")
            await pilot.press("pageup")
            for n in range(100):  # more than the scrollback keeps
                await peer.ws.send(f"late {n}")
            await until(
                pilot, lambda: app.controller.rooms[room].scrollback[-1].text == "late 99", "all"
            )
            await pilot.pause()
            assert "40 new messages" in unseen_line(app)  # not 100: 40 can be shown
            await pilot.press("end")
            await until(pilot, lambda: in_log(app, "late 99"), "the bottom")
        finally:
            await peer.close()


async def test_unread_counts_and_mentions(shared_server: RunningServer) -> None:
    first, second, third = room_name("a"), room_name("b"), room_name("c")
    app = make_app(shared_server, first, second, third)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, first)
        name = await joined(pilot, app, second)
        await joined(pilot, app, third)
        peer_b = await join(shared_server.chat_url(second))
        peer_c = await join(shared_server.chat_url(third))
        try:
            await peer_c.ws.send("plain chat")
            await peer_b.ws.send("nothing for you")
            await peer_b.ws.send(f"hey {name}, look")
            await until(pilot, lambda: sidebar_line(app, second).endswith(f"{second} 2 @"), "b")
            await until(pilot, lambda: sidebar_line(app, third).endswith(f"{third} 1"), "c")
            assert sidebar_line(app, first).endswith(first)  # the active room counts nothing

            # alt+a: the room with the mention; entering a room clears its marks.
            await pilot.press("alt+a")
            assert app.controller.active == second
            assert sidebar_line(app, second).endswith(second)
            mention = next(line for line in log_lines(app) if "look" in line)
            assert mention.endswith(f"{peer_b.name} hey {name}, look")

            await pilot.press("alt+a")
            assert app.controller.active == third
            await pilot.press("alt+a")  # nothing unread any more: stays
            assert app.controller.active == third
        finally:
            await peer_b.close()
            await peer_c.close()


async def test_alt_a_prefers_mentions(shared_server: RunningServer) -> None:
    rooms = [room_name(p) for p in "abc"]
    app = make_app(shared_server, *rooms)
    async with app.run_test(size=SIZE) as pilot:
        names = [await joined(pilot, app, room) for room in rooms]
        peer_b = await join(shared_server.chat_url(rooms[1]))
        peer_c = await join(shared_server.chat_url(rooms[2]))
        try:
            await peer_b.ws.send("just chat")
            await peer_c.ws.send(f"{names[2]}: ping")
            await until(pilot, lambda: sidebar_line(app, rooms[2]).endswith("1 @"), "mention")
            await until(pilot, lambda: sidebar_line(app, rooms[1]).endswith("1"), "unread")
            await pilot.press("alt+a")
            assert app.controller.active == rooms[2]
            await pilot.press("alt+a")
            assert app.controller.active == rooms[1]
        finally:
            await peer_b.close()
            await peer_c.close()


def unseen_count(app: ChatApp) -> int:
    """The number the "N new messages" bar says (0 without the bar)."""
    found = re.search(r"(\d+) new messages?", unseen_line(app))
    return int(found.group(1)) if found else 0


async def test_a_flood_in_another_room_is_counted_and_kept_in_order(
    shared_server: RunningServer,
) -> None:
    """A burst arrives in batches: every message kept, in order, counted once, mentions too."""
    here, there = room_name("a"), room_name("b")
    app = make_app(shared_server, here, there)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, here)
        name = await joined(pilot, app, there)
        peer = await join(shared_server.chat_url(there))
        try:
            texts = [
                f"{name}, look at {i}" if i % 60 == 59 else f"flood line {i}" for i in range(300)
            ]
            for text in texts:
                await peer.ws.send(text)
            await until(pilot, lambda: sidebar_line(app, there).endswith(f"{there} 300 @"), "300")
            assert app.controller.rooms[there].mentions == 5
            kept = [e.text for e in app.controller.rooms[there].scrollback if e.sender == peer.name]
            assert kept == texts

            # Entering the room: the "new messages" divider above the first unread one, at
            # the top of the view, and the rest counted below.
            await pilot.press("alt+2")
            assert sidebar_line(app, there).endswith(there)
            await until(pilot, lambda: "new messages" in log_text(app), "the divider")
            lines = log_lines(app)
            divider = next(i for i, line in enumerate(lines) if "new messages" in line)
            assert divider <= 1
            said = re.compile(rf"\d\d:\d\d {peer.name} ")
            shown = [untimed(line) for line in lines if said.match(line)]
            assert len(shown) > 10
            assert shown == [f"{peer.name} {t}" for t in texts[: len(shown)]]
            assert "new messages (end or escape" in unseen_line(app)
            # The count is what starts below the view, and goes down as the view does.
            assert unseen_count(app) == len(texts) - len(shown)
            await pilot.press("pagedown")
            await until(pilot, lambda: unseen_count(app) < len(texts) - len(shown), "fewer")
            lines = log_lines(app)
            last = max(i for i, t in enumerate(texts) if any(line.endswith(t) for line in lines))
            assert unseen_count(app) == len(texts) - 1 - last
            await pilot.press("end")
            await until(pilot, lambda: in_log(app, texts[-1]), "the newest")
            assert unseen_line(app) == ""
        finally:
            await peer.close()


async def test_a_message_too_long_is_refused_before_sending(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0, max_message_chars=10)
    room = room_name()
    app = make_app(server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        peer = await join(server.chat_url(room))
        try:
            long = "x" * 11
            for text in ("short", long):
                await send(pilot, text)
            # The welcome said the server takes 10 characters: refused here, at once, and
            # back in the box to be shortened; nothing reached the room.
            said = f"message too long (11 characters; {room} takes at most 10); nothing was sent"
            await until(pilot, lambda: in_log_wrapped(app, said), "the refusal")
            # Not put back: what is typed next must not be added to it. Up brings it back.
            assert input_line(app) == "Message, or /help"
            await pilot.press("up")
            await until(pilot, lambda: input_line(app) == long, "the line back")
            await pilot.press("backspace", "enter")
            await until(pilot, lambda: in_log(app, f"{name} {long[:-1]}"), "the shorter one")
            frames = await peer.recv_until(lambda f: f.endswith(f":: {long[:-1]}"))
            assert frames == [format_message(name, "short"), format_message(name, long[:-1])]
            assert not in_log(app, "(refused)")
        finally:
            await peer.close()


@pytest.mark.memory_only
async def test_a_frozen_server_shows_as_lag(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    room = room_name()

    def brisk(url: str, name: str, wake: Callable[[], object]) -> RoomConnection:
        # Pinged after 0.3 s of silence, lag after 0.5 s (2 s and 3 s by default).
        return RoomConnection(url, name, wake, lag_ping=0.3, lag_shown=0.5)

    config = Config(server=server.ws_url, rooms=[room], autostart=False, notifications="bell")
    app = ChatApp(config, clock=fixed_clock, connection_factory=brisk)
    async with app.run_test(size=(160, SIZE[1])) as pilot:
        await joined(pilot, app, room)
        server.process.send_signal(signal.SIGSTOP)  # alive, its sockets open, answering nothing
        try:
            await until(pilot, lambda: "(lag)" in status_line(app), "the lag", timeout=10)
            assert "connected, no answer for " in status_line(app)
        finally:
            server.process.send_signal(signal.SIGCONT)
        await until(pilot, lambda: "lag" not in status_line(app), "the answer", timeout=10)
        assert status_line(app).endswith("connected")


@requires_redis
async def test_a_port_that_is_no_chat_server_is_named_as_such() -> None:
    redis = await asyncio.to_thread(start_redis, "--save", "", "--appendonly", "no")
    try:
        room = room_name()
        config = Config(server=f"ws://127.0.0.1:{redis.port}", rooms=[room], autostart=False)
        app = ChatApp(config, clock=fixed_clock)
        async with app.run_test(size=(160, SIZE[1])) as pilot:
            said = "does not speak HTTP, so it is no chat server"
            await until(pilot, lambda: in_log_wrapped(app, said), "what answers there")
            assert "failed" in status_line(app) and "(1006" not in log_text(app)
    finally:
        await asyncio.to_thread(redis.stop)


async def test_unreachable_server_is_shown_and_retried() -> None:
    port = free_port()
    room = room_name()

    def steady(url: str, name: str, wake: Callable[[], object]) -> RoomConnection:
        # Two seconds offline between attempts: with the default jitter a wait can be ~0 s,
        # and the offline state gone before the screen is read.
        return RoomConnection(url, name, wake, backoff_base=2, backoff_cap=2, rng=MaxRandom())

    config = Config(server=f"ws://127.0.0.1:{port}", rooms=[room], autostart=False)
    app = ChatApp(config, clock=fixed_clock, connection_factory=steady)
    # A terminal wide enough for the whole status line (at 100 columns the server URL gives way).
    async with app.run_test(size=(200, SIZE[1])) as pilot:
        await until(pilot, lambda: in_log(app, "cannot connect: server unreachable"), "offline")
        await until(pilot, lambda: "offline, retrying in " in status_line(app), "the countdown")
        # Everything, as a wide terminal shows it.
        assert "offline, retrying in " in status_line(app)
        assert "│ server unreachable (nothing answers at" in status_line(app)
        assert sidebar_line(app, room).startswith(f"1 ○ {room} ↻")  # the countdown
        await send(pilot, "typed while offline")
        await until(pilot, lambda: in_log(app, "(pending) typed while offline"), "pending")

        server = await asyncio.to_thread(start_server, port, rate_limit=0)
        try:
            name = await joined(pilot, app, room)
            await until(pilot, lambda: in_log(app, f"{name} typed while offline"), "delivery")
            assert not in_log(app, "(pending)")
            assert sidebar_line(app, room).startswith(f"1 ● {room}")
        finally:
            await asyncio.to_thread(server.stop)


async def test_reconnect_delivers_pending_messages_in_order(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    room = room_name()
    with TcpProxy([server.port]) as proxy:
        app = make_app(proxy.ws_url, room)
        async with app.run_test(size=SIZE) as pilot:
            first_name = await joined(pilot, app, room)
            await send(pilot, "before the restart")
            await until(pilot, lambda: not app.controller.rooms[room].pending, "the first echo")

            proxy.hold()  # hold the client's reconnection until the listener is in
            server.stop()
            await until(pilot, lambda: in_log(app, "connection lost"), "the gap marker")
            assert sidebar_line(app, room).split()[1] in ("○", "◌")
            typed = [f"pending {n}" for n in range(3)]
            for text in typed:
                await send(pilot, text)
            await until(pilot, lambda: in_log(app, f"(pending) {typed[-1]}"), "the pending ones")
            for text in typed:
                assert in_log(app, f"(pending) {text}")

            restarted = await asyncio.to_thread(server.restart)
            listener = await join(restarted.chat_url(room))
            try:
                proxy.release()
                second_name = await until(
                    pilot,
                    lambda: (
                        app.controller.rooms[room].me != first_name
                        and app.controller.rooms[room].me
                    ),
                    "a new name",
                )
                frames = await listener.recv_until(lambda f: f.endswith(typed[-1]), timeout=20)
                messages = [f for f in frames if SEPARATOR in f]
                assert messages == [format_message(second_name, t) for t in typed]
                await until(pilot, lambda: in_log(app, f"reconnected as {second_name}"), "notice")
                await until(pilot, lambda: not app.controller.rooms[room].pending, "the echoes")
                states = [e.state for e in app.controller.rooms[room].scrollback if e.own]
                assert states == [SendState.SENT] * 4
                assert not in_log(app, "(pending)")
                lines = [line for line in log_lines(app) if "pending " in line]
                assert [untimed(line) for line in lines] == [f"{second_name} {t}" for t in typed]
            finally:
                await listener.close()
                restarted.stop()


async def test_quit_closes_every_socket_with_1000(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    rooms = [room_name(), room_name()]
    app = make_app(server, *rooms)
    async with app.run_test(size=SIZE) as pilot:
        names = [await joined(pilot, app, room) for room in rooms]
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not app.is_running, "the app to exit")
    for room, name in zip(rooms, names, strict=True):
        expected = f"left room={room} name={name} code=1000"
        await asyncio.to_thread(
            lambda e=expected: _wait_for_log(server, e)  # type: ignore[misc]
        )


async def test_ctrl_c_copies_then_clears_the_line_then_quits(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    room = room_name()
    app = make_app(server, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        await pilot.press(*"keep me")
        await pilot.press("shift+home")  # select the text in the input: ctrl+c copies it
        await pilot.press("ctrl+c")
        assert app.is_running
        assert app.clipboard == "keep me"
        await pilot.press("end")  # no selection any more: ctrl+c clears the line, as a shell
        await pilot.press("ctrl+c")
        await until(pilot, lambda: app.screen.input_box.value == "", "the line cleared")
        assert app.is_running
        await pilot.press("up")  # not lost: it is the room's last line
        await until(pilot, lambda: app.screen.input_box.value == "keep me", "the line back")
        await pilot.press("ctrl+c", "ctrl+c")  # cleared, then with nothing typed: quit
        await until(pilot, lambda: not app.is_running, "the app to exit")
    await asyncio.to_thread(_wait_for_log, server, f"left room={room} name={name} code=1000")


async def test_text_selected_in_the_log_with_the_mouse_is_copied_by_ctrl_c(
    server_factory,
) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    room = room_name()
    app = make_app(server, room)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        await send(pilot, "copy this sentence please")
        await until(pilot, lambda: in_log(app, "copy this sentence please"), "the echo")
        log = app.query_one(MessageLog)
        row = next(i for i, line in enumerate(log_lines(app)) if "copy this" in line)
        column = log_lines(app)[row].index("copy this")
        # Drag across "copy this sentence" as a user would.
        await pilot.mouse_down(log, offset=(column, row))
        await pilot.hover(log, offset=(column + len("copy this sentence"), row))
        await pilot.mouse_up(log, offset=(column + len("copy this sentence"), row))
        await until(pilot, lambda: app.screen.get_selected_text() is not None, "a selection")
        await pilot.press("ctrl+c")
        assert app.is_running  # with a selection, ctrl+c copies instead of quitting
        assert app.clipboard.startswith("copy this sentence")
        assert "\n" not in app.clipboard


def _wait_for_log(server: RunningServer, text: str) -> None:
    wait_until(lambda: text in server.log(), timeout=10, what=text)


async def test_autostart_starts_a_local_server_and_again_when_it_dies(
    tmp_path, monkeypatch
) -> None:
    import subprocess
    import sys

    # `chat-server start` keeps its pid and log files here, not in the user's state directory.
    monkeypatch.setenv("CHAT_SERVER_STATE_DIR", str(tmp_path))
    port = free_port()
    room = room_name()
    app = make_app(f"ws://127.0.0.1:{port}", room, autostart=True)

    def stop() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chat_server", "stop", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        async with app.run_test(size=SIZE) as pilot:
            name = await joined(pilot, app, room, timeout=40)
            assert in_log(app, f"no chat server answers at ws://127.0.0.1:{port}; starting one")
            assert in_log(app, f"started a local chat server on port {port}")
            assert in_log(app, f"joined {room} as {name}")
            assert (tmp_path / f"server-{port}.pid").exists()

            # The server we started dies: the next time nothing answers, it is started again.
            assert (await asyncio.to_thread(stop)).returncode == 0
            again = f"the chat server at ws://127.0.0.1:{port} is gone; starting it again"

            def said() -> list[str]:
                return [entry.text for entry in app.controller.rooms[room].scrollback]

            await until(pilot, lambda: again in said(), "the restart", timeout=40)
            # The default server keeps its names on disk: the same name, and no gap marker.
            await until(
                pilot,
                lambda: app.controller.rooms[room].me == name and in_log(app, "reconnected"),
                "rejoining the restarted server",
                timeout=40,
            )
            assert not in_log(app, "may be missing") and not in_log(app, "reconnected as")
            started = f"started a local chat server on port {port}"
            await until(
                pilot,
                lambda: sum(text.startswith(started) for text in said()) == 2,
                "the second start's notice",
            )
    finally:
        await asyncio.to_thread(stop)


async def test_an_error_notice_no_send_asked_for_does_not_refuse_the_message_on_its_way() -> None:
    """On the text protocol an "error:" notice refuses the oldest message on its way, but a
    server also sends one unasked (a moderator's mute says so at once): the message on its
    way was shown refused, then, when its echo came, shown again as sent (found by a
    hostile-server run). It is shown once, sent."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send("user_victim01 joined the chat")
        async for text in ws:
            await ws.send("error: you are muted in this room: spam (5 min left)")
            await ws.send(f"user_victim01 :: {text}")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        app = make_app(f"ws://127.0.0.1:{port}", "muted")
        async with app.run_test(size=SIZE) as pilot:
            await joined(pilot, app, "muted")
            await send(pilot, "text one")
            await until(pilot, lambda: in_log(app, "you are muted"), "the notice")
            await until(pilot, lambda: not app.controller.rooms["muted"].pending, "answered")
            await pilot.pause()
            shown = [line for line in log_lines(app) if "text one" in line]
            assert len(shown) == 1 and "refused" not in shown[0], log_lines(app)
            (entry,) = [e for e in app.controller.rooms["muted"].scrollback if e.own]
            assert entry.state is SendState.SENT


async def test_an_ack_with_someone_elses_offset_hides_nothing() -> None:
    """chat.v2 acks that lie (a hostile-server run): our message acked with an offset a peer's
    message already has vanished, and the peer's was drawn as ours; a peer's message at an
    offset acked to us was never shown. Both stay on screen, each under its sender."""
    token = "user_victim01." + "x" * 22
    said = '{{"type": "message", "name": "{}", "text": "{}", "offset": {}, "time": "{}"}}'
    when = "2026-12-06T12:00:00.000Z"

    async def handler(ws: ServerConnection) -> None:
        await ws.send(v2.welcome("lied", "user_victim01", "e1", 0, token, None, False, 0))
        await ws.send(said.format("user_peer0002", "peer says ONE", 1, when))
        offsets = iter([1, 3])
        async for text in ws:
            sent = json.loads(text)
            if sent.get("type") != "send":
                continue
            offset = next(offsets)
            await ws.send(v2.ack(sent["nonce"], offset, 1_765_022_400.0))
            if offset == 3:
                await ws.send(said.format("user_peer0002", "PEER-THREE shown", 3, when))

    def select(ws: ServerConnection, offered: object) -> str:
        return v2.SUBPROTOCOL

    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select) as server:
        port = server.sockets[0].getsockname()[1]
        app = make_app(f"ws://127.0.0.1:{port}", "lied")
        async with app.run_test(size=SIZE) as pilot:
            await joined(pilot, app, "lied")
            await until(pilot, lambda: in_log(app, "peer says ONE"), "the peer's first")
            await send(pilot, "my first")
            await until(pilot, lambda: not app.controller.rooms["lied"].pending, "acked")
            await send(pilot, "my second")
            await until(pilot, lambda: in_log(app, "PEER-THREE shown"), "the peer's at 3")
            for text in ("peer says ONE", "my first", "my second"):
                await until(pilot, lambda t=text: in_log(app, t), text)
            entries = {e.text: e for e in app.controller.rooms["lied"].scrollback if e.sender}
            assert not entries["peer says ONE"].own and entries["my first"].own
            assert entries["peer says ONE"].sender == "user_peer0002"
