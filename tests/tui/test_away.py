"""Away (issue 15), on the screen, against the real server: /away and /back tell every room,
others' away shows in the log, the members panel and /who, ours in the status line."""

from __future__ import annotations

import asyncio

from chat_protocol.query import JoinRequest, join_query
from chat_protocol.v2 import AWAY_EVERY, BACK_FRAME, away
from chat_testing.servers import RunningServer
from tests.server.wsclients import join_v2
from tests.tui.app_helpers import (
    in_log,
    joined,
    make_app,
    members_lines,
    room_name,
    send,
    status_line,
    until,
)

WIDE = (140, 30)  # the members panel shows at this width


async def test_others_away_and_back_in_the_log_and_the_members_panel(
    shared_server: RunningServer,
) -> None:
    room = room_name("away")
    peer = await join_v2(shared_server.chat_url(room))
    try:
        await peer.ws.send(away("lunch"))  # away before we come: the listing says so
        await peer.recv_until(lambda f: f.get("type") == "away")
        app = make_app(shared_server, room)
        async with app.run_test(size=WIDE) as pilot:
            await joined(pilot, app, room)
            marked = f"{peer.name} (away)"
            await until(pilot, lambda: marked in " ".join(members_lines(app)), "the panel")
            await asyncio.sleep(AWAY_EVERY)  # away and back: at most once a second (the rule)
            await peer.ws.send(BACK_FRAME)
            await until(pilot, lambda: in_log(app, f"{peer.name} is back"), "back in the log")
            await until(pilot, lambda: marked not in " ".join(members_lines(app)), "unmarked")
            await asyncio.sleep(AWAY_EVERY)
            await peer.ws.send(away("a walk"))
            await until(pilot, lambda: in_log(app, f"{peer.name} is away: a walk"), "the log")
            await send(pilot, "/who")
            await until(pilot, lambda: in_log(app, f"{peer.name} (away: a walk)"), "/who")
    finally:
        await peer.close()


async def test_away_and_back_of_ours_reach_every_room(shared_server: RunningServer) -> None:
    first, second = room_name("away"), room_name("away")
    app = make_app(shared_server, first, second)
    async with app.run_test(size=WIDE) as pilot:
        me = await joined(pilot, app, first)
        await joined(pilot, app, second)
        peer = await join_v2(shared_server.chat_url(second))  # in the room we are not looking at
        try:
            await send(pilot, "/away back at 3")
            frame = (await peer.recv_until(lambda f: f.get("type") == "away"))[-1]
            assert (frame["name"], frame["message"]) == (me, "back at 3")
            await until(pilot, lambda: f"you are {me} (away)" in status_line(app), "status line")
            assert in_log(app, "you are away: back at 3")  # ours, said to us as ours
            await asyncio.sleep(AWAY_EVERY)
            await send(pilot, "/back")
            assert (await peer.recv_until(lambda f: f.get("type") == "back"))[-1]["name"] == me
            await until(pilot, lambda: "(away)" not in status_line(app), "status line again")
            assert in_log(app, "you are back")
            # Back when not away: said here, not to every room.
            await send(pilot, "/back")
            await until(pilot, lambda: in_log(app, "you are not away"), "not away")
        finally:
            await peer.close()


async def test_ours_shows_in_a_conversation_opened_after_we_said_it(
    shared_server: RunningServer,
) -> None:
    """Away, then someone writes to us: their conversation opens having never heard our away
    (the server tells the rooms we are in when it changes). Its status line said we were not
    away, while every room said we were."""
    room = room_name("away")
    app = make_app(shared_server, room)
    async with app.run_test(size=WIDE) as pilot:
        me = await joined(pilot, app, room)
        await send(pilot, "/away lunch")
        await until(pilot, lambda: f"you are {me} (away)" in status_line(app), "status line")
        peer = await join_v2(shared_server.chat_url(room_name("away")))
        to_me = await join_v2(
            f"{shared_server.ws_url}/chat/@{me}", join_query(JoinRequest(resume=peer.token))
        )
        try:
            await to_me.send("are you there?", "n1")
            await until(pilot, lambda: f"@{peer.name}" in app.controller.rooms, "opened")
            await send(pilot, f"/query {peer.name}")
            await until(pilot, lambda: f"@{peer.name}" in status_line(app), "in it")
            assert f"you are {me} (away)" in status_line(app)
        finally:
            await to_me.close()
            await peer.close()
