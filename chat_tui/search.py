"""Searching a room's scrollback (ctrl+f), Textual-free: which entries match, and which is current.

Matches are kept as absolute entry indices (see :class:`~chat_tui.scrollback.Scrollback`), oldest
first, and brought up to date incrementally: entries that arrived are looked at once, entries
that were dropped leave the front. Positions are counted from the newest match, as a search
that starts at the bottom of a chat goes up ("1 of 17" is the newest).
"""

from __future__ import annotations

from bisect import bisect_left

from chat_tui.scrollback import Entry, Scrollback
from chat_tui.text_layout import contains


def entry_matches(entry: Entry, query: str) -> bool:
    """Case-insensitive substring of the entry's text or sender."""
    return contains(entry.text, query) or (
        entry.sender is not None and contains(entry.sender, query)
    )


class Search:
    """The matches of ``query`` in one scrollback, and the current one."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.matches: list[int] = []  # absolute indices, oldest first
        self.current: int | None = None  # absolute index of the current match
        self._looked_up_to = 0  # absolute index of the first entry not looked at yet
        self._generation = -1
        self._hiding: bool | None = None  # whether the lines the join filter hides were hidden

    def update(self, scrollback: Scrollback) -> None:
        """Take in what changed in ``scrollback`` since the last call."""
        first, total = scrollback.first_index, scrollback.total_appended
        hiding = scrollback.hide_quiet
        if self._generation != scrollback.generation or self._hiding != hiding:
            # Reordered or cleared, or the hidden lines shown or hidden again: look again.
            self._generation, self._hiding = scrollback.generation, hiding
            self.matches = []
            self._looked_up_to = first
        start = max(self._looked_up_to, first)
        query = self.query
        for index, entry in enumerate(scrollback.scan(start - first), start):
            # A line the join filter hides is no match: "2 of 2" went to a line not shown.
            if entry_matches(entry, query) and not (hiding and entry.quiet):
                self.matches.append(index)
        self._looked_up_to = total
        dropped = bisect_left(self.matches, first)
        if dropped:
            del self.matches[:dropped]
        current = self.current
        if current is not None:
            at = bisect_left(self.matches, current)
            if at == len(self.matches) or self.matches[at] != current:
                # Dropped as the oldest: the oldest match left takes its place.
                aged_out = current < first and bool(self.matches)
                self.current = self.matches[0] if aged_out else None

    @property
    def count(self) -> int:
        return len(self.matches)

    @property
    def position(self) -> int:
        """1 for the newest match, ``count`` for the oldest; 0 when there is no current one."""
        if self.current is None:
            return 0
        return len(self.matches) - bisect_left(self.matches, self.current)

    def step(self, older: bool) -> int | None:
        """Move to the next older (or newer) match, wrapping around; returns it."""
        matches = self.matches
        if not matches:
            self.current = None
            return None
        if self.current is None:
            self.current = matches[-1]
            return self.current
        at = bisect_left(matches, self.current)
        if older:
            at = at - 1 if at > 0 else len(matches) - 1
        else:
            at = at + 1 if at + 1 < len(matches) else 0
        self.current = matches[at]
        return self.current
