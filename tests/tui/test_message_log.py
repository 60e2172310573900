"""The message log as a user sees it: rows read back from the widget in a real (headless) app."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from chat_tui.scrollback import Entry, EntryKind, Scrollback, SendState
from chat_tui.widgets.message_log import (
    MessageLog,
    entry_height,
    plan_entry,
    sender_colour,
    wrap,
)

T = datetime(2024, 5, 1, 9, 7)
ME = "user_meeeee01"
ALICE = "user_aaaaaa11"
BOB = "user_bbbbbb22"


class LogHost(App[None]):
    """The smallest app that hosts a MessageLog the way ChatApp does."""

    def __init__(self, scrollback: Scrollback | None = None) -> None:
        super().__init__()
        self.scrollback = Scrollback() if scrollback is None else scrollback
        self.unseen_posted: list[int] = []

    def compose(self) -> ComposeResult:
        yield MessageLog(own_name=lambda: ME)

    @property
    def message_log(self) -> MessageLog:
        return self.query_one(MessageLog)

    def on_mount(self) -> None:
        self.message_log.show(self.scrollback)

    def on_message_log_unseen_changed(self, message: MessageLog.UnseenChanged) -> None:
        self.unseen_posted.append(message.count)

    def add(self, entry: Entry, scrollback: Scrollback | None = None) -> Entry:
        target = self.scrollback if scrollback is None else scrollback
        target.append(entry)
        self.message_log.entry_added(target)
        return entry

    def say(self, text: str, sender: str = ALICE, **kw: object) -> Entry:
        return self.add(Entry(EntryKind.MESSAGE, text, T, sender, **kw))  # type: ignore[arg-type]


def rows(log: MessageLog) -> list[str]:
    """The log's rows on screen, as text, trailing blanks removed."""
    return [log.render_line(y).text.rstrip() for y in range(log.size.height)]


