"""Run the app under uvicorn in the foreground, with the settings chat-server was given."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from chat_server.app import create_app
from chat_server.settings import Settings
from chat_server.uvicorn_ws import ChatWebSocketProtocol

# After SIGTERM, how long uvicorn waits for connections before it cancels what is left; the
# close frames went out at once, so this only bounds stragglers (exit within 5 s).
GRACEFUL_SHUTDOWN_SECONDS = 3


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws=ChatWebSocketProtocol,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=settings.ping_interval or None,
        ws_ping_timeout=settings.ping_timeout or None,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        access_log=False,
        lifespan="on",
    )


class _PerConnectionNoise(logging.Filter):
    """Drop uvicorn's own per-connection lines: the chat log has one line per join and leave."""

    NOISE = ("connection open", "connection closed")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.NOISE:
            return False
        return not (isinstance(record.msg, str) and '"WebSocket %s" [accepted]' in record.msg)


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("uvicorn.error").addFilter(_PerConnectionNoise())
    server = uvicorn.Server(uvicorn_config(settings))
    with _exit_quietly_on_signals(server):
        server.run()
    # uvicorn.Server.run returns normally on SIGTERM/SIGINT; a failed start sets started=False.
    return 0 if server.started else 1


@contextlib.contextmanager
def _exit_quietly_on_signals(server: uvicorn.Server) -> Iterator[None]:
    """Make SIGTERM/SIGINT end ``server.run()`` with exit code 0.

    uvicorn re-raises the signal it shut down on after restoring the previous handlers, so with
    Python's defaults even a clean shutdown ends as "killed by SIGTERM/SIGINT" (status 143/130),
    which service managers and scripts read as a failure. Handlers that only ask uvicorn to exit
    make the re-raise harmless, and also cover a signal that arrives before uvicorn's own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_exit(sig: int, frame: FrameType | None) -> None:
        server.should_exit = True

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, request_exit) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
