"""History, recovery and one stable name in chat-tui (issue 7), read from the screen.

Real servers and connections. A gate (a TcpProxy) between the app and the server drops the app's
connection while the server stays up, and holds its reconnect until the test lets it through,
so that what the app missed is known exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import stat
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chat_protocol.limits import MAX_MESSAGE_CHARS
from chat_protocol.v1 import SEPARATOR, format_join, format_message
from chat_protocol.v2 import parse_time
from chat_testing.proxy import TcpProxy
from chat_testing.servers import RunningServer
from chat_tui.app import ChatApp
from chat_tui.identity import TOKENS_FILE, TokenStore
from chat_tui.rooms import RoomState, local_time
from chat_tui.text_layout import PENDING_MARK, REFUSED_MARK
from chat_tui.widgets.message_log import MessageLog
from tests.server.wsclients import V2Member, join, join_v2
from tests.tui.app_helpers import (
    FIXED_NOW,
    SIZE,
    app_config,
    in_log,
    in_log_wrapped,
    joined,
    log_lines,
    room_name,
    send,
    style_at,
    until,
)

_nonces = itertools.count()


class Clock:
    """The app's wall clock, moved by the test (the gap marker names two times)."""

    def __init__(self) -> None:
        self.now = FIXED_NOW

    def __call__(self) -> datetime:
        return self.now


def make_app(
    url: str,
    *rooms: str,
    clock: Callable[[], datetime] | None = None,
    token_store: TokenStore | None = None,
    **options: Any,
) -> ChatApp:
    config = app_config(url, *rooms, **options)
    return ChatApp(config, clock=clock or Clock(), token_store=token_store)


def row_of(app: ChatApp, text: str) -> int:
    """The one row of the log showing ``text``; fails if none or several do."""
    rows = [i for i, line in enumerate(log_lines(app)) if text in line]
    assert len(rows) == 1, (text, rows, log_lines(app))
    return rows[0]


def brightness(app: ChatApp, row: int, text: str) -> int:
    """How bright ``text`` on ``row`` of the log is drawn (Textual renders dim by blending the
    colour towards the background, so dimmed text is darker)."""
    style = style_at(app, app.query_one(MessageLog), row, text)
    assert style.color is not None and style.color.triplet is not None
    return sum(style.color.triplet)


def shown_time(frame: dict[str, Any], today: datetime | None = FIXED_NOW) -> str:
    """A chat.v2 frame's server time as the log shows it: local, "%H:%M", for history with
    the date when it is not ``today`` by the app's clock (the tests' clock is years before the
    server's); ``today`` None: a live message, never dated."""
    moment = local_time(parse_time(frame["time"]))
    dated = today is not None and moment.date() != today.date()
    return moment.strftime("%b %d %H:%M" if dated else "%H:%M")


async def say(member: V2Member, *texts: str) -> list[dict[str, Any]]:
    """Send ``texts`` and return their message frames as the room got them."""
    frames = []
    for text in texts:
        nonce = f"t{next(_nonces)}"
        await member.send(text, nonce)
        seen = await member.recv_until(lambda f, t=text: f["type"] == "message" and f["text"] == t)
        frames.append(seen[-1])
    return frames


async def peer_says(server: RunningServer, room: str, text: str) -> None:
    peer = await join_v2(server.chat_url(room))
    try:
        await say(peer, text)
    finally:
        await peer.close()


async def drop_and_hold(pilot: Any, app: ChatApp, gate: TcpProxy, room: str) -> None:
    """Cut the app's connection and hold its reconnect at the gate."""
    gate.hold()
    gate.cut()
    await until(pilot, lambda: app.controller.rooms[room].lost, "the app to notice the drop")