async def until(pilot: Pilot[None], condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds (the machine is busy: no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await pilot.pause(0.01)


async def applied(pilot: Pilot[None], log: MessageLog) -> None:
    """Wait until the log has put every arrival on screen (a burst is applied in one go)."""
    await until(pilot, lambda: not log.pending)
    await pilot.pause()


async def settle_scroll(pilot: Pilot[None], log: MessageLog) -> None:
    """Wait for a keyboard scroll (animated) to arrive where it was going."""
    await until(pilot, lambda: round(log.scroll_y) == round(log.scroll_target_y))
    await pilot.pause()


# --- rendering -------------------------------------------------------------------------------


async def test_markup_and_escape_sequences_are_shown_literally() -> None:
    app = LogHost()
    async with app.run_test(size=(90, 10)) as pilot:
        app.say("[bold red]loud[/] [@click=app.quit]click me[/] \x1b[31mred\x1b[0m bell\x07")
        app.add(Entry(EntryKind.MESSAGE, "hi", T, "[b]evil\x1b[2J"))
        app.add(Entry(EntryKind.NOTICE, "[reverse]notice[/]\r\n\x9b31m", T))
        await applied(pilot, app.message_log)
        shown = rows(app.message_log)
        assert shown[0] == (
            "09:07 user_aaaaaa11 [bold red]loud[/] [@click=app.quit]click me[/] ␛[31mred␛[0m bell␇"
        )
        assert shown[1] == "09:07 [b]evil␛[2J hi"
        assert shown[2] == "09:07 · [reverse]notice[/]"
        assert shown[3] == "        \ufffd31m"
        segments = [seg.text for y in range(4) for seg in app.message_log.render_line(y)]
        assert not any(ch in text for text in segments for ch in "\x1b\x07\r\x9b")
        assert app.is_running  # the [@click=app.quit] text did nothing


async def test_line_layout_kinds_and_marks() -> None:
    app = LogHost()
    async with app.run_test(size=(80, 10)) as pilot:
        app.say("hello")
        app.add(Entry(EntryKind.NOTICE, f"{BOB} joined the chat", T))
        app.add(Entry(EntryKind.ERROR, "you are sending too fast", T))
        app.add(Entry(EntryKind.STATUS, "connection lost", T))
        app.say("queued", ME, own=True, state=SendState.PENDING)
        app.say("nope", ME, own=True, state=SendState.REFUSED)
        await applied(pilot, app.message_log)
        assert rows(app.message_log)[:6] == [
            "09:07 user_aaaaaa11 hello",
            "09:07 · user_bbbbbb22 joined the chat",
            "09:07 ! you are sending too fast",
            "09:07 ── connection lost ──",
            "09:07 user_meeeee01 (pending) queued",
            "09:07 user_meeeee01 (refused) nope",
        ]


def _style_of(log: MessageLog, y: int, text: str) -> object:
    for segment in log.render_line(y):
        if segment.text == text:
            # Without the offsets every row carries for mouse selection.
            return segment.style.clear_meta_and_links() if segment.style else None
    raise AssertionError(f"{text!r} not on row {y}")


async def test_styles_tell_kinds_apart() -> None:
    app = LogHost()
    async with app.run_test(size=(80, 12)) as pilot:
        app.say("plain")
        app.say("again")
        app.say(f"ping {ME} there", BOB, mention=True)
        app.say("mine", ME, own=True)
        app.add(Entry(EntryKind.NOTICE, "a notice", T))
        app.add(Entry(EntryKind.ERROR, "an error", T))
        app.add(Entry(EntryKind.STATUS, "a status", T))
        await applied(pilot, app.message_log)
        log = app.message_log
        alice0, alice1 = _style_of(log, 0, ALICE), _style_of(log, 1, ALICE)
        assert alice0 == alice1  # the same sender always gets the same colour
        assert alice0.color.name == sender_colour(ALICE)  # type: ignore[attr-defined]
        plain = _style_of(log, 0, "plain")
        mention = _style_of(log, 2, "ping ")
        assert mention.bgcolor != plain.bgcolor  # type: ignore[attr-defined]
        assert _style_of(log, 2, ME).underline  # type: ignore[attr-defined]
        own = _style_of(log, 3, ME)
        assert own.bold and own.reverse  # type: ignore[attr-defined]
        notice = _style_of(log, 4, "a notice")
        error = _style_of(log, 5, "an error")
        status = _style_of(log, 6, "a status ──")
        colours = {plain.color, notice.color, error.color, status.color}  # type: ignore[attr-defined]
        assert len(colours) == 4


async def test_multi_line_message_stays_together_under_its_sender() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 10)) as pilot:
        app.say("first line\nsecond line\n\tindented")
        app.say("after", BOB)
        await applied(pilot, app.message_log)
        pad = " " * len("09:07 user_aaaaaa11 ")
        assert rows(app.message_log)[:4] == [
            "09:07 user_aaaaaa11 first line",
            pad + "second line",
            pad + "    indented",
            "09:07 user_bbbbbb22 after",
        ]


async def test_long_lines_wrap_at_words_and_rewrap_on_resize() -> None:
    app = LogHost()
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
    async with app.run_test(size=(100, 10)) as pilot:
        log = app.message_log
        app.say(words)
        await applied(pilot, app.message_log)
        assert rows(log)[0] == f"09:07 user_aaaaaa11 {words}"
        await pilot.resize_terminal(50, 10)
        await until(pilot, lambda: rows(log)[1].strip() != "")
        width = log.scrollable_content_region.width
        shown = [row for row in rows(log) if row]
        pad = " " * len("09:07 user_aaaaaa11 ")
        assert shown[0].startswith("09:07 user_aaaaaa11 alpha")
        assert all(row.startswith(pad) for row in shown[1:])
        assert all(cell_len(row) <= width for row in shown)
        assert " ".join(row.strip() for row in shown)[len("09:07 user_aaaaaa11 ") :] == words
        await pilot.resize_terminal(100, 10)
        await until(pilot, lambda: rows(log)[1] == "")
        assert rows(log)[0] == f"09:07 user_aaaaaa11 {words}"


# --- following and scrolling -------------------------------------------------------------------


async def test_follows_new_messages_at_the_bottom() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(30):
            app.say(f"message {n}")
        await applied(pilot, app.message_log)
        assert log.at_bottom
        assert rows(log)[-1] == "09:07 user_aaaaaa11 message 29"
        app.say("message 30")
        await applied(pilot, app.message_log)
        assert rows(log)[-1] == "09:07 user_aaaaaa11 message 30"
        assert log.unseen == 0


