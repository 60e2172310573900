"""Text layout for the terminal, Textual-free: safe display, wrapping, measuring, fitting.

Everything here is a pure function of strings and widths, so it is unit-tested without an app:

* :func:`display_line` makes untrusted text safe to put on screen (control characters become
  visible control pictures, so ESC shows as "␛" and never reaches the terminal);
* :func:`wrap` and :func:`plan_entry` decide where every character of a log entry goes at a
  given width, and :func:`entry_height` answers how many rows that takes without planning the
  common case;
* :func:`find_spans` finds what a search or our own name picks out in a line;
* :func:`fit_parts` fits the parts of a status line into a width, dropping the least
  important parts first.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.cells import cell_len as rich_cell_len
from rich.cells import get_character_cell_size

from chat_protocol.text import (
    ACTION_PREFIX,
    BIDI_CONTROLS,
    LINE_SEPARATORS,
    SURROGATES,
    action_text,
)
from chat_tui.scrollback import Entry, EntryKind, SendState

# --- measuring ----------------------------------------------------------------------------------


def cell_len(text: str) -> int:
    """Cells ``text`` takes on screen: Rich's ``cell_len``, with printable ASCII (one cell a
    character) answered at once. Rich keeps the last 4,096 strings it measured in a cache:
    every message's text would go through it (and stay alive in it) for nothing."""
    if text.isascii() and text.isprintable():
        return len(text)
    return rich_cell_len(text)


# --- text made safe for display -------------------------------------------------------------

_DISPLAY_TABLE: dict[int, str] = {c: chr(0x2400 + c) for c in range(0x20)}  # ␀ ... ␟
_DISPLAY_TABLE[0x7F] = "\u2421"  # ␡
_DISPLAY_TABLE.update({c: "\ufffd" for c in range(0x80, 0xA0)})  # C1 controls (CSI = 0x9b)
# Bidi overrides could reorder the rest of the row on screen; line/paragraph separators could
# be taken as line breaks by some terminals.
_DISPLAY_TABLE.update({ord(c): "\ufffd" for c in BIDI_CONTROLS + LINE_SEPARATORS})
# A lone surrogate (JSON can carry one) cannot be written to a terminal at all.
_DISPLAY_TABLE.update({ord(c): "\ufffd" for c in SURROGATES})
TAB_SIZE = 4


def display_line(line: str) -> str:
    """One line of untrusted text, made safe to put on screen (no "\\n" expected)."""
    if line.isprintable():  # the common case: nothing to replace
        return line
    if "\t" in line:
        line = line.expandtabs(TAB_SIZE)
    return line.translate(_DISPLAY_TABLE)


def display_lines(text: str) -> list[str]:
    return [display_line(line) for line in text.replace("\r\n", "\n").split("\n")]


# --- wrapping ---------------------------------------------------------------------------------

_TOKENS = re.compile(r"\s+|\S+")


def wrap(line: str, first: int, rest: int) -> list[tuple[int, int]]:
    """Greedy word wrap of one line into ``(start, end)`` character ranges.

    The first row has ``first`` cells, the others ``rest``. Words longer than a row are cut;
    the spaces where a row breaks are dropped. Always returns at least one range.
    """
    avail = max(first, 1)
    if cell_len(line) <= avail:
        return [(0, len(line))]
    rest = max(rest, 1)
    rows: list[tuple[int, int]] = []
    start = 0  # first character of the current row
    used = 0  # cells used on the current row
    for match in _TOKENS.finditer(line):
        token = match.group()
        pos = match.start()
        width = cell_len(token)
        if token[0].isspace():
            if pos == start and rows:
                start = match.end()  # no leading spaces on a wrapped row
            elif used + width <= avail:
                used += width
            else:  # break here; the spaces vanish
                rows.append((start, pos))
                start, used, avail = match.end(), 0, rest
            continue
        if used + width <= avail:
            used += width
            continue
        if used > 0:  # the word goes to the next row
            rows.append((start, _rstrip(line, start, pos)))
            start, used, avail = pos, 0, rest
        if width <= avail:
            used = width
            continue
        if token.isascii() and token.isprintable():  # one cell a character: cut by counting
            offset, end = pos, match.end()
            while used + end - offset > avail:
                offset += max(avail - used, 1)
                rows.append((start, offset))
                start, used, avail = offset, 0, rest
            used += end - offset
            continue
        for offset, char in enumerate(token, pos):  # cut a word longer than a row
            size = get_character_cell_size(char)
            if used + size > avail and used > 0:
                rows.append((start, offset))
                start, used, avail = offset, 0, rest
            used += size
    rows.append((start, _rstrip(line, start, len(line))))
    return rows


