"""The query parameters of ``/chat/{room}``: history, recovery, a chosen or a resumed name.

Every one is optional and unknown ones are ignored. ``history`` and ``name`` are for any
client (a name that breaks the rules is the session's to refuse, with its own close); ``since``,
``epoch`` and ``resume`` need ``chat.v2`` (only its welcome says where a client is, and gives
tokens), and ``since`` and ``epoch`` come together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote

from chat_protocol.v2 import SUBPROTOCOL

HISTORY: Final = "history"
SINCE: Final = "since"
EPOCH: Final = "epoch"
RESUME: Final = "resume"
NAME: Final = "name"
_KNOWN: Final = (HISTORY, SINCE, EPOCH, RESUME, NAME)

_COUNT_PATTERN: Final = re.compile(r"[0-9]{1,9}")
_OFFSET_PATTERN: Final = re.compile(r"[0-9]{1,18}")
EPOCH_PATTERN: Final = re.compile(r"[A-Za-z0-9]{1,32}")
MAX_TOKEN_CHARS: Final = 128


class QueryError(ValueError):
    """A malformed query parameter; ``str(exc)`` is the detail of the 1008 close."""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What a connection asked for in its query string."""

    history: int = 0  # last N messages of the room (capped by the server)
    since: int | None = None  # recover every message after this offset ...
    epoch: str | None = None  # ... of this epoch
    resume: str | None = None  # the token of the name to take back
    name: str | None = None  # the name asked for (not checked here)


def parse_join_query(query: str | bytes, numbered: bool) -> JoinRequest:
    """The parameters of a ``/chat/{room}`` query string; raises :class:`QueryError`.

    ``numbered``: the connection speaks a numbered dialect (chat.v2).
    """
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if not query:
        return JoinRequest()
    seen: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _KNOWN:
            if key in seen:
                raise QueryError(f"{key} given twice")
            seen[key] = value
    history = 0
    if HISTORY in seen:
        if not _COUNT_PATTERN.fullmatch(seen[HISTORY]):
            raise QueryError("history must be a whole number of messages")
        history = int(seen[HISTORY])
    name = seen.get(NAME)
    if not numbered:
        for key in (SINCE, EPOCH, RESUME):
            if key in seen:
                raise QueryError(f"{key} needs the {SUBPROTOCOL} subprotocol")
        return JoinRequest(history, name=name)
    since: int | None = None
    epoch = seen.get(EPOCH)
    if (SINCE in seen) != (epoch is not None):
        raise QueryError("since and epoch go together")
    if SINCE in seen:
        if not _OFFSET_PATTERN.fullmatch(seen[SINCE]):
            raise QueryError("since must be a message offset (0 or more)")
        since = int(seen[SINCE])
        if epoch is None or not EPOCH_PATTERN.fullmatch(epoch):
            raise QueryError("epoch must be 1-32 letters and digits")
    resume = seen.get(RESUME)
    if resume is not None and not 0 < len(resume) <= MAX_TOKEN_CHARS:
        raise QueryError(f"resume must be 1-{MAX_TOKEN_CHARS} characters")
    return JoinRequest(history, since, epoch, resume, name)


def join_query(request: JoinRequest) -> str:
    """The query string (without ``?``) that asks for ``request``; empty if it asks nothing."""
    parts = []
    if request.history:
        parts.append(f"{HISTORY}={request.history}")
    if request.since is not None and request.epoch is not None:
        parts.append(f"{SINCE}={request.since}&{EPOCH}={request.epoch}")
    if request.resume is not None:
        parts.append(f"{RESUME}={quote(request.resume, safe='')}")
    if request.name is not None:
        parts.append(f"{NAME}={quote(request.name, safe='')}")
    return "&".join(parts)