async def test_history_is_dimmed_above_the_joined_line_with_the_servers_times(
    shared_server: RunningServer,
) -> None:
    room = room_name("hist")
    peer = await join_v2(shared_server.chat_url(room))
    try:
        said = await say(peer, "said first", "said second")
        app = make_app(shared_server.ws_url, room)
        async with app.run_test(size=SIZE) as pilot:
            name = await joined(pilot, app, room)
            joined_row = row_of(app, f"joined {room} as {name}")
            rows = [row_of(app, frame["text"]) for frame in said]
            assert rows == sorted(rows) and rows[-1] < joined_row
            for row, frame in zip(rows, said, strict=True):
                line = log_lines(app)[row]
                assert line.startswith(f"{shown_time(frame)} {peer.name} {frame['text']}")
            # What is said after the join is live: below the line, not dimmed.
            live = (await say(peer, "said after"))[0]
            await until(pilot, lambda: in_log(app, "said after"), "the live message")
            row = row_of(app, "said after")
            assert row > joined_row
            assert log_lines(app)[row].startswith(shown_time(live, today=None) + " ")
            for history_row, frame in zip(rows, said, strict=True):
                assert brightness(app, history_row, frame["text"]) < brightness(
                    app, row, "said after"
                )
        # history = 0: none of it.
        bare = make_app(shared_server.ws_url, room, history=0)
        async with bare.run_test(size=SIZE) as pilot:
            await joined(pilot, bare, room)
            assert not in_log(bare, "said first") and not in_log(bare, "said after")
        # On the day it was said, the time alone; the date only for other days (above).
        today = make_app(shared_server.ws_url, room, clock=datetime.now)
        async with today.run_test(size=SIZE) as pilot:
            await joined(pilot, today, room)
            row = row_of(today, said[0]["text"])
            stamp = shown_time(said[0], datetime.now())
            assert len(stamp) == 5 and log_lines(today)[row].startswith(f"{stamp} {peer.name}")
    finally:
        await peer.close()


async def test_a_dropped_connection_recovers_the_gap_in_place_under_the_same_name(
    shared_server: RunningServer,
) -> None:
    room, other = room_name("gap"), room_name("gap")
    peer = await join_v2(shared_server.chat_url(room))
    try:
        with TcpProxy([shared_server.port]) as gate:
            app = make_app(gate.ws_url, room, other)
            async with app.run_test(size=SIZE) as pilot:
                name = await joined(pilot, app, room)
                assert await joined(pilot, app, other) == name  # one name in every room
                await say(peer, "before the drop")
                await until(pilot, lambda: in_log(app, "before the drop"), "the first message")
                await drop_and_hold(pilot, app, gate, room)
                missed = ["missed one", "missed two", "missed three"]
                await say(peer, *missed)
                gate.release()
                app.controller.reconnect()
                await until(pilot, lambda: in_log(app, "reconnected"), "the reconnect")
                assert (
                    app.controller.rooms[room].me == name and app.controller.rooms[other].me == name
                )
                rows = [row_of(app, text) for text in ["before the drop", *missed]]
                assert rows == sorted(rows)
                assert row_of(app, "connection lost") < rows[1]
                assert rows[-1] < row_of(app, "reconnected")
                text = "\n".join(log_lines(app))
                assert "reconnected as" not in text and "may be missing" not in text
                for line in (log_lines(app)[row] for row in rows[1:]):
                    assert f" {peer.name} " in line  # as said, not dimmed history
    finally:
        await peer.close()


async def test_a_restarted_server_gap_is_marked_then_its_history_shown(server_factory) -> None:
    server: RunningServer = server_factory(rate_limit=0)
    room = room_name("restart")
    clock = Clock()
    restarted: RunningServer | None = None
    try:
        with TcpProxy([server.port]) as gate:
            app = make_app(gate.ws_url, room, clock=clock)
            async with app.run_test(size=SIZE) as pilot:
                await joined(pilot, app, room)
                peer = await join_v2(server.chat_url(room))
                await say(peer, "before the restart")
                await until(pilot, lambda: in_log(app, "before the restart"), "the first one")
                gate.hold()
                await peer.close()
                # Memory broker: a new epoch, no history.
                restarted = await asyncio.to_thread(server.restart)
                await until(pilot, lambda: app.controller.rooms[room].lost, "the app to notice")
                clock.now = FIXED_NOW + timedelta(minutes=7)
                await peer_says(restarted, room, "after the restart")
                gate.release()
                app.controller.reconnect()
                await until(pilot, lambda: in_log(app, "reconnected"), "the reconnect")
                marker = row_of(app, "messages from 12:34 to 12:41 may be missing")
                after = row_of(app, "after the restart")
                assert row_of(app, "before the restart") < marker < after
                assert after < row_of(app, "reconnected")
                await peer_says(restarted, room, "live again")
                await until(pilot, lambda: in_log(app, "live again"), "a live message")
                live = brightness(app, row_of(app, "live again"), "live again")
                assert brightness(app, after, "after the restart") < live
    finally:
        if restarted is not None:
            restarted.stop()


