"""``chat-server``: run in the foreground, or ``start``/``stop``/``status`` in the background.

The server's options are built from the settings' declarations (``settings.py``): every setting
with a flag is an option of ``run`` and ``start``, with its help and default from there.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import Field
from typing import Any

from chat_protocol import local
from chat_server.ops import admin_cli
from chat_server.ops.settings import (
    Settings,
    default_text,
    flag,
    how,
    is_switch,
    options,
    to_text,
    value_type,
)

COMMANDS = ("run", "start", "stop", "status", "admin")


def _server_options() -> list[Field[Any]]:
    return [f for f in options() if how(f).cli]


def _add_server_options(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """The server's options. On a command (``sub``) an option not given leaves the namespace
    alone: argparse would otherwise put the command's default (None) over a value given
    before the command (``chat-server --port 9000 start`` started on 8000)."""
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if sub else {}
    for f in _server_options():
        option = how(f)
        help_text = f"{option.help} (default {default_text(f)})"
        if is_switch(f):  # --metrics / --no-metrics
            parser.add_argument(
                "--" + flag(f), action=argparse.BooleanOptionalAction, help=help_text, **unset
            )
        elif str(f.type).startswith("tuple"):  # repeatable
            parser.add_argument(
                "--" + flag(f), action="append", metavar=option.metavar, help=help_text, **unset
            )
        else:
            parser.add_argument(
                "--" + flag(f),
                type=value_type(f),
                choices=option.choices,
                metavar=option.metavar,
                help=help_text,
                **unset,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-server",
        description="WebSocket room chat server. Every option can also be set as a "
        "CHAT_SERVER_<OPTION> environment variable (e.g. CHAT_SERVER_PORT=9000).",
    )
    parser.add_argument("--version", action="version", version=f"chat-server {local.version()}")
    sub = parser.add_subparsers(dest="command", metavar="{run,start,stop,status,admin}")
    run = sub.add_parser("run", help="run in the foreground (the default)")
    start = sub.add_parser("start", help="run in the background; returns once it answers")
    stop = sub.add_parser("stop", help="stop the background server")
    status = sub.add_parser("status", help="say whether a background server runs")
    admin_cli.add_parser(sub)
    _add_server_options(parser)
    for p in (run, start):
        _add_server_options(p, sub=True)
    for p in (stop, status):
        p.add_argument(
            "--host", help="address of the server (default 127.0.0.1)", default=argparse.SUPPRESS
        )
        p.add_argument(
            "--port", type=int, help="port of the server (default 8000)", default=argparse.SUPPRESS
        )
    start.add_argument(
        "--wait",
        type=float,
        default=15.0,
        help="seconds to wait for the server to answer (default 15)",
    )
    stop.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for it to exit (default 10)"
    )
    for p in (start, stop, status):
        p.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object that says what happened (for programs)",
        )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {f.name: getattr(args, f.name, None) for f in _server_options()}
    return Settings.from_env(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "admin":
            return admin_cli.main(args)
        try:
            settings = settings_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        command = args.command or "run"
        if command == "run":
            from chat_server.ops.serve import serve

            return serve(settings)

        from chat_server.ops import daemon

        report = daemon.Report(json=args.json)
        if command == "start":
            return daemon.start(settings, argv_for_child(args), wait=args.wait, report=report)
        if command == "stop":
            return daemon.stop(settings, wait=args.wait, report=report)
        return daemon.status(settings, report=report)
    except BrokenPipeError:
        # Read by something that stopped reading (`chat-server status | head -1`, `admin bans
        # | head`): what it
        # did not read is nobody's; no traceback, and none when Python flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it


def argv_for_child(args: argparse.Namespace) -> list[str]:
    """The foreground command line that ``start`` runs in the background."""
    child = [sys.executable, "-m", "chat_server", "run"]
    for f in _server_options():
        value = getattr(args, f.name, None)
        if value is None:
            continue
        name = "--" + flag(f)
        if isinstance(value, bool):  # --metrics / --no-metrics
            child.append(name if value else "--no-" + flag(f))
        elif isinstance(value, list):
            for item in value:
                child += [name, str(item)]
        else:
            child += [name, to_text(value)]
    return child


if __name__ == "__main__":
    sys.exit(main())
