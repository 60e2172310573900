"""For ``bench/flood_profile.py --patch``: the network taken in smaller bites per loop turn.

8 KiB reads instead of httpx-ws's 64 KiB, 16 received messages per turn instead of 64, 64
events per drain instead of 500. Tried for issue 17 (docs/performance.md, "The stall against
Textual's own Log"): not kept.
"""

from typing import Any

import chat_tui.controller
import chat_tui.websocket
from chat_tui.websocket import BoundedSession

_read = BoundedSession._read_stream


async def _read_stream(self: BoundedSession, max_bytes: int) -> Any:
    return await _read(self, min(max_bytes, 8192))


BoundedSession._read_stream = _read_stream  # type: ignore[method-assign]
chat_tui.websocket.RUN_LIMIT = 16  # type: ignore[misc]
chat_tui.controller.DRAIN_LIMIT = 64
