"""The installed ``chat-tui`` in a tmux pane (:mod:`chat_testing.tmux`), as the tmux tests
start it and read its screen."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from chat_protocol.names import NAME_PATTERN

CHAT_TUI = Path(sys.executable).parent / "chat-tui"
# Generous: the first start of a Textual app on a busy 2-core machine takes seconds.
STARTUP = 60.0

# The "joined ROOM as NAME" line: the room and our name.
JOINED = re.compile(rf"joined (\S+) as ({NAME_PATTERN.pattern})")


def status_row(screen: str) -> str:
    return screen.splitlines()[0]


def input_row(screen: str) -> str:
    """The text row of the input box (the second row from the bottom of the box)."""
    rows = screen.splitlines()
    return rows[-3]
