"""The message log as a user sees it: rows read from the screen (the compositor) of a real app.

Rows are read as the terminal gets them (``app.screen._compositor``), through Textual's line
caches, never by calling ``render_line`` by hand: a log that forgets to repaint shows stale
rows here just as it would in a terminal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from rich.color import Color as RichColor
from textual import events
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from chat_tui.scrollback import Entry, EntryKind, Scrollback, SendState
from chat_tui.text_layout import sender_colour
from chat_tui.widgets.message_log import MessageLog
from tests.tui.app_helpers import screen_segments, style_at, widget_lines

T = datetime(2024, 5, 1, 9, 7)
ME = "user_meeeee01"
ALICE = "user_aaaaaa11"
BOB = "user_bbbbbb22"


class LogHost(App[None]):
    """The smallest app that hosts a MessageLog the way ChatApp does."""

    def __init__(self, scrollback: Scrollback | None = None) -> None:
        super().__init__()
        self.scrollback = Scrollback() if scrollback is None else scrollback
        self.unseen_seen: list[int] = []

    def compose(self) -> ComposeResult:
        yield MessageLog(own_name=lambda: ME)

    @property
    def message_log(self) -> MessageLog:
        return self.query_one(MessageLog)

    def on_mount(self) -> None:
        self.message_log.show(self.scrollback)
        self.watch(self.message_log, "unseen", lambda n: self.unseen_seen.append(n), init=False)

    def add(self, entry: Entry, scrollback: Scrollback | None = None) -> Entry:
        (self.scrollback if scrollback is None else scrollback).append(entry)
        return entry

    def say(self, text: str, sender: str = ALICE, **kw: object) -> Entry:
        return self.add(Entry(EntryKind.MESSAGE, text, T, sender, **kw))  # type: ignore[arg-type]


def rows(app: LogHost) -> list[str]:
    """The log's rows on screen, as text, trailing blanks removed."""
    return widget_lines(app, app.message_log, content=True)


