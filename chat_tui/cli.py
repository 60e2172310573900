"""``chat-tui``: parse the command line, build the Config, run the app.

Everything that can be wrong with the command line or the config file is reported here, on
stderr with exit code 2, before the screen opens.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from chat_protocol import local, names
from chat_tui.config import (
    DEFAULT_ROOM,
    SERVER_ENV,
    Config,
    ConfigError,
    default_config_path,
    load_config,
    nick_problem,
    server_url_problem,
    typed_room,
)

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-tui",
        description="Full-screen terminal chat client. Joins ROOM (default: general); "
        "several rooms may be given.",
        epilog=f"The server can also be set with {SERVER_ENV}; defaults come from the config "
        f"file {default_config_path()}.",
    )
    parser.add_argument("--version", action="version", version=f"chat-tui {local.version()}")
    parser.add_argument("rooms", nargs="*", metavar="ROOM", help="a room to join")
    parser.add_argument(
        "--room", action="append", default=[], dest="room_options", metavar="ROOM",
        help="a room to join (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--server", metavar="URL", help="chat server, ws:// or wss:// (default ws://127.0.0.1:8000)"
    )
    parser.add_argument(
        "--no-autostart", action="store_true",
        help="do not start a local server when the loopback server does not answer",
    )  # fmt: skip
    parser.add_argument(
        "--nick", metavar="NAME",
        help="the name to ask for (2-24 characters of A-Z, a-z, 0-9, _ and -, from a letter)",
    )  # fmt: skip
    parser.add_argument(
        "--token-file", metavar="PATH",
        help="a file holding the signed token a private server asks for (read at each connection)",
    )  # fmt: skip
    parser.add_argument("--config", metavar="PATH", type=Path, help="config file to read")
    return parser


def build_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """The Config for this command line; raises ConfigError (with a message for the user)."""
    args = build_parser().parse_args(argv)
    config = load_config(args.config, os.environ if environ is None else environ)
    if args.server is not None:
        problem = server_url_problem(args.server)
        if problem:
            raise ConfigError(problem)
        config.server = args.server
    # "#room" as the status line shows it (quoted in a shell, where # starts a comment).
    rooms = [typed_room(room) for room in (*args.rooms, *args.room_options)]
    for room in rooms:
        problem = names.room_problem(room)
        if problem:
            raise ConfigError(problem)
    if rooms:
        config.rooms = list(dict.fromkeys(rooms))  # keep the order given, drop repeats
    elif not config.rooms:
        config.rooms = [DEFAULT_ROOM]
    if args.no_autostart:
        config.autostart = False
    if args.token_file is not None:
        config.token_file = str(Path(args.token_file).expanduser())
    if args.nick is not None:
        problem = nick_problem(args.nick)
        if problem:
            raise ConfigError(problem)
        config.nick = args.nick
    return config


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = build_config(argv)
    except ConfigError as exc:
        print(f"chat-tui: error: {exc}", file=sys.stderr)
        return USAGE_ERROR

    # Imported here so that argument errors never pay for (or depend on) loading Textual.
    from chat_tui.app import ChatApp
    from chat_tui.identity import TOKENS_FILE, TokenStore, default_state_dir

    app = ChatApp(config, token_store=TokenStore(default_state_dir() / TOKENS_FILE))
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
