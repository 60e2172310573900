"""The room model without Textual: scrollback, unread and mentions, who is here, search."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from chat_protocol.frames import Frame, FrameKind, Welcome
from chat_protocol.v1 import format_join, format_leave, format_message, parse_frame
from chat_protocol.v2 import message as v2_message_frame
from chat_protocol.v2 import parse_frame as parse_v2_frame
from chat_protocol.v2 import presence as v2_presence
from chat_tui.config import JoinFilter
from chat_tui.rooms import (
    PEOPLE_LIMIT,
    PRESENCE_SHOWN,
    MemberSource,
    Room,
    RoomState,
    local_time,
    mention_words,
    mentions,
)
from chat_tui.scrollback import Entry, EntryKind, Scrollback, SendState
from chat_tui.search import Search

T = datetime(2024, 5, 1, 9, 7)
ME = "user_meeeee01"
ALICE = "user_aaaaaa11"
BOB = "user_bbbbbb22"


def message(name: str, text: str) -> Frame:
    return parse_frame(format_message(name, text))


def joined(name: str) -> Frame:
    return parse_frame(format_join(name))


def left(name: str) -> Frame:
    return parse_frame(format_leave(name))


def room_with_me() -> Room:
    room = Room("general", 100)
    room.connection_changed(RoomState.CONNECTED, "connected", None, T, 0.0)
    room.name_assigned(ME, T)
    return room


# --- scrollback ----------------------------------------------------------------------------------


def test_scrollback_bound_and_counts() -> None:
    scrollback = Scrollback(limit=3)
    entries = [Entry(EntryKind.MESSAGE, str(n), T, ALICE) for n in range(5)]
    for entry in entries:
        scrollback.append(entry)
    assert list(scrollback) == entries[2:]
    assert (len(scrollback), scrollback.total_appended, scrollback.first_index) == (3, 5, 2)
    assert scrollback[0] is entries[2] and scrollback[-1] is entries[4]
    assert scrollback.index_of(entries[3]) == 3 and scrollback.index_of(entries[0]) is None
    generation = scrollback.generation
    scrollback.clear()
    assert (len(scrollback), scrollback.total_appended) == (0, 5)
    assert scrollback.generation == generation + 1  # views measure again
    with pytest.raises(ValueError, match="at least 1"):
        Scrollback(limit=0)


def test_observers_are_told_of_every_change_and_changes_are_taken_once() -> None:
    scrollback = Scrollback()
    calls: list[int] = []
    stop = scrollback.subscribe(lambda: calls.append(len(scrollback)))
    entry = Entry(EntryKind.MESSAGE, "a", T, ALICE)
    scrollback.append(entry)
    scrollback.touch(entry)
    scrollback.marker = entry
    assert calls == [1, 1, 1]
    assert scrollback.take_changes() == [entry]  # touched and marked: once
    assert scrollback.take_changes() == []
    stop()
    scrollback.append(Entry(EntryKind.MESSAGE, "b", T, ALICE))
    assert calls == [1, 1, 1]


def test_entries_with_offsets_go_in_offset_order() -> None:
    """For history and recovery (chat.v2): a gap is filled in place."""
    scrollback = Scrollback(limit=5)
    for offset in (1, 2, 5):
        scrollback.append(Entry(EntryKind.MESSAGE, f"m{offset}", T, ALICE, offset=offset))
    scrollback.append(Entry(EntryKind.STATUS, "reconnected", T))
    generation = scrollback.generation
    scrollback.insert(Entry(EntryKind.MESSAGE, "m3", T, ALICE, offset=3))
    assert [e.text for e in scrollback] == ["m1", "m2", "m3", "m5", "reconnected"]
    scrollback.insert(Entry(EntryKind.MESSAGE, "m4", T, ALICE, offset=4))  # full: m1 goes
    assert [e.text for e in scrollback] == ["m2", "m3", "m4", "m5", "reconnected"]
    assert scrollback.generation == generation + 2


# --- a room -----------------------------------------------------------------------------------


def test_more_unread_than_kept_marks_the_oldest_kept() -> None:
    """150 unread in a scrollback of 100: the first unread is gone, and the divider goes
    above the oldest kept, where reading starts (not at the newest, 100 skipped unseen)."""
    room = room_with_me()
    room.look_away(leaving=True)
    for n in range(150):
        room.frame(message(ALICE, f"unread {n}"), T)
    room.look()
    marker = room.scrollback.marker
    assert marker is room.scrollback[0] and marker.text == "unread 50"


def test_unread_mentions_and_the_marker_of_the_first_unread() -> None:
    room = room_with_me()
    room.look()
    room.frame(message(ALICE, "seen at once"), T)
    assert (room.unread, room.mentions) == (0, 0)
    room.look_away(leaving=True)
    assert not room.frame(message(ALICE, "first unread"), T)
    first = room.scrollback[-1]
    assert room.frame(message(BOB, f"hey {ME.upper()}, look"), T)  # a mention, any case
    room.frame(joined(BOB), T)  # a notice is not unread
    assert (room.unread, room.mentions) == (2, 1)
    room.look()
    assert (room.unread, room.mentions) == (0, 0)
    assert room.scrollback.marker is first
    room.look_away(leaving=False)  # the terminal lost focus: the marker stays
    assert room.scrollback.marker is first
    room.look_away(leaving=True)
    assert room.scrollback.marker is None


def test_mentions_are_whole_words() -> None:
    assert mentions(ME, f"{ME}: hi") and mentions(ME, f"hi @{ME}!")
    assert not mentions(ME, f"x{ME}") and not mentions(ME, f"{ME}x")


def test_mention_words_highlights_and_a_generated_names_short_form() -> None:
    words = mention_words(ME, ("deploy", "on call"))
    assert mentions(words, "meeeee01: ping") and mentions(words, "the DEPLOY failed")
    assert mentions(words, "who is on call?") and not mentions(words, "redeployed")
    assert not mentions(mention_words("alice"), "malice")


def test_the_smart_filter_hides_presence_of_the_silent() -> None:
    room = room_with_me()
    for frame in (joined(ALICE), joined(BOB), message(BOB, "hi"), left(BOB), left(ALICE)):
        room.frame(frame, T)
    quiet = [e.text for e in room.scrollback if e.quiet]
    shown = [e.text for e in room.scrollback if e.kind is EntryKind.NOTICE and not e.quiet]
    # Alice never spoke: her join and leave are hidden; Bob's leave shows (he spoke just now),
    # his join too was hidden: he had not spoken then.
    assert quiet == [f"{ALICE} joined the chat", f"{BOB} joined the chat", f"{ALICE} left the chat"]
    assert shown == [f"{BOB} left the chat"]
    assert room.scrollback.hide_quiet
    room.show_quiet(True)
    assert not room.scrollback.hide_quiet
    everything = Room("general", 100, joins=JoinFilter.ALL)
    everything.frame(joined(ALICE), T)
    assert not any(e.quiet for e in everything.scrollback)


def test_the_smart_filter_hides_away_and_back_of_the_silent() -> None:
    """Someone idle who never speaks (away_after) is away and back every few minutes, in
    every room: each was a line shown (found by a new-user run)."""
    room = room_with_me()
    room.frame(joined(ALICE), T)
    room.frame(joined(BOB), T)
    room.frame(message(BOB, "hi"), T)
    room.away_changed(ALICE, "idle for 1 minute", T)
    room.away_changed(BOB, "lunch", T)
    room.away_changed(ALICE, None, T)
    shown = [e.text for e in room.scrollback if e.kind is EntryKind.NOTICE and not e.quiet]
    assert shown == [f"{BOB} is away: lunch"]
    assert room.away_of() == {BOB: "lunch"}  # the members panel still says who is away
    # In a conversation it answers what we wrote: shown, whoever it is from.
    talk = Room(f"@{ALICE}", 100)
    talk.away_changed(ALICE, "lunch", T)
    assert not talk.scrollback[-1].quiet


def test_the_smart_filter_counts_what_history_showed_someone_say() -> None:
    # Alice spoke a minute before we joined (we saw it in the history): her leave now is
    # news; Bob's words were an hour older than that, and his leave stays hidden.
    said_at = datetime(2024, 5, 1, 9, 6, tzinfo=UTC).timestamp()
    long_ago = datetime(2024, 5, 1, 8, 0, tzinfo=UTC).timestamp()
    history = [
        parse_v2_frame(v2_message_frame(BOB, "an hour ago", 1, long_ago)),
        parse_v2_frame(v2_message_frame(ALICE, "a minute ago", 2, said_at)),
    ]
    room = v2_room(*history)  # type: ignore[arg-type]
    now = local_time(datetime(2024, 5, 1, 9, 7, tzinfo=UTC))
    for name in (ALICE, BOB):
        room.frame(parse_v2_frame(v2_presence(False, name, now.timestamp())), now)  # type: ignore[arg-type]
    shown = [e.text for e in room.scrollback if e.kind is EntryKind.NOTICE and not e.quiet]
    assert shown == [f"{ALICE} left the chat"]
    assert ALICE in room.people and not room.people[ALICE].present  # history says not


def test_our_messages_go_pending_then_sent_or_refused() -> None:
    room = room_with_me()
    sent = room.sending("id-1", "hello\x07", T)
    refused = room.sending("id-2", "too fast", T)
    assert len(room.pending) == 2 and sent.state is SendState.PENDING
    room.echo("id-1", message(ME, "hello"))  # what the room saw: sanitised
    room.refused("id-2")
    assert (sent.state, sent.text, refused.state) == (SendState.SENT, "hello", SendState.REFUSED)
    assert room.pending == {}
    assert room.scrollback.take_changes()[-2:] == [sent, refused]
    room.echo("id-1", message(ME, "again"))  # already answered: nothing happens
    assert sent.text == "hello"


def test_losing_and_regaining_the_connection_is_said_once() -> None:
    room = room_with_me()
    for _ in range(3):
        room.connection_changed(RoomState.OFFLINE, "server unreachable", 2.0, T, 10.0)
    assert room.retry_at == 12.0
    room.connection_changed(RoomState.CONNECTING, "connecting", None, T, 12.0)
    assert room.retry_at is None
    room.connection_changed(RoomState.CONNECTED, "connected", None, T, 12.0)
    room.name_assigned("user_meeeee02", T)
    texts = [e.text for e in room.scrollback if e.kind is EntryKind.STATUS]
    assert texts == [
        f"joined general as {ME}",
        "connection lost: server unreachable, retrying in 2 s",
        "reconnected as user_meeeee02",
    ]
    room.connection_changed(RoomState.FAILED, "closed (1008)", None, T, 20.0)
    assert room.scrollback[-1].text == (
        "closed (1008); not retrying (/join general or ctrl+r tries again)"
    )


def test_completions_skip_our_names_and_put_present_and_recent_first() -> None:
    room = room_with_me()
    for name in ("user_yvaaaa01", "user_yvbbbb02", "user_yvcccc03", "user_zzzzzz04"):
        room.frame(joined(name), T)
    room.frame(left("user_yvaaaa01"), T)
    room.frame(message("user_yvbbbb02", "spoke"), T)
    room.name_assigned("user_yvmeee05", T)  # a new name of ours (reconnected)
    assert room.completions("yv") == ["user_yvbbbb02", "user_yvcccc03", "user_yvaaaa01"]
    assert room.completions("@USER_YVC") == ["user_yvcccc03"]
    assert room.completions("") == []
    assert ME not in room.completions("user_")


def test_the_member_list_and_notices_newer_than_it() -> None:
    room = room_with_me()
    assert room.member_source is MemberSource.UNKNOWN
    asked_at = room.presence_version
    room.frame(joined(BOB), T)  # while the list was on its way
    room.frame(left(ALICE), T)
    room.members_listed([ME, ALICE, "user_cccccc33"], asked_at)  # ALICE: before she left
    assert room.member_source is MemberSource.SERVER
    assert room.members() == [ME, BOB, "user_cccccc33"]  # ours first, then by name
    room.frame(left("user_cccccc33"), T)
    assert room.members() == [ME, BOB]


def test_without_a_member_list_the_room_shows_who_was_seen() -> None:
    room = room_with_me()
    room.members_unavailable()
    room.frame(message(ALICE, "hello"), T)
    room.frame(joined(BOB), T)
    assert room.member_source is MemberSource.SEEN
    assert room.members() == [ME, ALICE, BOB]
    room.connection_changed(RoomState.OFFLINE, "lost", 1.0, T, 0.0)
    room.connection_changed(RoomState.CONNECTED, "connected", None, T, 1.0)
    room.name_assigned("user_meeeee02", T)
    assert room.members() == ["user_meeeee02"]  # who is here again is not known yet


def test_observers_hear_of_every_change_to_a_room() -> None:
    room = Room("general", 10)
    changes: list[int] = []
    room.subscribe(lambda: changes.append(room.unread))
    room.frame(message(ALICE, "one"), T)
    room.look()
    assert changes == [1, 0]


# --- search ------------------------------------------------------------------------------------


def test_search_counts_from_the_newest_and_follows_the_scrollback() -> None:
    scrollback = Scrollback(limit=6)
    for n in range(6):
        scrollback.append(Entry(EntryKind.MESSAGE, f"{n} {'Fox' if n % 2 else 'dog'}", T, ALICE))
    search = Search("fox")
    search.update(scrollback)
    assert search.matches == [1, 3, 5] and search.position == 0
    assert search.step(older=True) == 5 and search.position == 1
    assert search.step(older=True) == 3 and search.position == 2
    assert search.step(older=False) == 5
    assert search.step(older=False) == 1  # wraps around to the oldest
    for n in range(6, 9):  # drops 0, 1, 2: the current match ages out
        scrollback.append(Entry(EntryKind.MESSAGE, f"{n} fox", T, ALICE))
    search.update(scrollback)
    assert search.matches == [3, 5, 6, 7, 8]
    assert search.current == 3 and search.position == 5
    scrollback.clear()
    search.update(scrollback)
    assert (search.count, search.current) == (0, None)
    assert Search("user_aaa").step(older=True) is None


def test_search_matches_senders_too() -> None:
    scrollback = Scrollback()
    scrollback.append(Entry(EntryKind.MESSAGE, "hello", T, ALICE))
    scrollback.append(Entry(EntryKind.NOTICE, f"{BOB} joined the chat", T))
    search = Search("AAAAAA")
    search.update(scrollback)
    assert search.matches == [0]


def test_search_skips_the_lines_the_join_filter_hides() -> None:
    """ctrl+f counted a hidden join ("2 of 2" went to a line not shown); shown again (the
    filter's key), it is a match again."""
    scrollback = Scrollback()
    scrollback.append(Entry(EntryKind.NOTICE, f"{BOB} joined the chat", T, quiet=True))
    scrollback.append(Entry(EntryKind.MESSAGE, f"hi {BOB}", T, ALICE))
    search = Search(BOB)
    search.update(scrollback)
    assert search.matches == [1]
    scrollback.hide_quiet = False
    search.update(scrollback)
    assert search.matches == [0, 1]


# --- chat.v2: history, recovery, acks ------------------------------------------------------------

EPOCH = "e1"
UTC_T = datetime(2024, 5, 1, 9, 7, tzinfo=UTC)


def v2_message(name: str, text: str, offset: int) -> Frame:
    return parse_v2_frame(v2_message_frame(name, text, offset, UTC_T.timestamp()))  # type: ignore[return-value]


NOW_TEXT = "2026-12-06T12:00:00.000Z"


def welcome(offset: int, recovered: bool | None, epoch: str = EPOCH) -> Welcome:
    return Welcome("general", ME, epoch, offset, "token", recovered, True, 0)


def v2_room(*history: Frame) -> Room:
    room = Room("general", 100)
    room.connection_changed(RoomState.CONNECTED, "connected", None, T, 0.0)
    room.welcomed(welcome(len(history), None), history, None, T)
    return room


def lose(room: Room, at: datetime = T) -> None:
    room.connection_changed(RoomState.OFFLINE, "dropped", 1.0, at, 0.0)
    room.connection_changed(RoomState.CONNECTED, "connected", None, at, 0.0)


def texts(room: Room) -> list[str]:
    return [entry.text for entry in room.scrollback]


def test_history_comes_before_the_joined_line_marked_as_history() -> None:
    room = v2_room(v2_message(ALICE, "old 1", 1), v2_message(BOB, "old 2", 2))
    assert texts(room) == ["old 1", "old 2", f"joined general as {ME}"]
    assert [entry.from_history for entry in room.scrollback] == [True, True, False]
    assert room.scrollback[0].time == local_time(UTC_T)  # the server's time, shown locally
    assert room.unread == 0  # said before we came: not unread


def test_a_recovered_gap_is_filled_in_place_and_only_reconnected_said() -> None:
    room = v2_room(v2_message(ALICE, "m1", 1))
    lose(room)
    room.welcomed(welcome(3, True), [v2_message(ALICE, "m2", 2), v2_message(BOB, "m3", 3)], 1, T)
    assert texts(room)[-3:] == ["m2", "m3", "reconnected"]
    assert not any(entry.from_history for entry in room.scrollback if entry.text in ("m2", "m3"))
    assert not any("missing" in text for text in texts(room))


def test_not_recovered_marks_the_gap_then_shows_only_what_we_lack() -> None:
    room = v2_room(v2_message(ALICE, "m1", 1), v2_message(ALICE, "m2", 2))
    lose(room, datetime(2024, 5, 1, 9, 30))
    backlog = [v2_message(ALICE, "m2", 2), v2_message(BOB, "m9", 9)]
    room.welcomed(welcome(9, False), backlog, 2, datetime(2024, 5, 1, 9, 42))
    assert texts(room)[-3:] == ["messages from 09:30 to 09:42 may be missing", "m9", "reconnected"]
    assert texts(room).count("m2") == 1


def test_messages_after_an_unrecovered_gap_are_unread() -> None:
    # A restarted server (new epoch) or a gap too long to recover: what the backlog brings is
    # newer than anything we saw, so a room we are not looking at counts it, mentions included.
    room = v2_room(v2_message(ALICE, "seen", 1))
    lose(room)
    backlog = [v2_message(BOB, "new 1", 1), v2_message(BOB, f"{ME}: new 2", 2)]
    assert room.welcomed(welcome(2, False, "e2"), backlog, 1, T)
    assert (room.unread, room.mentions) == (2, 1)


def test_a_new_epoch_forgets_the_old_numbers() -> None:
    room = v2_room(v2_message(ALICE, "before", 5))
    lose(room)
    room.welcomed(welcome(1, False, "e2"), [v2_message(BOB, "after", 1)], 5, T)
    # Numbered 1 in the new epoch, but said after "before": it goes after it, not above.
    assert texts(room).index("after") > texts(room).index("before")
    assert room.scrollback[0].offset is None


def test_an_ack_makes_a_pending_message_sent_in_the_rooms_order() -> None:
    room = v2_room()
    entry = room.sending("s-1", "mine", T)
    room.frame(v2_message(ALICE, "published first", 7), T)
    room.acked("s-1", "mine", 8, UTC_T)
    assert entry.state is SendState.SENT and entry.offset == 8 and entry.sender == ME
    assert texts(room)[-2:] == ["published first", "mine"]
    assert not room.pending


def test_our_acked_message_is_read_up_to_when_it_is_the_newest() -> None:
    """The server is told we read up to our own message: after a /nick our old name's
    messages are not ours in the next start's history, and counted as unread there."""
    room = v2_room(v2_message(ALICE, "before", 1))
    assert room.unreported_read() == 1
    room.sending("s-1", "mine", T)
    room.acked("s-1", "mine", 2, UTC_T)
    assert room.unreported_read() == 2


def test_an_ack_after_refusals_of_later_sends_keeps_the_order_they_were_typed_in() -> None:
    """Slow mode: three sends, the second and third refused (their errors come at once) while
    the first waits for its ack. The first stays first: it was shown last."""
    room = v2_room()
    room.sending("s-1", "sA", T)
    room.sending("s-2", "sB", T)
    room.sending("s-3", "sC", T)
    for send_id in ("s-2", "s-3"):
        room.refused(send_id)
        room.frame(parse_v2_frame('{"type":"error","text":"slow mode: one message every 5 s"}'), T)
    room.acked("s-1", "sA", 1, UTC_T)
    assert texts(room)[-5:-2] == ["sA", "sB", "sC"]
    states = [e.state for e in room.scrollback if e.own]
    assert states == [SendState.SENT, SendState.REFUSED, SendState.REFUSED]


def test_an_ack_after_more_than_the_scrollback_keeps_came_first_is_taken_calmly() -> None:
    """A flood of more messages than the scrollback keeps arrives between our send and its ack
    (the ack comes in the room's order): our entry was pushed out while pending. The ack
    settles it (nothing pending any more) without a crash, and the screen keeps the flood."""
    room = v2_room()
    room.sending("s-1", "mine", T)
    for offset in range(1, 151):
        room.frame(v2_message(ALICE, f"flood {offset}", offset), T)
    assert "mine" not in texts(room)
    room.acked("s-1", "mine", 151, UTC_T)
    assert not room.pending
    assert texts(room)[-1] == "flood 150" and len(room.scrollback) == 100


def test_an_ack_for_a_message_already_recovered_leaves_one_copy() -> None:
    room = v2_room()
    room.sending("s-1", "hello", T)
    lose(room)
    # Published before the drop, its ack lost: it comes back in the recovery, then is acked.
    room.welcomed(welcome(1, True), [v2_message(ME, "hello", 1)], 0, T)
    room.acked("s-1", "hello", 1, UTC_T)
    assert texts(room).count("hello") == 1
    (kept,) = [entry for entry in room.scrollback if entry.text == "hello"]
    assert kept.own and kept.state is SendState.SENT and not room.pending


def test_a_churn_of_names_keeps_who_is_here_and_forgets_those_long_gone() -> None:
    """Past PEOPLE_LIMIT names, those who left longest ago are forgotten: never someone
    present, never us."""
    room = room_with_me()
    now = datetime.now(UTC)
    room.frame(joined("user_stayer01"), now)
    for n in range(PEOPLE_LIMIT + 2_000):
        room.frame(joined(f"user_c{n:07d}"), now)
        room.frame(left(f"user_c{n:07d}"), now)
    assert len(room.people) <= PEOPLE_LIMIT
    assert room.me in room.people and "user_stayer01" in room.people
    assert f"user_c{PEOPLE_LIMIT + 1_999:07d}" in room.people  # the newest is kept
    assert "user_c0000000" not in room.people  # the oldest is forgotten


def test_names_no_server_gives_are_not_taken_for_members_or_for_us() -> None:
    """A hostile server's chat.v2 join of a 200-character name (a flood of them froze the
    screen laying out the members panel), a nick to a path: frames that cannot be read."""
    room = v2_room()
    long_name = "L" + "x" * 199
    join = parse_v2_frame(json.dumps({"type": "join", "name": long_name, "time": NOW_TEXT}))
    nick = parse_v2_frame(
        json.dumps({"type": "nick", "old": ME, "new": "../../evil", "time": NOW_TEXT})
    )
    assert join.kind is FrameKind.NOTICE and nick.kind is FrameKind.NOTICE
    room.frame(join, T)  # type: ignore[arg-type]
    room.frame(nick, T)  # type: ignore[arg-type]
    assert long_name not in room.people and room.me == ME


def test_the_log_on_disk_has_each_join_of_a_folded_run() -> None:
    """Past PRESENCE_SHOWN joins in a row the screen folds them into one counted line; the
    log on disk kept that line as first written ("1 more joined" for eleven)."""
    room = room_with_me()
    room.joins = JoinFilter.ALL
    recorded: list[str] = []
    room.record = lambda _room, entry: recorded.append(entry.text)
    names = [f"user_churns{n:02d}" for n in range(PRESENCE_SHOWN + 11)]
    for name in names:
        room.frame(joined(name), T)
    assert recorded == [format_join(name) for name in names]
    assert f"{11} more joined" in texts(room)[-1]
