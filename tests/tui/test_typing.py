"""Who is typing (issue 15), on the screen, against the real server: the status line says who,
and clears when they speak; typing in the input box tells the others."""

from __future__ import annotations

from chat_protocol.v2 import TYPING_FRAME
from chat_testing.servers import RunningServer
from tests.server.wsclients import join_v2
from tests.tui.app_helpers import (
    SIZE,
    input_line,
    joined,
    make_app,
    room_name,
    status_line,
    type_text,
    until,
)


async def test_the_status_line_says_who_is_typing_until_they_speak(
    shared_server: RunningServer,
) -> None:
    room = room_name("typing")
    app = make_app(shared_server, room)
    async with app.run_test(size=(120, 30)) as pilot:
        me = await joined(pilot, app, room)
        peer = await join_v2(shared_server.chat_url(room))
        try:
            await peer.ws.send(TYPING_FRAME)
            shown = f"{peer.name} is typing…"
            await until(pilot, lambda: shown in status_line(app), "the typist on screen")
            await peer.send("there", "n1")
            await until(pilot, lambda: shown not in status_line(app), "gone once they spoke")
            # And ours reaches them as we type (once, however many keys).
            await type_text(pilot, "hello")
            frames = await peer.recv_until(lambda f: f.get("type") == "typing")
            assert frames[-1] == {"type": "typing", "name": me}
        finally:
            await peer.close()


async def test_typing_off_sends_nothing(shared_server: RunningServer) -> None:
    room = room_name("typing")
    app = make_app(shared_server, room, typing=False)
    async with app.run_test(size=SIZE) as pilot:
        me = await joined(pilot, app, room)
        peer = await join_v2(shared_server.chat_url(room))
        try:
            await type_text(pilot, "hello")
            await pilot.press("enter")
            frames = await peer.recv_until(lambda f: f.get("type") == "message")
            assert [f["type"] for f in frames] == ["message"] and frames[0]["name"] == me
        finally:
            await peer.close()


async def test_a_draft_shown_again_is_not_typing(shared_server: RunningServer) -> None:
    first, second = room_name("typing"), room_name("typing")
    app = make_app(shared_server, first, second)
    async with app.run_test(size=SIZE) as pilot:
        me = await joined(pilot, app, first)
        await joined(pilot, app, second)
        await pilot.press("alt+2")
        await until(pilot, lambda: app.controller.active == second, "in the second room")
        app.controller.rooms[first].draft = "draft"  # as if typed there earlier
        peer = await join_v2(shared_server.chat_url(first))
        try:
            await pilot.press("alt+1")  # back: the draft is shown again, not typed
            await until(pilot, lambda: input_line(app).strip() == "draft", "the draft shown")
            await peer.send("marker", "m1")
            frames = await peer.recv_until(lambda f: f.get("type") == "message")
            assert {"type": "typing", "name": me} not in frames
            await type_text(pilot, "x")  # typing on is typing
            frames = await peer.recv_until(lambda f: f.get("type") == "typing")
            assert frames[-1] == {"type": "typing", "name": me}
        finally:
            await peer.close()