async def test_scrolled_up_view_does_not_move_and_counts_unseen() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"message {n}")
        log.focus()
        await applied(pilot, app.message_log)
        await pilot.press("pageup")
        await settle_scroll(pilot, log)
        assert not log.at_bottom
        before = rows(log)
        assert "message 39" not in "".join(before)
        for n in range(40, 45):
            app.say(f"message {n}")
        app.add(Entry(EntryKind.NOTICE, f"{BOB} joined the chat", T))  # not a message
        app.say("my own", ME, own=True)  # we know what we sent
        await applied(pilot, app.message_log)
        assert rows(log) == before
        assert log.unseen == 5
        await until(pilot, lambda: app.unseen_posted[-1:] == [5])
        await pilot.press("end")
        await applied(pilot, app.message_log)
        assert log.at_bottom
        assert rows(log)[-1] == "09:07 user_meeeee01 my own"
        assert log.unseen == 0
        await until(pilot, lambda: app.unseen_posted[-1:] == [0])


async def test_scroll_to_bottom_and_scrolling_back_down_by_hand() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"message {n}")
        await applied(pilot, app.message_log)
        log.scroll_to(y=3, animate=False)
        await applied(pilot, app.message_log)
        app.say("message 40")
        assert log.unseen == 1
        log.scroll_to_bottom()
        await applied(pilot, app.message_log)
        assert rows(log)[-1] == "09:07 user_aaaaaa11 message 40"
        assert (log.at_bottom, log.unseen) == (True, 0)
        # Leaving and scrolling back down by hand also resumes following.
        log.scroll_to(y=3, animate=False)
        await applied(pilot, app.message_log)
        app.say("message 41")
        assert log.unseen == 1
        log.scroll_to(y=log.max_scroll_y, animate=False)
        await applied(pilot, app.message_log)
        assert (log.at_bottom, log.unseen) == (True, 0)
        app.say("message 42")
        await applied(pilot, app.message_log)
        assert rows(log)[-1] == "09:07 user_aaaaaa11 message 42"


async def test_resize_keeps_a_scrolled_up_view_on_the_same_entry() -> None:
    app = LogHost()
    async with app.run_test(size=(100, 8)) as pilot:
        log = app.message_log
        for n in range(60):
            app.say(f"message {n} " + "word " * 12)
        await applied(pilot, app.message_log)
        log.scroll_to(y=20, animate=False)
        await applied(pilot, app.message_log)
        top = rows(log)[0]
        assert top.startswith("09:07 user_aaaaaa11 message 20 ")
        await pilot.resize_terminal(50, 8)
        await until(
            pilot, lambda: log.virtual_size.width == log.scrollable_content_region.width < 50
        )
        assert rows(log)[0].startswith("09:07 user_aaaaaa11 message 20 ")
        assert not log.at_bottom


async def test_height_change_while_following_stays_at_the_bottom() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 20)) as pilot:
        log = app.message_log
        for n in range(50):
            app.say(f"message {n}")
        await applied(pilot, app.message_log)
        await pilot.resize_terminal(60, 6)
        await until(pilot, lambda: rows(log)[-1] == "09:07 user_aaaaaa11 message 49")
        assert log.size.height == 6
        assert log.at_bottom


# --- bounded scrollback --------------------------------------------------------------------------


async def test_scrollback_is_bounded_and_drops_do_not_move_the_view() -> None:
    app = LogHost(Scrollback(limit=20))
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(100):
            app.say(f"message {n}")
        await applied(pilot, app.message_log)
        assert len(app.scrollback) == 20
        assert log.virtual_size.height == 20
        log.scroll_to(y=5, animate=False)  # message 85 at the top
        await applied(pilot, app.message_log)
        assert rows(log)[0] == "09:07 user_aaaaaa11 message 85"
        for n in range(100, 103):  # drops 80, 81, 82: above the view
            app.say(f"message {n}")
        await applied(pilot, app.message_log)
        assert rows(log)[0] == "09:07 user_aaaaaa11 message 85"
        for n in range(103, 110):  # now 85 itself goes: the oldest left is at the top
            app.say(f"message {n}")
        await applied(pilot, app.message_log)
        assert rows(log)[0] == "09:07 user_aaaaaa11 message 90"
        assert log.unseen == 10
        log.scroll_to_bottom()
        await applied(pilot, app.message_log)
        assert rows(log)[-1] == "09:07 user_aaaaaa11 message 109"


