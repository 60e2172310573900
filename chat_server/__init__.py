"""chat_server: a WebSocket room chat server (see docs/protocol.md).

``uvicorn chat_server:app`` serves an app built from ``CHAT_SERVER_*`` settings; the app is
created on first access, so that importing a module of the package stays cheap.

The layout: ``node`` (this process), ``session`` (one connection), ``checks`` (what a frame
must pass), ``member`` (its outgoing buffer), ``hub`` (local fan-out), ``events``, ``backends``
(the broker), ``transport`` (uvicorn's protocols with their limits), ``http`` (the ASGI app,
the handshake, ``/metrics``) and ``ops`` (settings, command line, serving, the background
server, logs). The wire protocol is ``chat_protocol``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chat_server.http.app import ChatApplication

    app: ChatApplication

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from chat_server.http.app import create_app

        value = create_app()
        globals()["app"] = value
        return value
    raise AttributeError(f"module 'chat_server' has no attribute {name!r}")