def _rstrip(line: str, start: int, end: int) -> int:
    while end > start and line[end - 1] == " ":
        end -= 1
    return end


# --- layout of one entry ----------------------------------------------------------------------

PENDING_MARK = "(pending) "
REFUSED_MARK = "(refused) "
KIND_MARKS = {EntryKind.NOTICE: "· ", EntryKind.ERROR: "! ", EntryKind.STATUS: "── "}
# Below this many cells for text, the first row holds only the time and sender.
MIN_TEXT_CELLS = 10
ACTION_MARK = "* "  # before the sender of an action (/me)


@dataclass(slots=True)
class Plan:
    """Where every character of an entry goes at one width; its height is ``len(rows)``."""

    head: list[tuple[str, str]]  # (text, style role) pieces of the first row
    head_alone: bool  # the text starts on the row after the head
    indent: int  # cells before the text on the other rows
    lines: list[str]  # display-safe logical lines
    rows: list[tuple[int, int, int]]  # (logical line, start, end); line -1: the head alone


@functools.lru_cache(maxsize=1024)
def stamp(moment: datetime, time_format: str) -> str:
    # Cached: the entries of a burst share one time, and strftime is most of measuring one.
    return display_line(moment.strftime(time_format))


def plan_entry(entry: Entry, width: int, time_format: str) -> Plan:
    time_text = stamp(entry.time, f"%b %d {time_format}" if entry.dated else time_format)
    text = entry.text
    if entry.kind is EntryKind.MESSAGE:
        sender = display_line((entry.sender or "?").replace("\n", " "))
        acted = action_text(text)
        if acted is None:
            head = [(time_text, "time"), (" ", ""), (sender, "sender"), (" ", "")]
        else:  # "* alice waves"
            text = acted
            head = [(time_text, "time"), (" ", ""), (ACTION_MARK, "")]
            head += [(sender, "sender"), (" ", "")]
        text_column = sum(cell_len(piece) for piece, _ in head)
        if entry.state is SendState.PENDING:
            head.append((PENDING_MARK, "pending-mark"))
        elif entry.state is SendState.REFUSED:
            head.append((REFUSED_MARK, "refused-mark"))
    else:
        mark = KIND_MARKS[entry.kind]
        if entry.kind is EntryKind.STATUS and "\n" not in text:
            text = f"{text} ──"
        head = [(time_text, "time"), (" ", ""), (mark, "mark")]
        text_column = cell_len(time_text) + 1 + cell_len(mark)
    head_width = sum(cell_len(piece) for piece, _ in head)
    # Continuation rows line up with the text; a long sender on a narrow log only costs
    # the time column, so the text keeps at least half of the row.
    narrow = min(cell_len(time_text) + 1, width // 4)
    indent = text_column if text_column <= width // 2 else narrow
    lines = display_lines(text)
    first = width - head_width
    rest = width - indent
    head_alone = first < min(MIN_TEXT_CELLS, rest)
    rows: list[tuple[int, int, int]] = []
    if head_alone:
        rows.append((-1, 0, 0))
        first = rest
    for number, line in enumerate(lines):
        for start, end in wrap(line, first, rest):
            rows.append((number, start, end))
        first = rest
    return Plan(head, head_alone, indent, lines, rows)


def entry_height(entry: Entry, width: int, time_format: str, hide_quiet: bool = False) -> int:
    """Rows of ``entry`` at ``width``: ``len(plan_entry(...).rows)``, without the plan.

    Every entry is measured as it arrives, so the common case (a sent message of one printable
    line that fits beside its head) is answered directly; anything else is planned.
    """
    if entry.quiet and hide_quiet:
        return 0
    text = entry.text
    sender = entry.sender or "?"
    when = stamp(entry.time, f"%b %d {time_format}" if entry.dated else time_format)
    if (
        entry.kind is EntryKind.MESSAGE
        and entry.state is SendState.SENT
        and text.isprintable()
        and sender.isprintable()
        and not text.startswith(ACTION_PREFIX)
    ):
        # As plan_entry: the head is "time sender ", the text starts right after it.
        first = width - cell_len(when) - cell_len(sender) - 2
        if first >= MIN_TEXT_CELLS and cell_len(text) <= first:
            return 1
    elif entry.kind is not EntryKind.MESSAGE and text.isprintable():
        # A notice of one line (a flood of joins or renames is thousands): "time mark text".
        if entry.kind is EntryKind.STATUS:
            text = f"{text} ──"
        first = width - cell_len(when) - 1 - len(KIND_MARKS[entry.kind])
        if first >= MIN_TEXT_CELLS and cell_len(text) <= first:
            return 1
    return len(plan_entry(entry, width, time_format).rows)


# --- what a line picks out ------------------------------------------------------------------------


def find_spans(line: str, needle: str) -> list[tuple[int, int]]:
    """Where ``needle`` occurs in ``line``, case-insensitively, as ``(start, end)`` ranges.

    Positions are those of ``line`` itself: folding is done character by character, and only
    characters whose lower case is one character long are folded (the others must match as
    they are), so that positions never drift.
    """
    if not needle:
        return []
    folded_line = _fold(line)
    folded = _fold(needle)
    spans: list[tuple[int, int]] = []
    start = folded_line.find(folded)
    while start != -1:
        spans.append((start, start + len(folded)))
        start = folded_line.find(folded, start + len(folded))
    return spans


def _fold(text: str) -> str:
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def contains(text: str, needle: str) -> bool:
    """Whether ``needle`` occurs in ``text``, as :func:`find_spans` would find it."""
    return bool(needle) and _fold(needle) in _fold(text)


# --- sender colours -----------------------------------------------------------------------------

# Readable on dark and light backgrounds alike.
SENDER_COLOURS: tuple[str, ...] = (
    "#e06c75",
    "#98c379",
    "#d19a66",
    "#61afef",
    "#c678dd",
    "#56b6c2",
    "#e5a50a",
    "#2ec27e",
    "#f66151",
    "#3584e4",
    "#b07fe0",
    "#d4843e",
)


def sender_colour(name: str) -> str:
    """The same colour for a name in every run (crc32: ``hash()`` is randomised per process)."""
    return SENDER_COLOURS[zlib.crc32(name.encode("utf-8", "replace")) % len(SENDER_COLOURS)]


# --- fitting a status line ------------------------------------------------------------------------

ELLIPSIS = "…"


def fit_parts(parts: Sequence[tuple[str, int]], width: int, separator: str = " │ ") -> str:
    """``parts`` joined by ``separator`` in their order, cut to ``width`` cells.

    Each part has a priority (0 = most important). While the line is too wide, the least
    important part goes (the last one of equal priority first); then the parts that went
    come back, the most important first, wherever they fit again (a long part that had to go
    may have made room for them). The most important part left is shortened with "…" only
    when it alone is too wide.
    """
    kept = [(index, text, priority) for index, (text, priority) in enumerate(parts) if text]
    dropped = []

    def joined(chosen: list[tuple[int, str, int]]) -> str:
        return separator.join(text for _, text, _ in chosen)

    line = joined(kept)
    while cell_len(line) > width and len(kept) > 1:
        worst = max(range(len(kept)), key=lambda k: (kept[k][2], k))
        dropped.append(kept.pop(worst))
        line = joined(kept)
    for part in sorted(dropped, key=lambda part: (part[2], part[0])):
        trial = sorted([*kept, part])  # in their order on the line
        if cell_len(joined(trial)) <= width:
            kept = trial
            line = joined(kept)
    if cell_len(line) <= width:
        return line
    return truncate(line, width)


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells, ending in "…" when something was cut."""
    if cell_len(text) <= width:
        return text
    if width <= 0:
        return ""
    cells = 0
    for index, char in enumerate(text):
        size = get_character_cell_size(char)
        if cells + size > width - 1:
            return text[:index] + ELLIPSIS
        cells += size
    return text  # pragma: no cover -- the loop returns before the end
