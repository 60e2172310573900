"""The reference server's default limits and retention (an operator may set others; the
README's option table lists them). Clients pace themselves below the message rate."""

from __future__ import annotations

from typing import Final

MAX_FRAME_BYTES: Final = 64 * 1024  # a frame or fragmented message
MAX_MESSAGE_CHARS: Final = 4096  # a chat message's text

RATE_LIMIT: Final = 10.0  # chat messages per second per connection ...
RATE_BURST: Final = 20  # ... and how many may come at once

HISTORY_SIZE: Final = 1000  # messages kept per room
RECOVERY_LIMIT: Final = 1000  # most messages replayed on joining (history or recovery)
NAME_RESERVATION: Final = 600.0  # seconds a name stays its token's after its last leave
