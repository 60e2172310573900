"""The admin API as both ends see it: its paths and its bounds (``admin_client.py`` makes one
call of it, for ``chat-server admin`` and chat-tui's moderator commands).

Every request carries ``Authorization: Bearer TOKEN``: an admin token (``--admin-token-file``)
may do everything, a moderator token (``POST /admin/tokens``) what concerns its rooms. Bodies
and answers are JSON; an error is ``{"detail": text}``. docs/protocol.md has the whole API.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

ADMIN_PREFIX: Final = "/admin"
KICK_PATH: Final = ADMIN_PREFIX + "/kick"
BAN_PATH: Final = ADMIN_PREFIX + "/ban"
BANS_PATH: Final = ADMIN_PREFIX + "/bans"
MUTE_PATH: Final = ADMIN_PREFIX + "/mute"
ROOMS_PATH: Final = ADMIN_PREFIX + "/rooms"
TOKENS_PATH: Final = ADMIN_PREFIX + "/tokens"

# The longest body the admin API reads, and the longest reason or topic it keeps.
MAX_BODY_BYTES: Final = 16 * 1024
MAX_REASON_CHARS: Final = 200
MAX_TOPIC_CHARS: Final = 300
ROLE_MODERATOR: Final = "moderator"


def room_path(room: str) -> str:
    return f"{ROOMS_PATH}/{quote(room, safe='')}"
