"""Run the app under uvicorn in the foreground, with the settings chat-server was given."""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from chat_server.app import create_app
from chat_server.settings import Settings
from chat_server.uvicorn_ws import ChatWebSocketProtocol

# After SIGTERM, how long uvicorn waits for connections before it cancels what is left; the
# close frames went out at once, so this only bounds stragglers (exit within 5 s).
GRACEFUL_SHUTDOWN_SECONDS = 3


def uvicorn_config(settings: Settings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = dict(
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
    options.update(overrides)
    app = options.pop("app", None) or create_app(settings)
    return uvicorn.Config(app, **options)


class _PerConnectionNoise(logging.Filter):
    """Drop uvicorn's own per-connection lines: the chat log has one line per join and leave."""

    NOISE = ("connection open", "connection closed")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.NOISE:
            return False
        return not (isinstance(record.msg, str) and '"WebSocket %s" [accepted]' in record.msg)


def serve(settings: Settings) -> int:
    if settings.workers > 1:
        return serve_workers(settings)
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


def serve_workers(settings: Settings) -> int:
    """``settings.workers`` processes on one port (uvicorn's supervisor), each a node of the
    same chat through the shared broker, each with chat-server's WebSocket protocol."""
    log_config = _worker_log_config(settings.log_level)
    logging.config.dictConfig(log_config)
    # The workers are fresh interpreters: they build the app from these variables.
    os.environ.update(settings.to_env())
    config = uvicorn_config(
        settings,
        app="chat_server.app:create_app",
        factory=True,
        workers=settings.workers,
        log_config=log_config,
    )
    # Multiprocess restarts a worker that dies and stops them all on SIGTERM/SIGINT.
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def _worker_log_config(level: str) -> dict[str, Any]:
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "filters": ["per_connection_noise"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"per_connection_noise": {"()": _PerConnectionNoise}},
        "formatters": {
            "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}
        },
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


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
