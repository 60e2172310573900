"""The ASGI types the server's raw endpoints use (the WebSocket path skips Starlette)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
ReceiveFn = Callable[[], Awaitable[Message]]
SendFn = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, ReceiveFn, SendFn], Awaitable[None]]

# Extensions chat-server's WebSocket protocol (``transport/uvicorn_ws.py``) offers in the scope,
# and the key of a received message that carries the rate verdict: absent under plain uvicorn.
ABORT_EXTENSION = "chat.abort"
FRAMES_EXTENSION = "chat.frames"
# The connection's message-rate budget as the transport charges it (None: no limit).
MESSAGE_BUDGET_EXTENSION = "chat.message_budget"
WITHIN_RATE_KEY = "chat.within_rate"
# Key of a ``websocket.close`` message sent by the app: the ``chat_protocol.close.Close`` it
# is, so that the transport counts it without reading its reason.
CLOSE_KEY = "chat.close"
