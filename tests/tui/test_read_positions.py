"""Where you stopped reading (issue 15), on the screen: what chat-tui saw is kept by the server
for its token, so that the next start shows the right unread counts and the "new messages"
divider where the user stopped, not where the app last ran."""

from __future__ import annotations

from pathlib import Path

from chat_testing.servers import RunningServer
from chat_tui.identity import TOKENS_FILE, TokenStore
from chat_tui.widgets.message_log import DIVIDER_TEXT
from tests.server.wsclients import join
from tests.tui.app_helpers import (
    SIZE,
    in_log,
    joined,
    room_name,
    screen_lines,
    sidebar_line,
    until,
)
from tests.tui.test_history import make_app


def row(app: object, text: str) -> int:
    rows = screen_lines(app)
    return next(i for i, line in enumerate(rows) if text in line)


async def test_a_restart_shows_unread_and_the_divider_where_the_user_stopped(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    here, there = room_name("here"), room_name("there")
    store = TokenStore(tmp_path / "state" / TOKENS_FILE)
    peer_here = await join(shared_server.chat_url(here))
    peer_there = await join(shared_server.chat_url(there))
    try:
        first = make_app(shared_server.ws_url, here, there, token_store=store)
        async with first.run_test(size=SIZE) as pilot:
            await joined(pilot, first, here)
            await joined(pilot, first, there)
            for n in (1, 2):
                await peer_here.ws.send(f"here {n}")
                await peer_there.ws.send(f"there {n}")
            await until(pilot, lambda: in_log(first, "here 2"), "seen in the active room")
            rooms = first.controller.rooms
            await until(pilot, lambda: rooms[here].read_reported >= 2, "here's read reported")
            await pilot.press("alt+2")  # look at the other room too
            await until(pilot, lambda: in_log(first, "there 2"), "seen in the other room")
            await until(pilot, lambda: rooms[there].read_reported >= 2, "there's read reported")
            await pilot.press("alt+1")
            await pilot.press("ctrl+q")
            await until(pilot, lambda: not first.is_running, "the app to exit")
        # Said while the app was not running.
        await peer_here.ws.send("here 3")
        for n in (3, 4):
            await peer_there.ws.send(f"there {n}")

        again = make_app(shared_server.ws_url, here, there, token_store=store)
        async with again.run_test(size=SIZE) as pilot:
            await joined(pilot, again, here)
            await joined(pilot, again, there)
            await until(pilot, lambda: in_log(again, "here 3"), "the history")
            # The active room: the divider above what was said since the user last read.
            await until(pilot, lambda: any(DIVIDER_TEXT in line for line in screen_lines(again)),
                        "the divider")  # fmt: skip
            assert row(again, "here 2") < row(again, DIVIDER_TEXT) < row(again, "here 3")
            # The other room: its two unread messages counted in the sidebar.
            await until(pilot, lambda: again.controller.rooms[there].unread == 2, "2 unread")
            assert "2" in sidebar_line(again, there).split()
    finally:
        await peer_here.close()
        await peer_there.close()


async def test_more_than_a_screen_unread_at_a_start_opens_at_the_divider(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    """More than a screen said while the app was not running: the log opened at the newest,
    with the divider far above and nothing to say so; switching rooms went to the divider
    (found by a new-user run)."""
    here = room_name("more")
    store = TokenStore(tmp_path / "state" / TOKENS_FILE)
    peer = await join(shared_server.chat_url(here))
    try:
        first = make_app(shared_server.ws_url, here, token_store=store)
        async with first.run_test(size=SIZE) as pilot:
            await joined(pilot, first, here)
            await peer.ws.send("read before")
            await until(pilot, lambda: in_log(first, "read before"), "seen")
            room = first.controller.rooms[here]
            await until(pilot, lambda: room.read_reported >= 1, "the read reported")
            await pilot.press("ctrl+q")
            await until(pilot, lambda: not first.is_running, "the app to exit")
        for n in range(60):
            await peer.ws.send(f"while away {n:02d}")

        again = make_app(shared_server.ws_url, here, token_store=store, history=100)
        async with again.run_test(size=SIZE) as pilot:
            await joined(pilot, again, here)
            await until(
                pilot,
                lambda: any(DIVIDER_TEXT in line for line in screen_lines(again)),
                "the divider on screen",
            )
            assert row(again, DIVIDER_TEXT) < row(again, "while away 00")
            assert not in_log(again, "while away 59")  # below: the newest are counted
    finally:
        await peer.close()