async def test_ten_thousand_entries_render_only_the_screen() -> None:
    app = LogHost()
    async with app.run_test(size=(80, 10)) as pilot:
        log = app.message_log
        for n in range(12_000):
            app.say(f"message {n}")
        await applied(pilot, app.message_log)
        assert len(app.scrollback) == 10_000
        assert rows(log)[-1] == "09:07 user_aaaaaa11 message 11999"
        # Rows are built for what is on screen, not for all that arrived.
        assert len(log._rows) <= log.size.height
        log.scroll_home(animate=False)
        await applied(pilot, app.message_log)
        assert rows(log)[0] == "09:07 user_aaaaaa11 message 2000"


# --- send states, switching, clearing ----------------------------------------------------------


async def test_pending_message_becomes_sent_or_refused() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        first = app.say("one", ME, own=True, state=SendState.PENDING)
        second = app.say("two", ME, own=True, state=SendState.PENDING)
        await applied(pilot, app.message_log)
        assert rows(log)[:2] == [
            "09:07 user_meeeee01 (pending) one",
            "09:07 user_meeeee01 (pending) two",
        ]
        first.state = SendState.SENT
        log.entry_changed(app.scrollback, first)
        second.state = SendState.REFUSED
        log.entry_changed(app.scrollback, second)
        await applied(pilot, app.message_log)
        assert rows(log)[:2] == [
            "09:07 user_meeeee01 one",
            "09:07 user_meeeee01 (refused) two",
        ]


async def test_a_pending_mark_that_changes_the_height_keeps_rows_consistent() -> None:
    app = LogHost()
    async with app.run_test(size=(44, 8)) as pilot:
        log = app.message_log
        # 42 cells wide: "(pending) " pushes the last word to a second row.
        entry = app.say("aaaaaaa bbbbbbb", ME, own=True, state=SendState.PENDING)
        app.say("after", BOB)
        await applied(pilot, app.message_log)
        assert rows(log)[:3] == [
            "09:07 user_meeeee01 (pending) aaaaaaa",
            "                    bbbbbbb",
            "09:07 user_bbbbbb22 after",
        ]
        entry.state = SendState.SENT
        log.entry_changed(app.scrollback, entry)
        await applied(pilot, app.message_log)
        assert rows(log)[:3] == [
            "09:07 user_meeeee01 aaaaaaa bbbbbbb",
            "09:07 user_bbbbbb22 after",
            "",
        ]


async def test_each_scrollback_keeps_its_position_when_switching() -> None:
    app = LogHost()
    other = Scrollback()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"general {n}")
            app.add(Entry(EntryKind.MESSAGE, f"other {n}", T, BOB), other)
        await applied(pilot, app.message_log)
        log.scroll_to(y=10, animate=False)
        await applied(pilot, app.message_log)
        general_view = rows(log)
        log.show(other)
        await applied(pilot, app.message_log)
        assert rows(log)[-1] == "09:07 user_bbbbbb22 other 39"  # new room: at its bottom
        app.add(Entry(EntryKind.MESSAGE, "other 40", T, BOB), other)
        app.say("general 40")  # not shown: the log does not move
        await applied(pilot, app.message_log)
        assert rows(log)[-1] == "09:07 user_bbbbbb22 other 40"
        log.show(app.scrollback)
        await applied(pilot, app.message_log)
        assert rows(log) == general_view
        assert log.unseen == 1  # general 40 arrived while we were away, scrolled up


async def test_refresh_all_after_clear_and_name_change() -> None:
    names = {"me": ALICE}

    class Host(LogHost):
        def compose(self) -> ComposeResult:
            yield MessageLog(own_name=lambda: names["me"])

    app = Host()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        app.say("hello")
        await applied(pilot, app.message_log)
        assert _style_of(log, 0, ALICE).reverse  # type: ignore[attr-defined]
        names["me"] = BOB  # reconnected under another name
        log.refresh_all()
        await applied(pilot, app.message_log)
        assert not _style_of(log, 0, ALICE).reverse  # type: ignore[attr-defined]
        app.scrollback.clear()
        log.refresh_all()
        await applied(pilot, app.message_log)
        assert rows(log) == [""] * log.size.height
        app.say("fresh")
        await applied(pilot, app.message_log)
        assert rows(log)[0] == "09:07 user_aaaaaa11 fresh"