async def until(pilot: Pilot[None], condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds (the machine is busy: no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause()  # a laid-out screen, as app_helpers.until reads it
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await asyncio.sleep(0.01)


async def synced(pilot: Pilot[None], log: MessageLog) -> None:
    """Wait until the log has taken in every change (it does so once per burst)."""
    await pilot.pause()
    await until(pilot, lambda: not log.sync_due)
    await pilot.pause()


def _style_of(app: LogHost, y: int, text: str) -> object:
    style = style_at(app, app.message_log, y, text)
    # Without the offsets every row carries for mouse selection.
    return style.clear_meta_and_links() if style else None


# --- rendering -------------------------------------------------------------------------------


async def test_markup_and_escape_sequences_are_shown_literally() -> None:
    app = LogHost()
    async with app.run_test(size=(90, 10)) as pilot:
        app.say("[bold red]loud[/] [@click=app.quit]click me[/] \x1b[31mred\x1b[0m bell\x07")
        app.add(Entry(EntryKind.MESSAGE, "hi", T, "[b]evil\x1b[2J"))
        app.add(Entry(EntryKind.NOTICE, "[reverse]notice[/]\r\n\x9b31m", T))
        await synced(pilot, app.message_log)
        shown = rows(app)
        assert shown[0] == (
            "09:07 user_aaaaaa11 [bold red]loud[/] [@click=app.quit]click me[/] ␛[31mred␛[0m bell␇"
        )
        assert shown[1] == "09:07 [b]evil␛[2J hi"
        assert shown[2] == "09:07 · [reverse]notice[/]"
        assert shown[3] == "        \ufffd31m"
        segments = [seg.text for y in range(4) for seg in screen_segments(app, app.message_log, y)]
        assert not any(ch in text for text in segments for ch in "\x1b\x07\r\x9b")
        # A click on the markup that looks like an action does nothing.
        column = shown[0].index("[@click")
        await pilot.click(MessageLog, offset=(column + 3, 0))
        await pilot.pause()
        assert app.is_running


async def test_line_layout_kinds_and_marks() -> None:
    app = LogHost()
    async with app.run_test(size=(80, 10)) as pilot:
        app.say("hello")
        app.add(Entry(EntryKind.NOTICE, f"{BOB} joined the chat", T))
        app.add(Entry(EntryKind.ERROR, "you are sending too fast", T))
        app.add(Entry(EntryKind.STATUS, "connection lost", T))
        app.say("queued", ME, own=True, state=SendState.PENDING)
        app.say("nope", ME, own=True, state=SendState.REFUSED)
        await synced(pilot, app.message_log)
        assert rows(app)[:6] == [
            "09:07 user_aaaaaa11 hello",
            "09:07 · user_bbbbbb22 joined the chat",
            "09:07 ! you are sending too fast",
            "09:07 ── connection lost ──",
            "09:07 user_meeeee01 (pending) queued",
            "09:07 user_meeeee01 (refused) nope",
        ]


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
        await synced(pilot, app.message_log)
        alice0, alice1 = _style_of(app, 0, ALICE), _style_of(app, 1, ALICE)
        assert alice0 == alice1  # the same sender always gets the same colour
        assert alice0.color.name == sender_colour(ALICE)  # type: ignore[attr-defined]
        plain = _style_of(app, 0, "plain")
        mention = _style_of(app, 2, "ping ")
        assert mention.bgcolor != plain.bgcolor  # type: ignore[attr-defined]
        assert _style_of(app, 2, ME).underline  # type: ignore[attr-defined]
        own = _style_of(app, 3, ME)
        assert own.bold and own.reverse  # type: ignore[attr-defined]
        notice = _style_of(app, 4, "a notice")
        error = _style_of(app, 5, "an error")
        status = _style_of(app, 6, "a status ──")
        colours = {plain.color, notice.color, error.color, status.color}  # type: ignore[attr-defined]
        assert len(colours) == 4


async def test_multi_line_message_stays_together_under_its_sender() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 10)) as pilot:
        app.say("first line\nsecond line\n\tindented")
        app.say("after", BOB)
        await synced(pilot, app.message_log)
        pad = " " * len("09:07 user_aaaaaa11 ")
        assert rows(app)[:4] == [
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
        await synced(pilot, log)
        assert rows(app)[0] == f"09:07 user_aaaaaa11 {words}"
        await pilot.resize_terminal(50, 10)
        await until(pilot, lambda: rows(app)[1].strip() != "")
        width = log.scrollable_content_region.width
        shown = [row for row in rows(app) if row]
        pad = " " * len("09:07 user_aaaaaa11 ")
        assert shown[0].startswith("09:07 user_aaaaaa11 alpha")
        assert all(row.startswith(pad) for row in shown[1:])
        assert all(len(row) <= width for row in shown)
        assert " ".join(row.strip() for row in shown)[len("09:07 user_aaaaaa11 ") :] == words
        await pilot.resize_terminal(100, 10)
        await until(pilot, lambda: rows(app)[1] == "")
        assert rows(app)[0] == f"09:07 user_aaaaaa11 {words}"


# --- following and scrolling -------------------------------------------------------------------


async def test_follows_new_messages_at_the_bottom() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(30):
            app.say(f"message {n}")
        await synced(pilot, log)
        assert log.following
        assert rows(app)[-1] == "09:07 user_aaaaaa11 message 29"
        app.say("message 30")
        await synced(pilot, log)
        assert rows(app)[-1] == "09:07 user_aaaaaa11 message 30"
        assert log.unseen == 0


async def test_a_burst_of_changes_is_shown_whole() -> None:
    """However many entries arrive together, the log shows them, following the last."""
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        await synced(pilot, log)
        for n in range(500):
            app.say(f"message {n}")
        await synced(pilot, log)
        assert rows(app)[-1] == "09:07 user_aaaaaa11 message 499"


async def test_scrolled_up_view_does_not_move_and_counts_unseen() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"message {n}")
        log.focus()
        await synced(pilot, log)
        log.page(-1)
        await synced(pilot, log)
        assert not log.following
        before = rows(app)
        assert "message 39" not in "".join(before)
        for n in range(40, 45):
            app.say(f"message {n}")
        app.add(Entry(EntryKind.NOTICE, f"{BOB} joined the chat", T))  # not a message
        app.say("my own", ME, own=True)  # we know what we sent
        await synced(pilot, log)
        assert rows(app) == before
        assert log.unseen == 5
        assert app.unseen_seen[-1:] == [5]
        await pilot.press("end")
        await synced(pilot, log)
        assert log.following
        assert rows(app)[-1] == "09:07 user_meeeee01 my own"
        assert log.unseen == 0
        assert app.unseen_seen[-1:] == [0]


async def test_the_mouse_wheel_leaves_and_rejoins_the_bottom() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"message {n}")
        await synced(pilot, log)
        for _ in range(3):
            log.post_message(events.MouseScrollUp(log, 1, 1, 0, 0, 0, False, False, False))
        await until(pilot, lambda: not log.following)
        app.say("message 40")
        await synced(pilot, log)
        assert log.unseen == 1
        assert "message 40" not in "\n".join(rows(app))
        while not log.following:  # scrolling back down to the end follows again
            log.post_message(events.MouseScrollDown(log, 1, 1, 0, 0, 0, False, False, False))
            await pilot.pause()
        assert log.unseen == 0
        app.say("message 41")
        await synced(pilot, log)
        assert rows(app)[-1] == "09:07 user_aaaaaa11 message 41"


