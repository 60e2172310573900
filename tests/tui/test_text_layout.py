"""Text layout without Textual: safe display, wrapping, measuring, search spans, fitting."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from chat_tui.scrollback import Entry, EntryKind, SendState
from chat_tui.text_layout import (
    KIND_MARKS,
    contains,
    display_line,
    display_lines,
    entry_height,
    find_spans,
    fit_parts,
    plan_entry,
    sender_colour,
    truncate,
    wrap,
)

T = datetime(2024, 5, 1, 9, 7)
ALICE = "user_aaaaaa11"


def test_control_characters_become_visible_pictures() -> None:
    assert display_line("plain") == "plain"
    assert display_line("\x1b[31mred\x07") == "␛[31mred␇"
    assert display_line("a\tb") == "a   b"
    assert display_line("\x9b31m \u202e") == "\ufffd31m \ufffd"  # C1 and bidi overrides
    assert display_lines("one\r\ntwo\nthree") == ["one", "two", "three"]


def test_find_spans_is_case_insensitive_and_keeps_positions() -> None:
    assert find_spans("The Fox and the fox", "fox") == [(4, 7), (16, 19)]
    assert find_spans("nothing", "") == []
    # "İ" lowers to two characters: positions after it must not drift.
    assert find_spans("İstanbul FOX", "fox") == [(9, 12)]
    assert contains("Moonstone", "MOON") and not contains("moon", "")


def test_fit_parts_drops_the_least_important_first_and_keeps_order() -> None:
    parts = [("ws://server", 5), ("#room", 1), ("you are me", 3), ("offline, retrying in 7 s", 0)]
    assert fit_parts(parts, 100) == "ws://server │ #room │ you are me │ offline, retrying in 7 s"
    assert fit_parts(parts, 45) == "#room │ you are me │ offline, retrying in 7 s"
    assert fit_parts(parts, 34) == "#room │ offline, retrying in 7 s"
    assert fit_parts(parts, 24) == "offline, retrying in 7 s"  # the state is never cut first
    assert fit_parts(parts, 10) == "offline, …"
    assert truncate("abcdef", 4) == "abc…" and truncate("ab", 4) == "ab"


def test_fit_parts_puts_back_what_fits_once_a_long_part_went() -> None:
    """Issue 17: a long detail that cannot fit must not take the name and server with it."""
    detail = "cannot connect: " + "x" * 100
    parts = [
        ("ws://server", 6), ("#room", 1), ("you are me", 5), ("offline", 0), (detail, 4),
        ("1 pending", 2),
    ]  # fmt: skip
    assert fit_parts(parts, 120) == "ws://server │ #room │ you are me │ offline │ 1 pending"
    assert fit_parts(parts, 40) == "#room │ you are me │ offline │ 1 pending"


def test_sender_colours_are_stable_across_processes_and_spread() -> None:
    # Python's own hash() of a str changes with every process: the colour must not.
    code = "from chat_tui.text_layout import sender_colour as c; print(c('user_aaaaaa11'))"
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


def test_a_word_longer_than_a_row_fills_every_row_it_is_cut_into() -> None:
    assert wrap("x" * 25, 10, 7) == [(0, 10), (10, 17), (17, 24), (24, 25)]
    assert wrap("ok " + "x" * 12, 10, 7) == [(0, 2), (3, 10), (10, 15)]
    assert wrap("日本" * 6, 10, 7) == [(0, 5), (5, 8), (8, 11), (11, 12)]


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
    dated: bool,
) -> None:
    """Arrivals are measured by a shortcut; rendering follows the plan: they must agree."""
    entry = Entry(kind, text, T, sender, state=state, dated=dated)
    # Half of the widths right around "the whole entry on one row", where it matters most.
    shown = T.strftime(f"%b %d {fmt}" if dated else fmt)
    one_row = cell_len(shown) + cell_len(sender or "?") + 2 + cell_len(text)
    if kind is not EntryKind.MESSAGE:  # "time mark text" (a notice: a flood of them is common)
        one_row = cell_len(shown) + 1 + len(KIND_MARKS[kind]) + cell_len(text)
        one_row += 3 if kind is EntryKind.STATUS else 0
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


def test_a_dated_entry_is_measured_with_its_date() -> None:
    """An entry of another day shows "May 01 09:07": the shortcut measured it with "09:07"
    and said one row where the plan drew two (the log's rows then disagreed with its
    height)."""
    for kind in EntryKind:
        entry = Entry(kind, "x" * 20, T, "bob", dated=True)
        for width in range(20, 60):
            planned = len(plan_entry(entry, width, "%H:%M").rows)
            assert entry_height(entry, width, "%H:%M") == planned, (kind, width)