# --- pure parts -------------------------------------------------------------------------------


def test_sender_colours_are_stable_across_processes_and_spread() -> None:
    # Python's own hash() of a str changes with every process: the colour must not.
    code = "from chat_tui.widgets.message_log import sender_colour as c; print(c('user_aaaaaa11'))"
    seen = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        seen.add(result.stdout.strip())
    assert seen == {sender_colour(ALICE)}
    names = [f"user_{letter * 6}{n:02d}" for letter in "abcdefgh" for n in range(3)]
    assert len({sender_colour(name) for name in names}) >= 6


def test_scrollback_bound_and_counts() -> None:
    scrollback = Scrollback(limit=3)
    entries = [Entry(EntryKind.MESSAGE, str(n), T, ALICE) for n in range(5)]
    for entry in entries:
        scrollback.append(entry)
    assert list(scrollback) == entries[2:]
    assert (len(scrollback), scrollback.total_appended, scrollback.first_index) == (3, 5, 2)
    assert scrollback[0] is entries[2] and scrollback[-1] is entries[4]
    scrollback.clear()
    assert (len(scrollback), scrollback.total_appended) == (0, 5)
    with pytest.raises(ValueError, match="at least 1"):
        Scrollback(limit=0)


@given(
    st.text(st.sampled_from("ab cd  é日本\u0301"), max_size=80),
    st.integers(1, 30),
    st.integers(1, 30),
)
def test_wrap_keeps_every_character_in_order_within_the_width(
    line: str, first: int, rest: int
) -> None:
    ranges = wrap(line, first, rest)
    assert ranges
    pieces = [line[start:end] for start, end in ranges]
    for number, piece in enumerate(pieces):
        limit = first if number == 0 else rest
        # A single character wider than the row is the only way over the limit.
        visible = [char for char in piece if cell_len(char) > 0]
        assert cell_len(piece) <= limit or len(visible) == 1
    assert "".join(pieces).replace(" ", "") == line.replace(" ", "")
    starts = [start for start, _ in ranges]
    assert starts == sorted(starts)


@settings(max_examples=500)
@given(
    # Weighted to what the shortcut answers (sent messages), the rest still covered.
    st.just(EntryKind.MESSAGE) | st.sampled_from(list(EntryKind)),
    st.just(SendState.SENT) | st.sampled_from(list(SendState)),
    # Mostly what the shortcut takes (printable), sometimes what it must leave to the plan.
    st.text(st.sampled_from("ab cd  é日本\u0301"), max_size=120)
    | st.text(st.sampled_from("ab cd\n\t\x1b"), max_size=60),
    st.none() | st.text(st.sampled_from("user_abc日"), max_size=20) | st.just("a\nb\x07"),
    st.sampled_from(["%H:%M", "%H:%M:%S", "[%d %b %H:%M]"]),
    st.integers(-2, 2),
    st.integers(1, 140),
    st.booleans(),
)
def test_measured_height_is_the_planned_one(
    kind: EntryKind,
    state: SendState,
    text: str,
    sender: str | None,
    fmt: str,
    near: int,
    anywhere: int,
    at_the_edge: bool,
) -> None:
    """Arrivals are measured by a shortcut; rendering follows the plan: they must agree."""
    entry = Entry(kind, text, T, sender, state=state)
    # Half of the widths right around "the whole entry on one row", where it matters most.
    one_row = cell_len(T.strftime(fmt)) + cell_len(sender or "?") + 2 + cell_len(text)
    width = max(1, one_row + near) if at_the_edge else anywhere
    assert entry_height(entry, width, fmt) == len(plan_entry(entry, width, fmt).rows)


def test_measured_height_is_the_planned_one_at_every_width() -> None:
    samples = [
        Entry(EntryKind.MESSAGE, text, T, sender, state=state)
        for text in ("hi", "0123456789", "flood 1 the quick brown fox", "日本語のテキスト", "")
        for sender in (ALICE, "", None, "日本")
        for state in (SendState.SENT, SendState.PENDING)
    ]
    for entry in samples:
        for width in range(1, 80):
            planned = len(plan_entry(entry, width, "%H:%M").rows)
            assert entry_height(entry, width, "%H:%M") == planned, (entry, width)
