"""A flood's memory: nothing hidden from the garbage collector in it, and no cache of Textual's
that keeps something of every row shown."""

from __future__ import annotations

import gc
import weakref

from chat_testing.servers import RunningServer
from chat_tui.app import ChatApp
from tests.server.wsclients import join
from tests.tui.app_helpers import SIZE, app_config, fixed_clock, in_log, joined, room_name, until


class _Cycle:
    """Garbage that only a collection frees (it refers to itself)."""

    def __init__(self) -> None:
        self.itself = self


async def test_a_flood_leaves_its_garbage_to_the_collector(shared_server: RunningServer) -> None:
    """Nothing is frozen in a flood (the entries it brings are packed, not objects for the
    collector to walk): garbage alive during it is freed by the next collection, and the heap
    frozen at startup stays as it was."""
    room = room_name()
    app = ChatApp(app_config(shared_server.ws_url, room), clock=fixed_clock)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        frozen = gc.get_freeze_count()
        peer = await join(shared_server.chat_url(room))
        try:
            cycle = _Cycle()
            gone = weakref.ref(cycle)
            for n in range(2500):  # more than the 2,000 events a freeze used to follow
                await peer.ws.send(f"flood line {n}")
            await until(pilot, lambda: in_log(app, "flood line 2499"), "the flood")
            # Frozen objects that die leave the frozen heap; a freeze would add the flood's.
            assert gc.get_freeze_count() <= frozen
            del cycle
            gc.collect()
            assert gone() is None
            assert app.controller.rooms[room].scrollback.packed >= 2000
        finally:
            await peer.close()


async def test_textual_keeps_the_codes_of_a_bounded_number_of_styles(
    shared_server: RunningServer,
) -> None:
    """Each row the log shows has styles of its own (the mouse offsets of its cells): rows
    scrolled through must not each leave their styles in Textual's cache of terminal codes."""
    from textual.strip import Strip

    from chat_tui.app import ANSI_KEPT
    from chat_tui.scrollback import Entry, EntryKind
    from tests.tui.test_message_log import LogHost, T, _style_of, rows, synced

    ChatApp(app_config(shared_server.ws_url, room_name()), clock=fixed_clock)
    assert Strip.render_ansi.cache_info().maxsize == ANSI_KEPT
    app = LogHost()
    async with app.run_test(size=(60, 40)) as pilot:
        log = app.message_log
        for n in range(1500):
            app.add(Entry(EntryKind.MESSAGE, f"row {n} with words", T, f"user_{n % 7}"))
        await synced(pilot, log)
        log.scroll_home(animate=False, immediate=True)
        for _ in range(40):  # every row on screen once: some 4,500 styles with offsets
            log.page(1)
            await synced(pilot, log)
        assert Strip.render_ansi.cache_info().currsize <= ANSI_KEPT
        assert rows(app)[-1] == "09:07 user_1 row 1499 with words"
        mine = Entry(EntryKind.MESSAGE, "mine", T, "user_x", own=True)
        app.add(mine)
        await synced(pilot, log)
        shown = rows(app)
        assert shown[-1] == "09:07 user_x mine"
        # Drawn as before: the codes of styles no longer kept are worked out again.
        own = _style_of(app, len(shown) - 1, "user_x")
        assert own.bold and own.reverse  # type: ignore[attr-defined]
