"""chat_server: a WebSocket room chat server (see docs/protocol.md).

``uvicorn chat_server:app`` serves an app built from ``CHAT_SERVER_*`` settings; the app is
created on first access so that importing ``chat_server.protocol`` (as the client does) stays
cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chat_server.app import ChatApplication

    app: ChatApplication

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from chat_server.app import create_app

        value = create_app()
        globals()["app"] = value
        return value
    raise AttributeError(f"module 'chat_server' has no attribute {name!r}")
