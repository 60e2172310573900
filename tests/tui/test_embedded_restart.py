"""The default server (the embedded broker) killed and started again, as chat-tui sees it: its
name back, the room recovered exactly, "reconnected" and no "may be missing" marker."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from chat_testing.servers import start_server
from chat_tui.app import ChatApp
from chat_tui.config import Config
from chat_tui.connection import RoomConnection
from tests.server.wsclients import join
from tests.tui.app_helpers import SIZE, in_log, joined, log_text, room_name, until


def brisk(url: str, room: str, wake: Callable[[], object]) -> RoomConnection:
    return RoomConnection(url, room, wake, backoff_base=0.05, backoff_cap=0.2)


async def test_a_killed_embedded_server_is_back_with_every_name_and_message(
    tmp_path: Path,
) -> None:
    db = tmp_path / "chat.db"
    server = await asyncio.to_thread(start_server, rate_limit=0, broker_url=f"sqlite://{db}")
    port = server.port
    room = room_name("restart")
    config = Config(server=server.ws_url, rooms=[room], autostart=False, joins="all")
    app = ChatApp(config, connection_factory=brisk)
    try:
        async with app.run_test(size=SIZE) as pilot:
            name = await joined(pilot, app, room)
            peer = await join(server.chat_url(room))
            await peer.ws.send("said before the crash")
            await until(pilot, lambda: in_log(app, "said before the crash"), "the message")
            await peer.close()
            await until(pilot, lambda: in_log(app, f"{peer.name} left"), "the peer gone")
            await asyncio.to_thread(server.stop, signal.SIGKILL)
            await until(pilot, lambda: in_log(app, "connection lost"), "the crash seen")
            server = await asyncio.to_thread(
                start_server, port, rate_limit=0, broker_url=f"sqlite://{db}"
            )
            await until(pilot, lambda: in_log(app, "reconnected"), "the reconnect")
            assert app.controller.rooms[room].me == name  # the same name, without "as NAME"
            assert "may be missing" not in log_text(app)
            assert log_text(app).count("said before the crash") == 1
    finally:
        await asyncio.to_thread(server.stop)
