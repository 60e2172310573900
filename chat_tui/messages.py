"""The Textual messages of the client, in one place: what widgets say happened, and the wake-up
of a room whose connection has events waiting."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class EventsWaiting(Message):
    """``room``'s connection has events queued (posted once per empty -> non-empty)."""

    room: str


@dataclass
class LineSubmitted(Message):
    """Enter in the input box: ``line`` is what was in it, pasted line breaks as "\\n"."""

    line: str


@dataclass
class RoomSelected(Message):
    """The user clicked a room in the sidebar."""

    room: str


@dataclass
class SearchChanged(Message):
    """The search query is now ``query``."""

    query: str


@dataclass
class SearchStep(Message):
    """Go to the next match, older or newer."""

    older: bool


@dataclass
class SearchClosed(Message):
    """The user left the search."""


@dataclass
class UnreadChanged(Message):
    """Messages not looked at, in every room: ``count`` (the terminal's title says it)."""

    count: int


@dataclass
class QuitAsked(Message):
    """The user asked to quit (``/quit``)."""


@dataclass
class LinkClicked(Message):
    """The user clicked the link ``url`` in the log."""

    url: str