async def test_messages_typed_offline_are_pending_until_acked_and_reach_the_room_once(
    shared_server: RunningServer,
) -> None:
    room = room_name("pending")
    with TcpProxy([shared_server.port]) as gate:
        app = make_app(gate.ws_url, room, clock=datetime.now)  # notes and messages in one time
        async with app.run_test(size=SIZE) as pilot:
            name = await joined(pilot, app, room)
            listener = await join(shared_server.chat_url(room))
            await drop_and_hold(pilot, app, gate, room)
            typed = ["typed offline 1", "typed offline 2", "typed offline 3"]
            for text in typed:
                await send(pilot, text)
            await until(
                pilot,
                lambda: all(
                    any(PENDING_MARK + t in line for line in log_lines(app)) for t in typed
                ),
                "three pending messages",
            )
            gate.release()
            app.controller.reconnect()
            await until(pilot, lambda: not app.controller.rooms[room].pending, "the acks")
            await until(pilot, lambda: not in_log(app, PENDING_MARK), "no message shown pending")
            rows = [row_of(app, f"{name} {text}") for text in typed]
            assert rows == sorted(rows)
            # Acknowledged, they have the room's time and place: after the reconnect, in time
            # order (typed offline, they were above it, pending).
            assert row_of(app, "── reconnected ──") < rows[0]
            frames = await listener.recv_until(lambda f: f.endswith(typed[-1]))
            got = [f.partition(SEPARATOR)[2] for f in frames if f.startswith(name + " ::")]
            assert got == typed
            # And a message the server refuses (too long) is shown refused, by its nonce: as
            # from a server that does not say its limit (this one does: the client checks).
            app.controller.rooms[room].max_chars = None
            app.controller.send(app.controller.rooms[room], "x" * (MAX_MESSAGE_CHARS + 1))
            await until(pilot, lambda: in_log(app, "was not sent"), "the server's error")
            for _ in range(10):  # the message is longer than the screen: up to its first row
                if in_log(app, REFUSED_MARK):
                    break
                await pilot.press("pageup")
            assert in_log(app, f"{name} {REFUSED_MARK}xxx")
            await listener.close()


async def test_keep_name_brings_the_name_back_after_a_restart_of_the_app(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    room = room_name("keep")
    store = TokenStore(tmp_path / "state" / TOKENS_FILE)
    first = make_app(shared_server.ws_url, room, token_store=store)
    async with first.run_test(size=SIZE) as pilot:
        name = await joined(pilot, first, room)
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not first.is_running, "the app to exit")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    again = make_app(shared_server.ws_url, room, token_store=store)
    async with again.run_test(size=SIZE) as pilot:
        assert await joined(pilot, again, room) == name
        assert in_log(again, f"joined {room} as {name}")
    forgetful = make_app(shared_server.ws_url, room, token_store=store, keep_name=False)
    async with forgetful.run_test(size=SIZE) as pilot:
        assert await joined(pilot, forgetful, room) != name
    assert store.load(shared_server.ws_url) is None  # keep_name off forgets the kept token


