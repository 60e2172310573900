"""A flood's memory: what the app hides from the garbage collector during a flood (so that
full collections do not walk every entry inside a repaint) is looked at again once it is over."""

from __future__ import annotations

import gc
import weakref

import pytest

from chat_testing.servers import RunningServer
from chat_tui.app import ChatApp
from chat_tui.screens import chat as chat_screen
from tests.server.wsclients import join
from tests.tui.app_helpers import SIZE, app_config, fixed_clock, in_log, joined, room_name, until


class _Cycle:
    """Garbage that only a collection frees (it refers to itself)."""

    def __init__(self) -> None:
        self.itself = self


async def test_garbage_kept_through_a_flood_is_freed_once_it_is_over(
    shared_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_screen, "FREEZE_EVERY", 20)  # a small flood is enough
    now = [0.0]  # the app's monotonic clock: time passes when the test says so
    room = room_name()
    app = ChatApp(
        app_config(shared_server.ws_url, room), clock=fixed_clock, monotonic=lambda: now[0]
    )
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            cycle = _Cycle()
            gone = weakref.ref(cycle)
            for n in range(60):
                await peer.ws.send(f"flood line {n}")
            await until(pilot, lambda: in_log(app, "flood line 59"), "the flood")
            del cycle
            gc.collect()
            # Alive at the flood's freezes, so out of the collector's sight meanwhile.
            assert gone() is not None
            now[0] += chat_screen.COLLECT_AFTER  # the flood is over
            await until(pilot, lambda: gone() is None, "the collection after the flood")
        finally:
            await peer.close()
