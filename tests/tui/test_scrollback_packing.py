"""Older entries packed into chunks (chat_tui/scrollback.py): read back as they were, the same
objects while anything holds them, changes kept, and what the user sees unchanged.

The model tests run at the program's own sizes (``CHUNK``, ``HOT``) where that is cheap; the
screen tests make them small, so that a few dozen messages are enough to pack most of a room.
"""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chat_testing.servers import RunningServer
from chat_tui import scrollback as scrollback_module
from chat_tui.app import ChatApp
from chat_tui.grep import search_live
from chat_tui.scrollback import CHUNK, HOT, Entry, EntryKind, Scrollback, SendState
from tests.server.wsclients import join
from tests.tui.app_helpers import (
    SIZE,
    app_config,
    fixed_clock,
    in_log,
    joined,
    room_name,
    screen_lines,
    send,
    until,
)
from tests.tui.test_message_log import LogHost, _style_of, rows, synced

T0 = datetime(2024, 5, 1, 9, 7, tzinfo=UTC)


def made(n: int) -> Entry:
    """Entry ``n`` of a varied log: every kind, flag, state and offset shape, some multi-line
    and some not ASCII."""
    kind = (EntryKind.MESSAGE, EntryKind.MESSAGE, EntryKind.NOTICE, EntryKind.STATUS)[n % 4]
    return Entry(
        kind,
        f"entry {n} ünï\nsecond line" if n % 7 == 0 else f"entry {n} " + "x" * (n % 50),
        T0 + timedelta(milliseconds=n // 3),
        f"user_{n % 5}" if kind is EntryKind.MESSAGE else None,
        own=n % 11 == 0,
        mention=n % 13 == 0,
        state=SendState.REFUSED if n % 17 == 0 else SendState.SENT,
        offset=None if n % 9 == 0 else 1000 + n,
        from_history=n % 3 == 0,
        dated=n % 5 == 0,
        quiet=n % 6 == 0,
    )


def fields(entry: Entry) -> tuple[object, ...]:
    return (
        entry.kind,
        entry.text,
        entry.time,
        entry.sender,
        entry.own,
        entry.mention,
        entry.state,
        entry.offset,
        entry.from_history,
        entry.dated,
        entry.quiet,
    )


def filled(count: int, limit: int = 10_000) -> tuple[Scrollback, list[tuple[object, ...]]]:
    """A scrollback of ``count`` entries that nothing else holds, and what each said."""
    scrollback = Scrollback(limit)
    said = []
    for n in range(count):
        entry = made(n)
        said.append(fields(entry))
        scrollback.append(entry)
    del entry
    return scrollback, said


def test_older_entries_are_packed_and_read_back_as_they_were() -> None:
    count = 4 * CHUNK + HOT + 7
    scrollback, said = filled(count)
    assert scrollback.packed >= 3 * CHUNK  # all but the newest HOT to HOT + CHUNK
    assert len(scrollback) == count
    assert [fields(e) for e in scrollback] == said
    assert [fields(e) for e in scrollback.scan()] == said
    assert [fields(e) for e in scrollback.scan(count - 5)] == said[-5:]
    assert [fields(e) for e in scrollback.scan(newest_first=True)] == said[::-1]
    assert [fields(e) for e in reversed(scrollback)] == said[::-1]
    assert [fields(scrollback[k]) for k in (0, 1, CHUNK, -1, -count)] == [
        said[0],
        said[1],
        said[CHUNK],
        said[-1],
        said[0],
    ]
    with pytest.raises(IndexError):
        scrollback[count]
    assert scrollback.find_offset(1000 + 1) is not None
    assert scrollback.find_offset(1000 + 9) is None  # entry 9 has no offset


def test_messages_from_others_are_counted_from_the_chunks_as_from_the_entries() -> None:
    scrollback, _ = filled(4 * CHUNK + HOT + 7, limit=3 * CHUNK + HOT)  # some dropped
    assert scrollback.packed
    length = len(scrollback)
    for start in (0, 1, CHUNK - 1, CHUNK, CHUNK + 5, length - HOT - 1, length - 3, length):
        expected = sum(e.kind is EntryKind.MESSAGE and not e.own for e in list(scrollback)[start:])
        assert scrollback.others_messages(start) == expected, start
    known = next(e for e in scrollback if e.kind is EntryKind.MESSAGE and not e.own)
    position = scrollback.index_of(known)
    assert position is not None and position - scrollback.first_index < scrollback.packed
    before = scrollback.others_messages()
    known.own = True
    scrollback.touch(known)
    assert scrollback.others_messages() == before - 1


def test_a_full_scrollback_drops_its_oldest_packed_entries() -> None:
    scrollback, said = filled(5000, limit=1000)
    assert len(scrollback) == 1000 and scrollback.first_index == 4000
    assert scrollback.total_appended == 5000
    assert [fields(e) for e in scrollback] == said[4000:]
    assert scrollback.packed > 0


def test_a_packed_entry_is_the_same_object_while_anything_holds_it() -> None:
    scrollback = Scrollback()
    kept = made(1)  # held here from before it is packed: packed, it is still this object
    scrollback.append(kept)
    for n in range(2, 3 * CHUNK + HOT):
        scrollback.append(made(n))
    assert scrollback.packed > 0
    assert scrollback[0] is kept and scrollback.index_of(kept) == 0
    old = scrollback[5]  # built from its chunk: the same object each time it is read
    assert scrollback[5] is old and next(iter(scrollback.scan(5))) is old
    assert scrollback.index_of(old) == 5
    gone = id(old)
    del old
    gc.collect()
    again = scrollback[5]
    assert fields(again) == fields(made(6))
    assert scrollback.index_of(again) == 5
    del again
    # A stranger with the same text is not in the scrollback.
    assert scrollback.index_of(made(6)) is None
    assert gone  # (the id of a freed object may be reused: compared by index, not id)


def test_a_change_to_a_packed_entry_is_kept_after_it_is_let_go() -> None:
    scrollback, _ = filled(3 * CHUNK + HOT)
    known = scrollback.find_offset(1000 + 1)
    assert known is not None and not known.own
    known.own = True  # a recovered message found to be ours (Room.acked)
    scrollback.touch(known)
    assert scrollback.take_changes() == [known]
    del known
    gc.collect()
    found = scrollback.find_offset(1000 + 1)
    assert found is not None and found.own and found.text == made(1).text


def test_the_marker_and_dropped_entries_keep_their_identity() -> None:
    scrollback = Scrollback(limit=HOT + 3 * CHUNK)
    first_unread = made(0)
    scrollback.append(first_unread)
    scrollback.marker = first_unread
    for n in range(1, HOT + 2 * CHUNK):
        scrollback.append(made(n))
    assert scrollback.packed and scrollback.marker is first_unread
    assert scrollback.index_of(first_unread) == 0 and scrollback[0] is first_unread
    for n in range(HOT + 2 * CHUNK, 2 * (HOT + 3 * CHUNK)):
        scrollback.append(made(n))
    assert scrollback.index_of(first_unread) is None  # dropped as the oldest


def test_pending_entries_are_not_packed_and_packing_resumes_once_they_are_sent() -> None:
    scrollback = Scrollback(limit=HOT + 4 * CHUNK)
    pending = Entry(EntryKind.MESSAGE, "typed offline", T0, "me", own=True)
    pending.state = SendState.PENDING
    scrollback.append(pending)
    for n in range(HOT + 6 * CHUNK):  # more than the scrollback keeps
        scrollback.append(made(n))
        if n == 3 * CHUNK:
            assert scrollback.packed == 0  # everything after the pending one waits
            pending.state = SendState.SENT  # acknowledged
            pending.offset = 5
            scrollback.touch(pending)
    # Full, and packed again: only the newest are objects.
    assert len(scrollback) == scrollback.limit
    assert scrollback.packed >= 3 * CHUNK
    assert len(scrollback) - scrollback.packed <= HOT + CHUNK


def test_an_insertion_or_removal_among_packed_entries_keeps_the_order() -> None:
    scrollback = Scrollback()
    for n in range(3 * CHUNK + HOT):
        scrollback.append(Entry(EntryKind.MESSAGE, f"m{n}", T0, "bob", offset=2 * n))
    packed_before = scrollback.packed
    assert packed_before
    missed = Entry(EntryKind.MESSAGE, "recovered", T0, "ann", offset=7)  # between 6 and 8
    scrollback.insert(missed)
    assert scrollback[4] is missed and scrollback.index_of(missed) == 4
    assert [e.offset for e in scrollback.scan()][:6] == [0, 2, 4, 6, 7, 8]
    gone = scrollback[10]
    assert gone.text == "m9"
    scrollback.remove(gone)
    assert scrollback.index_of(gone) is None
    assert [e.text for e in scrollback.scan()][9:11] == ["m8", "m10"]
    for n in range(3 * CHUNK + HOT, 4 * CHUNK + 2 * HOT):  # packed again as more arrive
        scrollback.append(Entry(EntryKind.MESSAGE, f"m{n}", T0, "bob", offset=2 * n))
    assert scrollback.packed >= packed_before
    assert [e.text for e in scrollback.scan()][:6] == ["m0", "m1", "m2", "m3", "recovered", "m4"]


def test_forgotten_offsets_are_forgotten_in_the_chunks_too() -> None:
    scrollback, _ = filled(3 * CHUNK + HOT)
    held = scrollback[1]
    scrollback.forget_offsets()
    assert held.offset is None
    assert all(e.offset is None for e in scrollback.scan())
    assert scrollback.find_offset(1000 + 1) is None


def test_a_frozen_scrollback_searched_elsewhere_gives_back_the_scrollbacks_own_entries() -> None:
    scrollback = Scrollback()
    for n in range(3 * CHUNK + HOT):
        text = f"needle {n}" if n in (3, CHUNK + 1, 3 * CHUNK + HOT - 1) else f"hay {n}"
        scrollback.append(Entry(EntryKind.MESSAGE, text, T0 + timedelta(seconds=n), "bob"))
    frozen = scrollback.frozen()
    scrollback.append(Entry(EntryKind.MESSAGE, "needle later", T0, "bob"))  # not in it
    hits = search_live([("lobby", frozen)], "needle")
    assert [h.text for h in hits] == [
        f"needle {3 * CHUNK + HOT - 1}",
        f"needle {CHUNK + 1}",
        "needle 3",
    ]
    for hit in hits:
        assert hit.entry is not None and hit.index is not None
        own = scrollback.held(frozen, hit.index, hit.entry)
        assert scrollback.index_of(own) == hit.index and own.text == hit.text
    # Once the order changed, an index means nothing: the entry found is left as it was.
    scrollback.remove(scrollback[0])
    hit = hits[-1]
    assert hit.entry is not None and hit.index is not None
    assert scrollback.held(frozen, hit.index, hit.entry) is hit.entry


def test_a_packed_entry_costs_under_half_an_object() -> None:
    """10,000 messages of 54 characters (the benchmark's), each text a string of its own as it
    comes from a frame, and a new time every third message, as a burst has."""
    body = "the quick brown fox jumps over the lazy dog"
    times = [T0 + timedelta(milliseconds=n) for n in range(4000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        scrollback = Scrollback()
        for n in range(10_000):
            scrollback.append(
                Entry(EntryKind.MESSAGE, f"flood {n} {body}", times[n // 3], "user_x", offset=n)
            )
        gc.collect()
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / 10_000
    finally:
        tracemalloc.stop()
    # As objects, 223 bytes each (text 104, Entry 72, offset 32, the deque and more).
    assert per_entry < 110, per_entry
    assert len(scrollback) == 10_000


# --- through the screen -----------------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrollback_module, "CHUNK", 4)
    monkeypatch.setattr(scrollback_module, "HOT", 2)


@pytest.mark.usefixtures("small_chunks")
async def test_a_packed_log_scrolls_searches_and_marks_as_before() -> None:
    app = LogHost()
    async with app.run_test(size=(40, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"line {n}")
        unread = app.say("first unread")
        for n in range(40, 60):
            app.say(f"line {n}")
        await synced(pilot, log)
        assert app.scrollback.packed >= 50
        assert rows(app)[-1] == "09:07 user_aaaaaa11 line 59"
        # The oldest, packed, at the top.
        log.scroll_home(animate=False, immediate=True)
        await synced(pilot, log)
        assert rows(app)[0] == "09:07 user_aaaaaa11 line 0"
        # A search finds packed entries, newest first, and goes to each.
        assert log.search("line 1") == (1, 11)  # line 1, line 10 … line 19
        await synced(pilot, log)
        assert "09:07 user_aaaaaa11 line 19" in rows(app)
        for _ in range(10):
            log.search_step(older=True)
        await synced(pilot, log)
        assert log.search_result == (11, 11)
        assert "09:07 user_aaaaaa11 line 1" in rows(app)
        log.end_search()
        # The divider above a packed first unread; the entry held as the marker stays it.
        app.scrollback.marker = unread
        await synced(pilot, log)
        log.scroll_to(y=38, animate=False, immediate=True)  # one row an entry: line 38 on top
        await synced(pilot, log)
        assert rows(app)[:4] == [
            "09:07 user_aaaaaa11 line 38",
            "09:07 user_aaaaaa11 line 39",
            "──────────── new messages ────────────",
            "09:07 user_aaaaaa11 first unread",
        ]


@pytest.mark.usefixtures("small_chunks")
async def test_a_packed_message_changed_by_an_ack_is_shown_changed() -> None:
    """A message of ours published before a reconnect is recovered (packed by now, as more
    came after it); its ack then finds it, marks it ours and drops the pending copy."""
    app = LogHost()
    async with app.run_test(size=(40, 8)) as pilot:
        log = app.message_log
        for n in range(30):
            app.add(Entry(EntryKind.MESSAGE, f"line {n}", T0, "user_aaaaaa11", offset=n))
        await synced(pilot, log)
        log.scroll_home(animate=False, immediate=True)
        await synced(pilot, log)
        assert app.scrollback.packed >= 20
        known = app.scrollback.find_offset(1)
        assert known is not None
        known.own = True
        app.scrollback.touch(known)
        del known
        gc.collect()
        await synced(pilot, log)
        found = app.scrollback.find_offset(1)
        assert found is not None and found.own
        del found
        gc.collect()
        # Drawn again from its chunk: ours, so its sender is drawn bold and reversed.
        app.scrollback.restyle()
        await synced(pilot, log)
        assert rows(app)[1] == "09:07 user_aaaaaa11 line 1"
        ours, theirs = _style_of(app, 1, "user_aaaaaa11"), _style_of(app, 2, "user_aaaaaa11")
        assert ours.bold and ours.reverse  # type: ignore[attr-defined]
        assert not theirs.reverse  # type: ignore[attr-defined]


@pytest.mark.usefixtures("small_chunks")
async def test_grep_opens_a_packed_message_in_its_room(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    room = room_name("gpack")
    app = ChatApp(app_config(shared_server.ws_url, room), clock=fixed_clock, logs_root=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await joined(pilot, app, room)
        peer = await join(shared_server.chat_url(room))
        try:
            await peer.ws.send("zanzibar long ago")
            for n in range(30):  # pack it, and push it out of view
                await peer.ws.send(f"filler {n}")
            await until(pilot, lambda: in_log(app, "filler 29"), "the fillers")
            scrollback = app.controller.rooms[room].scrollback
            assert scrollback.packed >= 20
            await send(pilot, "/grep Zanzibar")
            title = "1 match for 'Zanzibar', newest first"
            await until(pilot, lambda: any(title in line for line in screen_lines(app)), title)
            await pilot.press("enter")
            await until(pilot, lambda: in_log(app, "zanzibar long ago"), "the match in view")
            assert app.screen.search_bar.display
            assert not in_log(app, "filler 29")  # at the match, not at the end
        finally:
            await peer.close()