async def test_a_name_chosen_in_an_earlier_run_is_asked_for_where_the_server_forgot_it(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    """/nick Robert in an earlier run keeps the token under that name; a server that does not
    know the token (Redis restarted empty, here one that never saw it) gave a generated name
    to an app started without --nick. It asks for the name, as after a /nick in this run."""
    room = room_name("keep")
    chosen = f"Robert{secrets.token_hex(3)}"
    store = TokenStore(tmp_path / "state" / TOKENS_FILE)
    store.save(shared_server.ws_url, f"{chosen}.{secrets.token_urlsafe(16)}")
    app = make_app(shared_server.ws_url, room, token_store=store)
    async with app.run_test(size=SIZE) as pilot:
        assert await joined(pilot, app, room) == chosen


async def test_a_second_chat_tui_beside_the_first_gets_a_name_of_its_own(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    # Same user, same state directory, both running: sharing the kept name in one room would
    # make each close the other ("replaced by a newer connection") for as long as both run.
    room = room_name("twice")
    path = tmp_path / "state" / TOKENS_FILE
    first = make_app(shared_server.ws_url, room, token_store=TokenStore(path))
    async with first.run_test(size=SIZE) as pilot:
        name = await joined(pilot, first, room)
        second = make_app(shared_server.ws_url, room, token_store=TokenStore(path))
        async with second.run_test(size=SIZE) as other:
            assert await joined(other, second, room) != name
            assert in_log(second, "another chat-tui of yours is running")
        assert first.controller.rooms[room].state is RoomState.CONNECTED
        assert not in_log(first, "replaced")


async def test_quit_with_unsent_messages_says_how_many_then_quits_when_asked_again(
    shared_server: RunningServer,
) -> None:
    room = room_name("quit")
    with TcpProxy([shared_server.port]) as gate:
        app = make_app(gate.ws_url, room)
        async with app.run_test(size=SIZE) as pilot:
            await joined(pilot, app, room)
            await drop_and_hold(pilot, app, gate, room)
            await send(pilot, "never sent one")
            await send(pilot, "never sent two")
            await pilot.press("ctrl+q")
            await until(
                pilot,
                lambda: in_log_wrapped(
                    app, f"2 messages are not confirmed by the server yet (pending in {room})"
                ),
                "the warning",
            )
            assert app.is_running
            await pilot.press("ctrl+q")
            await until(pilot, lambda: not app.is_running, "the app to exit")


async def test_quit_right_after_sending_waits_for_the_ack(shared_server: RunningServer) -> None:
    room = room_name("quit")
    listener = await join(shared_server.chat_url(room))
    app = make_app(shared_server.ws_url, room)
    async with app.run_test(size=SIZE) as pilot:
        name = await joined(pilot, app, room)
        await send(pilot, "the last word")
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not app.is_running, "the app to exit")
        assert not in_log(app, "not confirmed by the server yet")
    frames = await listener.recv_until(lambda f: f.endswith("the last word"))
    assert frames[-1] == format_message(name, "the last word")
    await listener.close()


async def test_a_server_without_chat_v2_gets_the_text_protocol_and_everything_works(
    shared_server: RunningServer,
) -> None:
    """The server behind a proxy that drops Sec-WebSocket-Protocol: it never selects chat.v2,
    so it speaks the original protocol, as a server from before chat.v2 does."""
    room = room_name("text")
    with TcpProxy([shared_server.port], strip_subprotocols=True) as proxy:
        app = make_app(f"ws://127.0.0.1:{proxy.port}", room)
        async with app.run_test(size=SIZE) as pilot:
            name = await joined(pilot, app, room)
            assert not app.controller.links[room].connection.v2
            assert in_log(app, f"joined {room} as {name}")
            peer = await join(shared_server.chat_url(room))
            await peer.ws.send("hello from a text client")
            await until(pilot, lambda: in_log(app, f"{peer.name} hello from a text client"), "it")
            await send(pilot, "hello back")
            await until(pilot, lambda: in_log(app, f"{name} hello back"), "our message")
            await until(pilot, lambda: not app.controller.rooms[room].pending, "its echo")
            assert (await peer.recv_until(lambda f: f.endswith("hello back")))[-1] == (
                f"{name} :: hello back"
            )
            # A drop: the text protocol reconnects under a new name, and says so.
            proxy.cut()
            await until(pilot, lambda: in_log(app, "reconnected as"), "the reconnect")
            assert app.controller.rooms[room].state is RoomState.CONNECTED
            await peer.close()


async def test_a_message_published_before_a_drop_but_not_acked_is_shown_and_sent_once(
    shared_server: RunningServer,
) -> None:
    """The ack is lost with the connection: the message comes back in the recovery, and its
    re-send (same nonce) is acknowledged with the same offset, never published again."""
    room = room_name("once")
    listener = await join(shared_server.chat_url(room))
    with TcpProxy([shared_server.port]) as relay:
        app = make_app(f"ws://127.0.0.1:{relay.port}", room)
        async with app.run_test(size=SIZE) as pilot:
            name = await joined(pilot, app, room)
            await listener.recv_until(lambda f: f == format_join(name))
            relay.blackhole(lambda hello: True)  # nothing more reaches the app ...
            await send(pilot, "said exactly once")
            # ... but the server published it.
            assert (await listener.recv()) == format_message(name, "said exactly once")
            assert in_log(app, f"{PENDING_MARK}said exactly once")
            relay.cut()
            await until(pilot, lambda: in_log(app, "reconnected"), "the reconnect")
            await until(pilot, lambda: not app.controller.rooms[room].pending, "the repeated ack")
            await send(pilot, "and the next one")
            await until(pilot, lambda: in_log(app, f"{name} and the next one"), "the next one")
            assert [line for line in log_lines(app) if "said exactly once" in line] == [
                line for line in log_lines(app) if f"{name} said exactly once" in line
            ]
            assert sum("said exactly once" in line for line in log_lines(app)) == 1
            assert not in_log(app, PENDING_MARK)
            frames = await listener.recv_until(lambda f: f.endswith("and the next one"))
            assert [f for f in frames if SEPARATOR in f] == [
                format_message(name, "and the next one")
            ]
    await listener.close()
