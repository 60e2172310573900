"""Searching every log on disk (and the live scrollbacks), Textual-free.

The logs are the files :mod:`chat_tui.logbook` writes (``ROOT/SERVER/ROOM/YYYY-MM-DD.log``).
A year of them is about a million lines (80 MB), and a search must answer in well under a
second even when nothing matches, so no file is looked at line by line in Python: each is read
whole as bytes, lowered (ASCII) and searched with ``bytes.rfind`` from its end, which gives the
newest hits first; only the lines around a hit are split and parsed. Files are read newest day
first and the search stops after the day on which ``limit`` hits were reached.

A query matches anywhere in an entry but its time stamp (and the indentation of its
continuation lines): ``alice`` finds alice's messages and those that name her, ``-!-`` the
notices. Case is ignored: ASCII case for an ASCII query (the fast path), Unicode lower case
for any other (the file is decoded first: about as fast, see ``bench/grep_bench.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Final, Literal
from urllib.parse import unquote

from chat_protocol.names import DIRECT_PREFIX
from chat_protocol.text import action_text
from chat_tui.logbook import (
    CONTINUATION,
    DAY_FORMAT,
    MARK,
    SUFFIX,
    clean_name,
    clean_text,
    server_dirname,
)
from chat_tui.scrollback import Entry, EntryKind, Frozen

HitKind = Literal["message", "action", "notice", "error", "status"]

STAMP_WIDTH: Final = len("HH:MM:SS ")
_LINE: Final = re.compile(
    r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) "
    r"(?:(?P<sender>\S+) :: (?P<said>.*)|\* (?P<actor>\S+) (?P<acted>.*)|"
    + re.escape(MARK)
    + r" (?P<marked>.*))",
    re.DOTALL,
)
_DAY_FILE: Final = re.compile(r"\d{4}-\d\d-\d\d" + re.escape(SUFFIX))


@dataclass(frozen=True, slots=True)
class Hit:
    """One entry that matched: from a log file (``path``, 1-based ``line_number`` of its first
    line) or from a live scrollback (both None). ``when`` is local, naive time."""

    room: str
    when: datetime
    sender: str | None
    text: str
    source: Literal["log", "live"]
    path: Path | None
    line_number: int | None
    kind: HitKind = "message"
    server: str | None = None  # the server's directory name (logbook.server_dirname)
    entry: Entry | None = field(default=None, compare=False)  # a live hit's, to show it
    # A live hit read from a frozen scrollback: its absolute index there (Scrollback.held).
    index: int | None = field(default=None, compare=False)


# --- reading lines back ---------------------------------------------------------------------


def parse_line(line: str) -> tuple[time, HitKind, str | None, str] | None:
    """The time, kind, sender and text of a logged entry (its continuation lines joined in,
    without their indentation); None if ``line`` is not one the logbook writes.

    Notices, errors and status lines are all marked alike (``-!-``): they read back as
    "notice".
    """
    first, _, rest = line.rstrip("\n").partition("\n")
    found = _LINE.fullmatch(first)
    if found is None:
        return None
    try:
        moment = time(int(found["h"]), int(found["m"]), int(found["s"]))
    except ValueError:  # 25:61:00
        return None
    if found["sender"] is not None:
        kind: HitKind = "message"
        sender: str | None = found["sender"]
        text = found["said"]
    elif found["actor"] is not None:
        kind, sender, text = "action", found["actor"], found["acted"]
    else:
        kind, sender, text = "notice", None, found["marked"]
    if rest:
        more = [
            part[len(CONTINUATION) :] if part.startswith(CONTINUATION) else part.lstrip(" ")
            for part in rest.split("\n")
        ]
        text = "\n".join([text, *more])
    return moment, kind, sender, text


def context(path: Path, line_number: int, around: int = 5) -> list[str]:
    """The lines of ``path`` from ``around`` before line ``line_number`` (1-based) to ``around``
    after it, without their "\\n" (fewer near either end of the file)."""
    lines = path.read_bytes().decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file ends in "\n"
    first = max(line_number - 1 - around, 0)
    return lines[first : max(line_number + around, 0)]


# --- searching the logs -----------------------------------------------------------------------


def search_logs(root: Path, server: str | None, query: str, *, limit: int = 200) -> list[Hit]:
    """The ``limit`` newest entries that contain ``query`` in the logs of every server under
    ``root`` (or of ``server``, a ws:// URL or its directory name), newest first."""
    needle = clean_text(query)
    if not needle.strip() or limit <= 0:
        return []
    ascii_query = needle.isascii()
    folded: bytes | str = needle.lower().encode() if ascii_query else _fold(needle)
    hits: list[Hit] = []
    for day, files in _days(root, server):
        of_day: list[Hit] = []
        for server_name, room, path in files:
            try:
                data = path.read_bytes()
            except OSError:  # removed meanwhile, unreadable: the other logs still count
                continue
            of_day += _search_file(data, folded, ascii_query, limit, day, server_name, room, path)
        of_day.sort(key=lambda hit: (hit.when, hit.room, hit.line_number or 0), reverse=True)
        hits += of_day
        if len(hits) >= limit:
            break
    return hits[:limit]


def _days(root: Path, server: str | None) -> list[tuple[date, list[tuple[str, str, Path]]]]:
    """The day files under ``root``, grouped by day, newest day first."""
    by_day: dict[str, list[tuple[str, str, Path]]] = {}
    servers = [server_dirname(server)] if server is not None else _names(root)
    for server_name in servers:
        for room_name in _names(root / server_name):
            room = unquote(room_name)  # logbook.room_dirname escapes an invalid name
            try:
                entries = os.scandir(root / server_name / room_name)
            except OSError:
                continue
            with entries:
                for entry in entries:
                    if _DAY_FILE.fullmatch(entry.name):
                        by_day.setdefault(entry.name, []).append(
                            (server_name, room, Path(entry.path))
                        )
    days = []
    for name in sorted(by_day, reverse=True):
        try:
            day = datetime.strptime(name[: -len(SUFFIX)], DAY_FORMAT).date()
        except ValueError:  # 2024-13-45.log
            continue
        days.append((day, by_day[name]))
    return days


def _names(directory: Path) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]
    except OSError:
        return []