async def test_pagedown_back_to_the_end_follows_again() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"message {n}")
        await synced(pilot, log)
        log.page(-1)
        log.page(-1)
        await synced(pilot, log)
        top = rows(app)[0]
        log.page(1)
        await synced(pilot, log)
        assert rows(app)[0] != top and not log.following  # a page down, not yet the end
        log.page(1)
        await synced(pilot, log)
        assert log.following
        assert rows(app)[-1] == "09:07 user_aaaaaa11 message 39"


async def test_resize_keeps_a_scrolled_up_view_on_the_same_entry() -> None:
    app = LogHost()
    async with app.run_test(size=(100, 8)) as pilot:
        log = app.message_log
        for n in range(60):
            app.say(f"message {n} " + "word " * 12)
        await synced(pilot, log)
        while not rows(app)[0].startswith("09:07 user_aaaaaa11 message 20 "):
            log.post_message(events.MouseScrollUp(log, 1, 1, 0, 0, 0, False, False, False))
            await pilot.pause()
        await pilot.resize_terminal(50, 8)
        await until(
            pilot, lambda: log.virtual_size.width == log.scrollable_content_region.width < 50
        )
        await synced(pilot, log)
        assert rows(app)[0].startswith("09:07 user_aaaaaa11 message 20 ")
        assert not log.following


async def test_height_change_while_following_stays_at_the_bottom() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 20)) as pilot:
        log = app.message_log
        for n in range(50):
            app.say(f"message {n}")
        await synced(pilot, log)
        await pilot.resize_terminal(60, 6)
        # The last row is message 49 before the resize too: wait for the new size as well.
        await until(
            pilot,
            lambda: log.size.height == 6 and rows(app)[-1] == "09:07 user_aaaaaa11 message 49",
        )
        assert log.following


# --- bounded scrollback --------------------------------------------------------------------------


async def test_a_full_scrollback_still_shows_every_new_message_while_following() -> None:
    """Dropping as many entries as arrive changes neither the virtual size nor the scroll
    position, and the screen must still move on (issue 9, defect 1)."""
    app = LogHost(Scrollback(limit=20))
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(20):
            app.say(f"message {n}")
        await synced(pilot, log)
        for burst in range(5):
            for n in range(20 + burst * 7, 27 + burst * 7):
                app.say(f"message {n}")
            await synced(pilot, log)
            newest = 26 + burst * 7
            assert rows(app)[-1] == f"09:07 user_aaaaaa11 message {newest}"
            assert rows(app)[0] == f"09:07 user_aaaaaa11 message {newest - 7}"
        assert log.following and log.virtual_size.height == 20


async def test_scrolled_to_the_top_of_a_full_scrollback_shows_the_oldest_held() -> None:
    app = LogHost(Scrollback(limit=20))
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"message {n}")
        await synced(pilot, log)
        log.page(-1)
        log.page(-1)
        log.page(-1)
        await synced(pilot, log)
        assert round(log.scroll_y) == 0
        assert rows(app)[0] == "09:07 user_aaaaaa11 message 20"
        for n in range(40, 45):  # drops 20-24, the rows at the top of the view
            app.say(f"message {n}")
        await synced(pilot, log)
        assert rows(app)[0] == "09:07 user_aaaaaa11 message 25"
        assert rows(app)[-1] == "09:07 user_aaaaaa11 message 32"
        assert not log.following and log.unseen == 5


async def test_scrollback_is_bounded_and_drops_do_not_move_the_view() -> None:
    app = LogHost(Scrollback(limit=20))
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(100):
            app.say(f"message {n}")
        await synced(pilot, log)
        assert len(app.scrollback) == 20
        assert log.virtual_size.height == 20
        log.scroll_to(y=5, animate=False)  # message 85 at the top
        await synced(pilot, log)
        assert rows(app)[0] == "09:07 user_aaaaaa11 message 85" and not log.following
        for n in range(100, 103):  # drops 80, 81, 82: above the view
            app.say(f"message {n}")
        await synced(pilot, log)
        assert rows(app)[0] == "09:07 user_aaaaaa11 message 85"
        for n in range(103, 110):  # now 85 itself goes: the oldest left is at the top
            app.say(f"message {n}")
        await synced(pilot, log)
        assert rows(app)[0] == "09:07 user_aaaaaa11 message 90"
        assert log.unseen == 10
        log.scroll_to_bottom()
        await synced(pilot, log)
        assert rows(app)[-1] == "09:07 user_aaaaaa11 message 109"


