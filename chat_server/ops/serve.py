"""Run the app under uvicorn in the foreground, with the settings chat-server was given."""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import resource
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from chat_server.backends.urls import SQLITE_SCHEMES, scheme_of
from chat_server.http.app import create_app
from chat_server.http.metrics import MetricsApp, metrics_enabled
from chat_server.ops import logs
from chat_server.ops.settings import Settings
from chat_server.transport.config import ChatConfig, Limits
from chat_server.transport.http_guard import GuardedHttpProtocol
from chat_server.transport.uvicorn_ws import ChatWebSocketProtocol

log = logging.getLogger("chat_server")

# After SIGTERM, how long uvicorn waits for connections before it cancels what is left; the
# close frames went out at once, so this only bounds stragglers (exit within 5 s).
GRACEFUL_SHUTDOWN_SECONDS = 3
# File descriptors the process needs besides its connections (listening socket, logs, ...).
SPARE_FDS = 64


def uvicorn_config(settings: Settings, **overrides: Any) -> ChatConfig:
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON or a file: uvicorn's loggers propagate to the root logger that logs.configure
        # set up.
        log_config=None if settings.log_format == "json" or settings.log_file else LOGGING_CONFIG,
        http=GuardedHttpProtocol,
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
    app = options.pop("app", None) or chat_app(settings)
    return ChatConfig(app, limits=Limits.of(settings), **options)


def chat_app(settings: Settings) -> MetricsApp:
    """What chat-server serves: the chat application, with ``GET /metrics`` in front."""
    return MetricsApp(create_app(settings), metrics_enabled(settings.metrics, settings.host))


def worker_app() -> MetricsApp:
    """The app of one ``--workers`` process, a fresh interpreter: built from the
    ``CHAT_SERVER_*`` variables that :func:`serve_workers` set (the protocols' limits come
    with the pickled ``ChatConfig``)."""
    return chat_app(Settings.from_env())


def raise_fd_limit(settings: Settings) -> None:
    """Raise the soft limit on open files to the hard limit; say so when it is still too low
    for ``--max-connections`` (beyond it, accepting fails and new clients wait)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("open files limit raised from %s to %s", soft, hard)
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %s: %s", soft, exc)
    needed = settings.max_connections + settings.max_pending + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open files limit %s is below what --max-connections %s needs (%s with "
            "--max-pending %s); raise it (ulimit -n) or lower --max-connections",
            soft,
            settings.max_connections,
            needed,
            settings.max_pending,
        )


class _PerConnectionNoise(logging.Filter):
    """Drop uvicorn's own per-connection lines: the chat log has one line per join and leave.
    Rejected handshakes are counted in /metrics instead: anyone could fill the log with them."""

    NOISE = (
        "connection open",
        "connection closed",
        "connection rejected (%d %s)",
        "HTTP response sent (%d %s)",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.NOISE:
            return False
        return not (isinstance(record.msg, str) and '"WebSocket %s" [accepted]' in record.msg)


def serve(settings: Settings) -> int:
    if settings.workers > 1:
        return serve_workers(settings)
    logs.configure(
        settings.log_level,
        settings.log_format,
        settings.log_file,
        settings.log_file_bytes,
        settings.log_file_count,
    )
    logging.getLogger("uvicorn.error").addFilter(_PerConnectionNoise())
    raise_fd_limit(settings)
    problem = database_problem(settings)
    if problem is not None:
        log.error("%s", problem)  # one line, not the traceback a failed startup would print
        return 3
    server = uvicorn.Server(uvicorn_config(settings))
    with _exit_quietly_on_signals(server):
        server.run()
    # uvicorn.Server.run returns normally on SIGTERM/SIGINT; a failed start sets started=False.
    return 0 if server.started else 1


def database_problem(settings: Settings) -> str | None:
    """Why the embedded broker's database cannot be used, if it is the broker (checked before
    the server starts; the backend opens it again at startup)."""
    if scheme_of(settings.broker_url) not in SQLITE_SCHEMES:
        return None
    from chat_server.backends.sqlite import DatabaseError, check_database

    try:
        check_database(settings)
    except DatabaseError as exc:
        return str(exc)
    return None


def serve_workers(settings: Settings) -> int:
    """``settings.workers`` processes on one port (uvicorn's supervisor), each a node of the
    same chat through the shared broker, each with chat-server's protocols and limits."""
    log_config = _worker_log_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(log_config)
    raise_fd_limit(settings)  # the workers inherit it
    # The workers are fresh interpreters: they build the app from these variables.
    os.environ.update(settings.to_env())
    config = uvicorn_config(
        settings,
        app="chat_server.ops.serve:worker_app",
        factory=True,
        workers=settings.workers,
        log_config=log_config,
    )
    # Multiprocess restarts a worker that dies and stops them all on SIGTERM/SIGINT.
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def _worker_log_config(level: str, log_format: str) -> dict[str, Any]:
    handler = {
        "class": "logging.StreamHandler",
        "formatter": log_format,
        "filters": ["per_connection_noise"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"per_connection_noise": {"()": _PerConnectionNoise}},
        "formatters": {
            "text": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
            "json": {"()": logs.JsonFormatter},
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