def _search_file(
    data: bytes,
    folded: bytes | str,
    ascii_query: bool,
    limit: int,
    day: date,
    server: str,
    room: str,
    path: Path,
) -> list[Hit]:
    """At most ``limit`` hits in one file, newest (last) first."""
    haystack: bytes | str
    if ascii_query:
        haystack, newline, space = data.lower(), b"\n", b" "
    else:
        # Unicode case needs text, lowered without moving any character (see _fold).
        text = data.decode("utf-8", "replace")
        haystack, newline, space = _fold(text), "\n", " "
    hits: list[Hit] = []
    end = len(haystack)  # search before this
    # Line numbers: the newlines before the first hit are counted once; for each next one, only
    # those between it and the hit after it (``anchor``).
    anchor, lines_before_anchor = -1, 0
    while len(hits) < limit:
        at = haystack.rfind(folded, 0, end)
        if at < 0:
            break
        line_start = haystack.rfind(newline, 0, at) + 1
        indent = len(CONTINUATION) if haystack[line_start : line_start + 1] == space else 0
        if at - line_start < (indent or STAMP_WIDTH):
            # In the time stamp or the indentation: not a match. It is the rightmost one of
            # its line (before ``end``), so the line holds none: go on before it.
            end = line_start + len(folded) - 1
            continue
        # The entry: back to its first line, on over its continuation lines.
        start = line_start
        while start > 0 and haystack[start : start + 1] == space:
            start = haystack.rfind(newline, 0, start - 1) + 1
        stop = haystack.find(newline, at)
        while stop != -1 and haystack[stop + 1 : stop + 2] == space:
            stop = haystack.find(newline, stop + 1)
        stop = len(haystack) if stop == -1 else stop
        if anchor < 0:
            lines_before_start = haystack.count(newline, 0, start)
        else:
            lines_before_start = lines_before_anchor - haystack.count(newline, start, anchor)
        raw = data[start:stop].decode("utf-8", "replace") if ascii_query else text[start:stop]
        hits.append(_hit(raw, day, server, room, path, lines_before_start + 1))
        end = anchor = start  # the rest of this entry is in this hit
        lines_before_anchor = lines_before_start
    return hits