async def test_ten_thousand_entries_are_kept_and_shown() -> None:
    app = LogHost()
    async with app.run_test(size=(80, 10)) as pilot:
        log = app.message_log
        for n in range(12_000):
            app.say(f"message {n}")
        await synced(pilot, log)
        assert len(app.scrollback) == 10_000
        assert rows(app)[-1] == "09:07 user_aaaaaa11 message 11999"
        log.scroll_home(animate=False)
        await synced(pilot, log)
        assert rows(app)[0] == "09:07 user_aaaaaa11 message 2000"


# --- send states, switching, clearing, the divider, search ----------------------------------


async def test_pending_message_becomes_sent_or_refused() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        first = app.say("one", ME, own=True, state=SendState.PENDING)
        second = app.say("two", ME, own=True, state=SendState.PENDING)
        await synced(pilot, app.message_log)
        assert rows(app)[:2] == [
            "09:07 user_meeeee01 (pending) one",
            "09:07 user_meeeee01 (pending) two",
        ]
        first.state = SendState.SENT
        app.scrollback.touch(first)
        second.state = SendState.REFUSED
        app.scrollback.touch(second)
        await synced(pilot, app.message_log)
        assert rows(app)[:2] == [
            "09:07 user_meeeee01 one",
            "09:07 user_meeeee01 (refused) two",
        ]


async def test_a_pending_mark_that_changes_the_height_keeps_rows_consistent() -> None:
    app = LogHost()
    async with app.run_test(size=(44, 8)) as pilot:
        # 42 cells wide: "(pending) " pushes the last word to a second row.
        entry = app.say("aaaaaaa bbbbbbb", ME, own=True, state=SendState.PENDING)
        app.say("after", BOB)
        await synced(pilot, app.message_log)
        assert rows(app)[:3] == [
            "09:07 user_meeeee01 (pending) aaaaaaa",
            "                    bbbbbbb",
            "09:07 user_bbbbbb22 after",
        ]
        entry.state = SendState.SENT
        app.scrollback.touch(entry)
        await synced(pilot, app.message_log)
        assert rows(app)[:3] == [
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
        await synced(pilot, log)
        log.page(-1)
        await synced(pilot, log)
        general_view = rows(app)
        log.show(other)
        await synced(pilot, log)
        assert rows(app)[-1] == "09:07 user_bbbbbb22 other 39"  # new room: at its bottom
        app.add(Entry(EntryKind.MESSAGE, "other 40", T, BOB), other)
        app.say("general 40")  # not shown: the log does not move
        await synced(pilot, log)
        assert rows(app)[-1] == "09:07 user_bbbbbb22 other 40"
        log.show(app.scrollback)
        await synced(pilot, log)
        assert rows(app) == general_view
        assert log.unseen == 1  # general 40 arrived while we were away, scrolled up


async def test_entering_with_new_messages_goes_to_the_divider_wherever_the_view_was() -> None:
    """Left scrolled up (e.g. at the last visit's divider), a room shows its new divider."""
    app = LogHost()
    other = Scrollback()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"old {n}")
        await synced(pilot, log)
        log.page(-1)
        await synced(pilot, log)
        log.show(other)
        first_new = app.say("new 0")
        for n in range(1, 20):
            app.say(f"new {n}")
        app.scrollback.marker = first_new  # what Room.look() does on entering
        log.show(app.scrollback)
        await synced(pilot, log)
        shown = rows(app)
        assert shown[0] == "09:07 user_aaaaaa11 old 39"
        assert shown[1].strip("─") == " new messages "
        assert shown[2] == "09:07 user_aaaaaa11 new 0"
        assert log.unseen == 20 - (len(shown) - 2)  # the rest of them, below


async def test_showing_the_shown_scrollback_again_leaves_the_view_alone() -> None:
    """/join of the active room (or picking it in the switcher) must not move the view."""
    app = LogHost()
    other = Scrollback()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(40):
            app.say(f"line {n}")
        await synced(pilot, log)
        log.page(-1)
        await synced(pilot, log)
        log.show(other)
        log.show(app.scrollback)  # back where it was, scrolled up
        await synced(pilot, log)
        log.scroll_to_bottom()
        await synced(pilot, log)
        assert rows(app)[-1] == "09:07 user_aaaaaa11 line 39"
        log.show(app.scrollback)
        app.say("line 40")
        await synced(pilot, log)
        assert rows(app)[-1] == "09:07 user_aaaaaa11 line 40"
        assert log.following


