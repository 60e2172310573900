"""``chat-server admin ...``: the admin API from the command line (``chat_protocol.admin``).

Each command is one request to ``--server`` with the first token of ``--token-file`` (an admin
token file, or a file holding a moderator token); it prints the server's JSON answer, or the
server's reason on stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from chat_protocol import admin
from chat_server.ops.settings import ENV_PREFIX, admin_tokens


def default_server() -> str:
    """This machine's server on its port ($CHAT_SERVER_PORT, as ``run`` reads it, or 8000),
    unless $CHAT_SERVER_ADMIN_SERVER names one."""
    port = os.environ.get(ENV_PREFIX + "PORT", "").strip() or "8000"
    return os.environ.get(ENV_PREFIX + "ADMIN_SERVER") or f"http://127.0.0.1:{port}"


def _where(parser: argparse.ArgumentParser, after_action: bool) -> None:
    """--server and --token-file: before the action (``admin --server URL bans``) or after it
    (``admin bans --server URL``: only what is given there counts)."""
    parser.add_argument(
        "--server",
        default=argparse.SUPPRESS if after_action else default_server(),
        help="the server's URL (default http://127.0.0.1:$CHAT_SERVER_PORT, or port 8000)",
    )
    parser.add_argument(
        "--token-file",
        default=argparse.SUPPRESS
        if after_action
        else os.environ.get(ENV_PREFIX + "ADMIN_TOKEN_FILE"),
        help="a file with the token to act with (default: $CHAT_SERVER_ADMIN_TOKEN_FILE)",
    )


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("admin", help="kick, ban, mute, set rooms, make moderator tokens")
    parser.set_defaults(admin_parser=parser)  # its errors show its own usage
    _where(parser, after_action=False)
    where = argparse.ArgumentParser(add_help=False)
    _where(where, after_action=True)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    kick = actions.add_parser(
        "kick", parents=[where], help="close a member's connections (in one room)"
    )
    kick.add_argument("name")
    kick.add_argument("--room", help="only in this room (default: every room)")
    kick.add_argument("--reason", default="")

    for verb, what in (("ban", "ban a name or an address"), ("unban", "lift a ban")):
        ban = actions.add_parser(verb, parents=[where], help=what)
        target = ban.add_mutually_exclusive_group(required=True)
        target.add_argument("name", nargs="?")
        target.add_argument("--address", help="an address or a CIDR")
        ban.add_argument("--room", help="only in this room (default: every room)")
        if verb == "ban":
            ban.add_argument("--seconds", type=float, default=0, help="0: until lifted")
            ban.add_argument("--reason", default="")
    actions.add_parser("bans", parents=[where], help="list the bans")

    for verb, what in (("mute", "refuse a member's messages in a room"), ("unmute", "lift it")):
        mute = actions.add_parser(verb, parents=[where], help=what)
        mute.add_argument("name")
        mute.add_argument("--room", required=True)
        if verb == "mute":
            mute.add_argument("--seconds", type=float, default=0, help="0: until lifted")
            mute.add_argument("--reason", default="")

    room = actions.add_parser(
        "room", parents=[where], help="show or set a room's topic, slow mode and lock"
    )
    room.add_argument("room")
    room.add_argument("--topic", help="the topic ('' clears it)")
    room.add_argument("--slow", type=float, help="seconds between one member's messages; 0: off")
    lock = room.add_mutually_exclusive_group()
    lock.add_argument("--lock", action="store_true", default=None, help="refuse new joins")
    lock.add_argument("--unlock", action="store_true", default=None)

    token = actions.add_parser(
        "token", parents=[where], help="moderator tokens (admin tokens only)"
    )
    verbs = token.add_subparsers(dest="verb", required=True, metavar="VERB")
    create = verbs.add_parser(
        "create", parents=[where], help="make a token; it is printed once, never kept"
    )
    create.add_argument("--label", required=True)
    create.add_argument("--role", default=admin.ROLE_MODERATOR, choices=[admin.ROLE_MODERATOR])
    create.add_argument(
        "--room", action="append", required=True, help="a room (or PREFIX*), repeatable"
    )
    verbs.add_parser("list", parents=[where], help="the tokens' labels and rooms")
    revoke = verbs.add_parser("revoke", parents=[where], help="revoke the tokens with this label")
    revoke.add_argument("label")


def request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """The method, path and body of the command's request."""
    action = args.action
    body: dict[str, Any]
    if action == "kick":
        return (
            "POST",
            admin.KICK_PATH,
            {"name": args.name, "room": args.room, "reason": args.reason},
        )
    if action in ("ban", "unban"):
        body = {"room": args.room}
        body.update({"address": args.address} if args.address else {"name": args.name})
        if action == "ban":
            body.update(seconds=args.seconds, reason=args.reason)
        return ("POST" if action == "ban" else "DELETE"), admin.BAN_PATH, body
    if action == "bans":
        return "GET", admin.BANS_PATH, None
    if action in ("mute", "unmute"):
        body = {"room": args.room, "name": args.name}
        if action == "mute":
            body.update(seconds=args.seconds, reason=args.reason)
        return ("POST" if action == "mute" else "DELETE"), admin.MUTE_PATH, body
    if action == "room":
        body = {}
        if args.topic is not None:
            body["topic"] = args.topic or None
        if args.slow is not None:
            body["slow"] = args.slow
        if args.lock or args.unlock:
            body["locked"] = bool(args.lock)
        return ("POST" if body else "GET"), admin.room_path(args.room), body or None
    if args.verb == "create":
        body = {"label": args.label, "role": args.role, "rooms": args.room}
        return "POST", admin.TOKENS_PATH, body
    if args.verb == "list":
        return "GET", admin.TOKENS_PATH, None
    return "DELETE", f"{admin.TOKENS_PATH}/{args.label}", None


def main(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.admin_parser
    if not args.token_file:
        parser.error("admin needs --token-file (or CHAT_SERVER_ADMIN_TOKEN_FILE)")
    try:
        token = admin_tokens(args.token_file)[0][1]
    except (OSError, ValueError) as exc:
        parser.error(f"--token-file cannot be used: {exc}")
    # Here, not at the top: the server's own process (which imports this module for its
    # command line) never loads an HTTP client.
    from chat_protocol import admin_client

    method, path, body = request(args)
    try:
        answer = asyncio.run(admin_client.call(args.server, token, method, path, body))
    except admin_client.Unreachable as exc:
        print(f"chat-server admin: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    if not answer.ok:
        print(f"chat-server admin: {answer.detail}", file=sys.stderr)
        return 1
    print(json.dumps(answer.body, indent=2, ensure_ascii=False))
    return 0