def _hit(raw: str, day: date, server: str, room: str, path: Path, line_number: int) -> Hit:
    parsed = parse_line(raw)
    if parsed is None:  # not written by the logbook (edited, cut short): shown as it is
        moment, kind, sender, text = time(0), "notice", None, raw
    else:
        moment, kind, sender, text = parsed
    return Hit(
        room=room,
        when=datetime.combine(day, moment),
        sender=sender,
        text=text,
        source="log",
        path=path,
        line_number=line_number,
        kind=kind,
        server=server,
    )


# --- the live scrollbacks -------------------------------------------------------------------


def _fold(text: str) -> str:
    """Lower case that keeps every character where it is: one that lowers into two ("İ")
    stays as it is (as chat_tui.text_layout folds for the in-room search)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def search_live(
    rooms: Iterable[tuple[str, Frozen | Iterable[Entry]]], query: str, *, limit: int = 200
) -> list[Hit]:
    """The ``limit`` newest entries of live scrollbacks (``(room, entries)`` pairs, entries
    oldest first as a Scrollback iterates, or a scrollback frozen for this thread) whose text
    or sender contains ``query``."""
    needle = _fold(query)
    if not needle.strip() or limit <= 0:
        return []
    hits: list[Hit] = []
    for room, entries in rooms:
        # Newest first within the room: entries of the same time (a burst) stay in the
        # room's order, reversed, through the stable sort below.
        if isinstance(entries, Frozen):
            newest: Iterable[tuple[int | None, Entry]] = entries.newest_first()
        else:
            newest = ((None, entry) for entry in reversed(list(entries)))
        for index, entry in newest:
            if needle in _fold(entry.text) or (
                entry.sender is not None and needle in _fold(entry.sender)
            ):
                hits.append(_live_hit(room, entry, index))
    hits.sort(key=lambda hit: hit.when, reverse=True)
    return hits[:limit]


def _live_hit(room: str, entry: Entry, index: int | None = None) -> Hit:
    kind: HitKind = "message"
    text = entry.text
    if entry.kind is EntryKind.MESSAGE:
        acted = action_text(text)
        if acted is not None:
            kind, text = "action", acted
    else:
        kind = entry.kind.value
    when = entry.time.astimezone().replace(tzinfo=None) if entry.time.tzinfo else entry.time
    return Hit(room, when, entry.sender, text, "live", None, None, kind, entry=entry, index=index)


def _where(room: str) -> str:
    """A room, or any conversation: one follows its person across name changes while its
    logs stay under the name it had (``@Bob`` logged, ``@Robert`` live, the same lines)."""
    return DIRECT_PREFIX if room.startswith(DIRECT_PREFIX) else room


def _as_logged(hit: Hit) -> tuple[str, datetime, str | None, str]:
    """What the logbook keeps of a live hit: whole seconds, clean names and text."""
    sender = clean_name(hit.sender) if hit.sender is not None else None
    text = clean_text(hit.text).rstrip("\n")
    return _where(hit.room), hit.when.replace(microsecond=0), sender, text


def merge(log_hits: list[Hit], live_hits: list[Hit], *, limit: int = 200) -> list[Hit]:
    """Both lists as one, newest first; a live entry that is also logged is shown once (the
    live one: choosing it shows it in its room's scrollback)."""
    live = {_as_logged(h) for h in live_hits}
    old = [h for h in log_hits if (_where(h.room), h.when, h.sender, h.text) not in live]
    # Stable: of the same second, the live ones (the scrollback keeps the newest) first.
    return sorted([*live_hits, *old], key=lambda hit: hit.when, reverse=True)[:limit]