async def test_restyle_and_clear_are_shown() -> None:
    names = {"me": ALICE}

    class Host(LogHost):
        def compose(self) -> ComposeResult:
            yield MessageLog(own_name=lambda: names["me"])

    app = Host()
    async with app.run_test(size=(60, 8)) as pilot:
        app.say("hello")
        await synced(pilot, app.message_log)
        assert _style_of(app, 0, ALICE).reverse  # type: ignore[attr-defined]
        names["me"] = BOB  # reconnected under another name
        app.scrollback.restyle()
        await synced(pilot, app.message_log)
        assert not _style_of(app, 0, ALICE).reverse  # type: ignore[attr-defined]
        app.scrollback.clear()
        await synced(pilot, app.message_log)
        assert rows(app) == [""] * app.message_log.size.height
        app.say("fresh")
        await synced(pilot, app.message_log)
        assert rows(app)[0] == "09:07 user_aaaaaa11 fresh"


async def test_the_new_messages_divider_sits_above_the_first_unread() -> None:
    app = LogHost()
    async with app.run_test(size=(40, 8)) as pilot:
        app.say("read before")
        unread = app.say("first unread")
        app.say("second unread")
        app.scrollback.marker = unread
        await synced(pilot, app.message_log)
        assert rows(app)[:4] == [
            "09:07 user_aaaaaa11 read before",
            "──────────── new messages ────────────",
            "09:07 user_aaaaaa11 first unread",
            "09:07 user_aaaaaa11 second unread",
        ]
        app.scrollback.marker = None
        await synced(pilot, app.message_log)
        assert rows(app)[1] == "09:07 user_aaaaaa11 first unread"


async def test_search_highlights_matches_and_steps_from_the_newest() -> None:
    app = LogHost()
    async with app.run_test(size=(60, 8)) as pilot:
        log = app.message_log
        for n in range(30):
            app.say(f"line {n} {'the Fox' if n % 10 == 3 else 'nothing'}")
        await synced(pilot, log)
        assert log.search("fox") == (1, 3)  # case-insensitive; 1 is the newest
        await synced(pilot, log)
        row = next(i for i, text in enumerate(rows(app)) if "line 23" in text)
        current = _style_of(app, row, "Fox")
        plain = _style_of(app, row, "line 23 the ")
        assert current.bgcolor != plain.bgcolor  # type: ignore[attr-defined]
        assert log.search_step(older=True) == (2, 3)
        await synced(pilot, log)
        assert any("line 13 the Fox" in text for text in rows(app))  # scrolled to it
        assert not log.following
        assert log.search_step(older=True) == (3, 3)
        assert log.search_step(older=True) == (1, 3)  # wraps around
        app.say("a new fox")
        await synced(pilot, log)
        assert log.search_result == (2, 4)  # the current match stays; a newer one came
        log.end_search()
        await synced(pilot, log)
        assert log.search_result == (0, 0)


# --- selection ------------------------------------------------------------------------------------


def _contrast(a: RichColor, b: RichColor) -> float:
    def luminance(colour: RichColor) -> float:
        channels = []
        for value in colour.get_truecolor():
            c = value / 255
            channels.append(c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
        r, g, b_ = channels
        return 0.2126 * r + 0.7152 * g + 0.0722 * b_

    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


async def test_selected_text_is_readable_in_every_theme() -> None:
    """The selection's cells must not get the same colour for text and background (issue 9,
    defect 3): checked on the cells as composed, in every theme the config accepts."""
    app = LogHost()
    async with app.run_test(size=(60, 6)) as pilot:
        log = app.message_log
        app.say("select these words please")
        await synced(pilot, log)
        column = rows(app)[0].index("select")
        await pilot.mouse_down(log, offset=(column, 0))
        await pilot.hover(log, offset=(column + 12, 0))
        await pilot.mouse_up(log, offset=(column + 12, 0))
        await until(pilot, lambda: app.screen.get_selected_text() is not None)
        problems = []
        for theme in sorted(app.available_themes):
            app.theme = theme
            await pilot.pause()
            cells = []
            position = 0
            for segment in screen_segments(app, log, 0):
                if column <= position < column + 12 and segment.text.strip():
                    cells.append(segment.style)
                position += len(segment.text)
            assert cells, theme
            for style in cells:
                assert style is not None and style.color is not None and style.bgcolor
                if style.color == style.bgcolor:
                    problems.append((theme, str(style)))
                elif style.color.is_system_defined or style.bgcolor.is_system_defined:
                    continue  # ANSI colours: the terminal's palette decides how they look
                elif (ratio := _contrast(style.color, style.bgcolor)) < 3:
                    problems.append((theme, str(style), round(ratio, 2)))
        assert problems == []
