"""Direct messages (issue 15), on the screen, against the real server: someone's first message
opens the conversation in the sidebar, under the rooms, with unread and mention counts; /msg
and /query open it from our side; it follows its person across a nick change."""

from __future__ import annotations

import secrets

from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v2 import change_nick
from chat_testing.servers import RunningServer
from tests.server.wsclients import V2Member, join_v2
from tests.tui.app_helpers import (
    in_log,
    joined,
    log_lines,
    make_app,
    members_lines,
    room_name,
    send,
    sidebar_lines,
    status_line,
    until,
)

WIDE = (140, 30)


async def person(server: RunningServer, room: str, prefix: str) -> V2Member:
    return await join_v2(server.chat_url(room), f"name={prefix}{secrets.token_hex(3)}")


async def conversation(server: RunningServer, me: V2Member, peer: str) -> V2Member:
    return await join_v2(f"{server.ws_url}/chat/@{peer}", join_query(JoinRequest(resume=me.token)))


async def test_a_first_message_opens_the_conversation_under_the_rooms(
    shared_server: RunningServer,
) -> None:
    room, other_room = room_name("dm"), room_name("dm")
    app = make_app(shared_server, room, other_room)
    async with app.run_test(size=WIDE) as pilot:
        me = await joined(pilot, app, room)
        await joined(pilot, app, other_room)
        alice = await person(shared_server, room_name("dm"), "Alice")
        to_me = await conversation(shared_server, alice, me)
        try:
            await to_me.send("psst", "p1")
            entry = f"@{alice.name}"
            await until(pilot, lambda: any(entry in line for line in sidebar_lines(app)), "opened")
            lines = sidebar_lines(app)
            row = next(i for i, line in enumerate(lines) if entry in line)
            assert row > max(i for i, line in enumerate(lines) if other_room in line)
            # One unread message, and in a conversation every message counts as a mention.
            await until(pilot, lambda: "1 @" in sidebar_lines(app)[row], f"counts: {lines}")
            await send(pilot, f"/query {alice.name}")
            await until(pilot, lambda: in_log(app, "psst"), "the message in the conversation")
            assert entry in status_line(app)
            # Its members: the two of us, without asking the server for a list.
            panel = members_lines(app)
            assert panel[0].strip() == "conversation" and alice.name in " ".join(panel)
            await send(pilot, "hello alice")
            said = await to_me.recv_until(lambda f: f.get("text") == "hello alice")
            assert said[-1]["name"] == me
        finally:
            await to_me.close()
            await alice.close()


async def test_msg_sends_without_switching_and_follows_a_nick_change(
    shared_server: RunningServer,
) -> None:
    room = room_name("dm")
    app = make_app(shared_server, room)
    async with app.run_test(size=WIDE) as pilot:
        await joined(pilot, app, room)
        bob = await person(shared_server, room, "Bob")
        try:
            await send(pilot, f"/msg {bob.name} are you there?")
            told = await bob.recv_until(lambda f: f.get("type") == "direct")
            assert told[-1]["name"] == app.controller.current.me  # type: ignore[union-attr]
            assert app.controller.active == room  # /msg does not switch
            entry = f"@{bob.name}"
            await until(pilot, lambda: any(entry in line for line in sidebar_lines(app)), "opened")
            # Bob changes his name (seen in the room we share): the conversation follows.
            new = f"Robert{secrets.token_hex(3)}"
            await bob.ws.send(change_nick(new))
            followed = f"@{new}"
            await until(pilot, lambda: any(followed in s for s in sidebar_lines(app)), "follows")
            assert not any(entry in line for line in sidebar_lines(app))
            await send(pilot, f"/query {new}")
            await until(pilot, lambda: in_log(app, "are you there?"), "our message is there")
            # It still works both ways under the new name (nothing stuck pending).
            me = app.controller.current.me  # type: ignore[union-attr]
            renamed_token = f"{new}.{bob.token.partition('.')[2]}"
            to_me = await join_v2(
                f"{shared_server.ws_url}/chat/@{me}",
                join_query(JoinRequest(resume=renamed_token)),
            )
            try:
                await to_me.send("yes, renamed", "r1")
                await until(pilot, lambda: in_log(app, "yes, renamed"), "bob's reply")
                await send(pilot, "good")
                said = await to_me.recv_until(lambda f: f.get("text") == "good")
                assert said[-1]["name"] == me
                await until(pilot, lambda: "pending" not in status_line(app), "nothing pending")
            finally:
                await to_me.close()
        finally:
            await bob.close()


async def test_a_conversation_opened_in_another_case_takes_the_persons_name(
    shared_server: RunningServer,
) -> None:
    """``/query alice`` for Alice: once she writes, the conversation is ``@Alice`` (its
    logs were split between ``@alice`` and ``@Alice``, by how it was opened)."""
    room = room_name("dm")
    app = make_app(shared_server, room)
    async with app.run_test(size=WIDE) as pilot:
        me = await joined(pilot, app, room)
        alice = await person(shared_server, room, "Alice")
        try:
            await send(pilot, f"/query {alice.name.lower()}")
            await until(pilot, lambda: f"@{alice.name.lower()}" in status_line(app), "opened")
            to_me = await conversation(shared_server, alice, me)
            try:
                await to_me.send("it is Alice", "a1")
                await until(pilot, lambda: f"@{alice.name}" in status_line(app), "her name")
                assert list(app.controller.rooms) == [room, f"@{alice.name}"]
                assert in_log(app, "it is Alice")
            finally:
                await to_me.close()
        finally:
            await alice.close()


async def test_a_message_to_nobody_is_said_not_sent(shared_server: RunningServer) -> None:
    room = room_name("dm")
    app = make_app(shared_server, room)
    async with app.run_test(size=WIDE) as pilot:
        await joined(pilot, app, room)
        nobody = f"Nobody{secrets.token_hex(3)}"
        await send(pilot, f"/msg {nobody} hello?")
        said = f"1 message(s) to @{nobody} not sent"
        await until(pilot, lambda: in_log(app, said), "said where we are")
        assert in_log(app, f"{nobody} is not here"), log_lines(app)
        await send(pilot, f"/query {nobody}")
        await until(pilot, lambda: in_log(app, "(refused) hello?"), "marked refused")
