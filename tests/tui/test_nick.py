"""Nick changes (issue 15), on the screen, against the real server: /nick renames us in every
room (status line, log, our token), others' changes show in the log, the members panel and tab
completion, and a taken name is an error that changes nothing."""

from __future__ import annotations

import secrets

from chat_protocol.v2 import change_nick
from chat_testing.servers import RunningServer
from tests.server.wsclients import join, join_v2
from tests.tui.app_helpers import (
    in_log,
    input_line,
    joined,
    log_lines,
    make_app,
    members_lines,
    room_name,
    send,
    status_line,
    type_text,
    until,
)

WIDE = (140, 30)  # the members panel shows at this width


def fresh_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


async def test_our_nick_change_reaches_every_room_and_our_token(
    shared_server: RunningServer,
) -> None:
    first, second = room_name("nick"), room_name("nick")
    app = make_app(shared_server, first, second)
    async with app.run_test(size=WIDE) as pilot:
        me = await joined(pilot, app, first)
        await joined(pilot, app, second)
        peer = await join(shared_server.chat_url(second))  # a text client in the other room
        try:
            new = fresh_name("Neo")
            await send(pilot, f"/nick {new}")
            await until(pilot, lambda: f"you are {new}" in status_line(app), "status line")
            await until(pilot, lambda: in_log(app, f"you are now known as {new}"), "the log")
            assert await peer.recv() == f"{me} is now known as {new}"
            # The token the app keeps follows: a restart would come back as the new name.
            assert app.controller.identity.token is not None
            assert app.controller.identity.token.startswith(f"{new}.")
            await send(pilot, f"/join {second}")  # switch to the peer's room
            await send(pilot, "hello as new")
            assert await peer.recv() == f"{new} :: hello as new"
            # Once on our screen too: our frame under the new name is our acked message (it
            # was shown twice, and logged twice, after every /nick).
            await send(pilot, "and once more")
            assert await peer.recv() == f"{new} :: and once more"
            await until(pilot, lambda: not app.controller.rooms[second].pending, "acked")
            await pilot.pause()
            for said in ("hello as new", "and once more"):
                assert sum(said in line for line in log_lines(app)) == 1, log_lines(app)
        finally:
            await peer.close()


async def test_others_nick_changes_show_in_the_log_panel_and_completion(
    shared_server: RunningServer,
) -> None:
    room = room_name("nick")
    peer = await join_v2(shared_server.chat_url(room))
    app = make_app(shared_server, room)
    try:
        async with app.run_test(size=WIDE) as pilot:
            await joined(pilot, app, room)
            await until(pilot, lambda: peer.name in " ".join(members_lines(app)), "the panel")
            new = fresh_name("Zed")
            await peer.ws.send(change_nick(new))
            await until(pilot, lambda: in_log(app, f"{peer.name} is now known as {new}"), "log")
            await until(pilot, lambda: new in " ".join(members_lines(app)), "renamed in the panel")
            assert peer.name not in " ".join(members_lines(app))
            # Tab completion offers the new name.
            await type_text(pilot, new[:3])
            await pilot.press("tab")
            assert input_line(app) == f"{new}:"  # at the start of a line, as IRC clients do
    finally:
        await peer.close()


async def test_a_taken_name_is_an_error_and_we_keep_ours(shared_server: RunningServer) -> None:
    room = room_name("nick")
    taken = fresh_name("Tak")
    holder = await join(shared_server.chat_url(room) + f"?name={taken}")
    app = make_app(shared_server, room)
    try:
        async with app.run_test(size=WIDE) as pilot:
            me = await joined(pilot, app, room)
            await send(pilot, f"/nick {taken.upper()}")
            await until(pilot, lambda: in_log(app, f"name taken: {taken.upper()}"), "the error")
            assert f"you are {me}" in status_line(app)
            await send(pilot, "/nick 1bad")
            await until(pilot, lambda: in_log(app, "invalid name '1bad'"), "checked locally")
    finally:
        await holder.close()
