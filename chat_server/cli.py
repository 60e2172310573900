"""``chat-server``: run in the foreground, or ``start``/``stop``/``status`` in the background."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from chat_server.settings import Settings

COMMANDS = ("run", "start", "stop", "status")


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    add = parser.add_argument
    add("--host", help=f"address to listen on (default {d.host})")
    add("--port", type=int, help=f"port to listen on (default {d.port})")
    add(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help=f"log level (default {d.log_level})",
    )
    add(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="a browser Origin allowed to connect (repeatable; default: none)",
    )
    add(
        "--max-message-chars",
        type=int,
        help=f"longest chat message in characters (default {d.max_message_chars})",
    )
    add(
        "--log-format",
        choices=["text", "json"],
        help=f"log lines as text or one JSON object per line (default {d.log_format})",
    )
    add(
        "--rate-limit",
        type=float,
        help=f"messages per second per connection; 0 turns off every input limit "
        f"(default {d.rate_limit:g})",
    )
    add("--rate-burst", type=int, help=f"messages a connection may burst (default {d.rate_burst})")
    add(
        "--send-buffer",
        type=int,
        help=f"bytes queued for one slow connection before it is dropped (default {d.send_buffer})",
    )
    add(
        "--max-frame-rate",
        type=float,
        help=f"frames per second a connection may send, of any type, before it is closed "
        f"1008; 0 = off (default {d.max_frame_rate:g})",
    )
    add(
        "--max-byte-rate",
        type=float,
        help=f"bytes per second a connection may send before it is closed 1008; 0 = off "
        f"(default {d.max_byte_rate:g})",
    )
    add(
        "--max-connections",
        type=int,
        help=f"connections the server accepts (default {d.max_connections})",
    )
    add(
        "--max-pending",
        type=int,
        help=f"connections at once that have not finished their request or handshake "
        f"(default {d.max_pending})",
    )
    add(
        "--handshake-timeout",
        type=float,
        help=f"seconds from accept to a complete request or handshake "
        f"(default {d.handshake_timeout:g})",
    )
    add(
        "--max-head-bytes",
        type=int,
        help=f"largest HTTP request head in bytes (default {d.max_head_bytes})",
    )
    add(
        "--max-headers",
        type=int,
        help=f"most HTTP request headers (default {d.max_headers})",
    )
    add(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        help="serve GET /metrics (default: only when listening on a loopback address)",
    )
    add(
        "--ping-interval",
        type=float,
        help=f"seconds between keepalive pings, 0 = off (default {d.ping_interval:g})",
    )
    add(
        "--ping-timeout",
        type=float,
        help=f"seconds to wait for a pong (default {d.ping_timeout:g})",
    )
    add(
        "--history-size",
        type=int,
        help=f"messages kept per room for history and recovery; 0 keeps none "
        f"(default {d.history_size})",
    )
    add(
        "--history-ttl",
        type=float,
        metavar="SECONDS",
        help=f"how long a room's history is kept after its last event "
        f"(default {d.history_ttl:g}: 7 days)",
    )
    add(
        "--history-rooms",
        type=int,
        help=f"with memory://, rooms without members whose history is kept, oldest dropped "
        f"first (default {d.history_rooms})",
    )
    add(
        "--recovery-limit",
        type=int,
        help=f"most messages replayed to a connection on joining, as history or recovery "
        f"(default {d.recovery_limit})",
    )
    add(
        "--name-reservation",
        type=float,
        metavar="SECONDS",
        help=f"how long a chat.v2 client's name stays reserved for its resume token after "
        f"its last connection ends (default {d.name_reservation:g})",
    )
    add(
        "--broker-url",
        metavar="URL",
        help=f"where rooms live: memory:// (one process) or redis://[:PASSWORD@]HOST:PORT/DB "
        f"to share them between processes and machines (default {d.broker_url})",
    )
    add(
        "--workers",
        type=int,
        help=f"processes serving the port; more than one needs a redis:// broker "
        f"(default {d.workers})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-server",
        description="WebSocket room chat server. Every option can also be set as a "
        "CHAT_SERVER_<OPTION> environment variable (e.g. CHAT_SERVER_PORT=9000).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,start,stop,status}")
    run = sub.add_parser("run", help="run in the foreground (the default)")
    start = sub.add_parser("start", help="run in the background; returns once it answers")
    stop = sub.add_parser("stop", help="stop the background server")
    status = sub.add_parser("status", help="say whether a background server runs")
    for p in (parser, run, start):
        _add_server_options(p)
    for p in (stop, status):
        p.add_argument("--host", help="address of the server (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port of the server (default 8000)")
    start.add_argument(
        "--wait",
        type=float,
        default=15.0,
        help="seconds to wait for the server to answer (default 15)",
    )
    stop.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for it to exit (default 10)"
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        key: getattr(args, key, None)
        for key in (
            "host",
            "port",
            "log_level",
            "log_format",
            "allow_origin",
            "max_message_chars",
            "rate_limit",
            "rate_burst",
            "max_frame_rate",
            "max_byte_rate",
            "send_buffer",
            "max_connections",
            "max_pending",
            "handshake_timeout",
            "max_head_bytes",
            "max_headers",
            "metrics",
            "ping_interval",
            "ping_timeout",
            "broker_url",
            "workers",
            "history_size",
            "history_ttl",
            "history_rooms",
            "recovery_limit",
            "name_reservation",
        )
    }
    return Settings.from_env(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    command = args.command or "run"
    if command == "run":
        from chat_server.serve import serve

        return serve(settings)

    from chat_server import daemon

    if command == "start":
        return daemon.start(settings, argv_for_child(args), wait=args.wait)
    if command == "stop":
        return daemon.stop(settings, wait=args.wait)
    return daemon.status(settings)


def argv_for_child(args: argparse.Namespace) -> list[str]:
    """The foreground command line that ``start`` runs in the background."""
    child = [sys.executable, "-m", "chat_server", "run"]
    for key, value in vars(args).items():
        if key in {"command", "wait"} or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):  # --metrics / --no-metrics
            child.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            for item in value:
                child += [flag, str(item)]
        else:
            child += [flag, str(value)]
    return child


if __name__ == "__main__":
    sys.exit(main())
