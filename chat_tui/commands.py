"""Slash commands typed in the input box: pure parsing, plus the HTTP look-ups they need.

``parse`` turns one submitted line into an action object and never touches the network or the
screen, so every rule here is unit-testable. The app runs the actions; the two HTTP look-ups
(``fetch_rooms`` and ``fetch_members``) are coroutines the app awaits in workers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from chat_protocol import admin, hosts, http, names, text, v2
from chat_tui.bounded_http import get_bounded
from chat_tui.config import typed_room

PREFIX: Final = "/"


@dataclass(frozen=True, slots=True)
class SendText:
    """Plain chat text to send to the active room."""

    text: str


@dataclass(frozen=True, slots=True)
class Join:
    room: str


@dataclass(frozen=True, slots=True)
class Leave:
    room: str | None  # None: the active room


@dataclass(frozen=True, slots=True)
class ListRooms:
    pass


@dataclass(frozen=True, slots=True)
class Who:
    pass


@dataclass(frozen=True, slots=True)
class Away:
    """Say we are away (``message``: why, may be empty); ``None``: we are back."""

    message: str | None


@dataclass(frozen=True, slots=True)
class Nick:
    """Take the name ``name`` (in every room)."""

    name: str


@dataclass(frozen=True, slots=True)
class Query:
    """Open the conversation with ``name`` (and show it)."""

    name: str


@dataclass(frozen=True, slots=True)
class Msg:
    """Send ``text`` to ``name`` in our conversation with them (opened if it is not)."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class Moderate:
    """A moderator's action in the active room (needs ``moderator_token_file``): ``verb`` is
    the command's name; the controller adds the room (see :func:`moderation_request`)."""

    verb: str
    name: str | None = None
    seconds: float | None = None
    reason: str = ""
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class ShowTopic:
    """Say the active room's topic."""


@dataclass(frozen=True, slots=True)
class ListLinks:
    """List the active room's recent links, numbered."""


@dataclass(frozen=True, slots=True)
class OpenLink:
    """Open the ``number``th most recent link of the active room (``anyway``: even if its
    host may not be what it looks like)."""

    number: int
    anyway: bool = False


@dataclass(frozen=True, slots=True)
class Grep:
    """Search the logs and every room's scrollback for ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class Clear:
    pass


@dataclass(frozen=True, slots=True)
class Reconnect:
    pass


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class CommandError:
    """The line was meant as a command but cannot run; ``message`` says why."""

    message: str


Action = (
    SendText
    | Join
    | Leave
    | ListRooms
    | Who
    | Away
    | Nick
    | Query
    | Msg
    | Moderate
    | ShowTopic
    | ListLinks
    | OpenLink
    | Grep
    | Clear
    | Reconnect
    | Help
    | Quit
    | CommandError
)


@dataclass(frozen=True, slots=True)
class CommandInfo:
    name: str
    usage: str
    summary: str
    aliases: tuple[str, ...] = ()


# The one list of commands: the parser and the help screen both read it.
COMMANDS: Final[tuple[CommandInfo, ...]] = (
    CommandInfo("join", "/join ROOM", "join ROOM (or switch to it if already joined)", ("j",)),
    CommandInfo(
        "leave",
        "/leave [ROOM [REASON]]",
        "leave ROOM, or the active room (a reason, as IRC has it, is not sent)",
        ("part", "close"),
    ),
    CommandInfo("rooms", "/rooms", "list the server's rooms and their member counts", ("list",)),
    CommandInfo("who", "/who", "list the members of the active room", ("names",)),
    CommandInfo("me", "/me TEXT", "send TEXT as an action: * name TEXT"),
    CommandInfo("away", "/away [MESSAGE]", "say you are away, in every room (chat.v2)"),
    CommandInfo("back", "/back", "say you are back"),
    CommandInfo("msg", "/msg NAME TEXT", "send TEXT to NAME alone (chat.v2)"),
    CommandInfo("query", "/query NAME", "open the conversation with NAME (chat.v2)", ("q",)),
    CommandInfo("nick", "/nick NAME", "take the name NAME, in every room (chat.v2)"),
    CommandInfo("kick", "/kick NAME [REASON]", "take NAME out of the room (moderators)"),
    CommandInfo(
        "ban",
        "/ban NAME [DURATION] [REASON]",
        "keep NAME out of the room; 90s, 10m, 2h, 1d (moderators)",
    ),
    CommandInfo("unban", "/unban NAME", "lift NAME's ban in the room (moderators)"),
    CommandInfo("mute", "/mute NAME [DURATION] [REASON]", "refuse NAME's messages (moderators)"),
    CommandInfo("unmute", "/unmute NAME", "let NAME speak again (moderators)"),
    CommandInfo("topic", "/topic [TEXT]", "show the room's topic, or set it; /topic - clears it"),
    CommandInfo("slow", "/slow SECONDS", "one message per member per SECONDS; 0: off (moderators)"),
    CommandInfo("lock", "/lock", "refuse new joins to the room (moderators)"),
    CommandInfo("unlock", "/unlock", "let new members join again (moderators)"),
    CommandInfo("links", "/links", "list the room's recent links, newest first, numbered"),
    CommandInfo("open", "/open [N]", "open link N of /links (default 1) in the browser"),
    CommandInfo("grep", "/grep TEXT", "search every room and the logs of past days (ctrl+g)"),
    CommandInfo("clear", "/clear", "clear the active room's log"),
    CommandInfo("reconnect", "/reconnect", "retry every offline room now (ctrl+r)"),
    CommandInfo("help", "/help", "show keys and commands"),
    CommandInfo(
        "quit",
        "/quit [REASON]",
        "close every connection and quit (a reason, as IRC has it, is not sent)",
        ("exit",),
    ),
)
LITERAL_HINT: Final = "//text sends /text literally"
MAX_LINKS: Final = 20  # /links lists at most this many

_BY_NAME: Final = {alias: c for c in COMMANDS for alias in (c.name, *c.aliases)}


_TRAILING_BLANK_LINES: Final = re.compile(r"(?:\n[^\S\n]*)+\Z")


def message_text(line: str) -> str:
    """Chat text as it is sent: without trailing blank lines (a paste's final newline)."""
    return _TRAILING_BLANK_LINES.sub("", line)


def parse(line: str) -> Action:
    """Classify one submitted line. Lines not starting with '/', and text of several lines,
    are chat text, unchanged but for trailing blank lines."""
    if not line.startswith(PREFIX) or "\n" in message_text(line):
        # Several lines are a message, whatever the first starts with (a pasted path).
        return SendText(message_text(line))
    if line.startswith(PREFIX * 2):
        # "//text" is the escape for text that starts with a slash.
        return SendText(message_text(line[1:]))
    word, _, rest = line[1:].partition(" ")
    name = word.lower()
    args = rest.split()
    info = _BY_NAME.get(name)
    if info is None:
        shown = word if word.strip() else ""
        return CommandError(
            f"unknown command /{shown}; type /help for the list ({LITERAL_HINT}); nothing was sent"
        )
    if info.name == "join":
        if len(args) != 1:
            return CommandError(f"usage: {info.usage}")
        return _checked_room(args[0], lambda room: Join(room), conversations=True)
    if info.name == "me":
        said = message_text(rest)
        if not said.strip():
            return CommandError(f"usage: {info.usage}")
        return SendText(text.action(said))
    if info.name == "away":
        message = " ".join(rest.split())
        if len(message) > v2.MAX_AWAY_CHARS:
            return CommandError(f"an away message is at most {v2.MAX_AWAY_CHARS} characters")
        return Away(message)
    if info.name == "nick":
        if len(args) != 1:
            return CommandError(f"usage: {info.usage}")
        problem = names.chosen_name_problem(args[0])
        if problem is not None:
            return CommandError(f"invalid name {args[0]!r}: {problem}")
        return Nick(args[0])
    if info.name in ("msg", "query"):
        who, _, said = rest.strip().partition(" ")
        if not who or (info.name == "msg") != bool(said.strip()):
            return CommandError(f"usage: {info.usage}")
        if not names.is_valid_name(who):
            return CommandError(f"no one can be called {who!r}: {names.CHOSEN_RULE}")
        if info.name == "query":
            return Query(who)
        return Msg(who, message_text(said))
    if info.name == "open":
        if len(args) > 1:
            return CommandError(f"usage: {info.usage} (1 to {MAX_LINKS}; see /links)")
        word = args[0] if args else "1"
        anyway = word.endswith("!")
        number = word.removesuffix("!") or "1"
        if not number.isdigit() or not 1 <= int(number) <= MAX_LINKS:
            return CommandError(f"usage: {info.usage} (1 to {MAX_LINKS}; see /links)")
        return OpenLink(int(number), anyway)
    if info.name == "grep":
        query = rest.strip()
        return Grep(query) if query else CommandError(f"usage: {info.usage}")
    if info.name in MODERATION:
        return _moderation(info, args, rest)
    if info.name == "leave":  # what follows the room is IRC's part reason: no place for it
        if not args:
            return Leave(None)
        return _checked_room(args[0], lambda room: Leave(room), conversations=True)
    if info.name == "quit":  # IRC's quit reason: the room sees a plain leave
        return Quit()
    if args:
        return CommandError(f"usage: {info.usage} (it takes no arguments)")
    simple: dict[str, Action] = {
        "rooms": ListRooms(),
        "links": ListLinks(),
        "who": Who(),
        "back": Away(None),
        "clear": Clear(),
        "reconnect": Reconnect(),
        "help": Help(),
    }
    return simple[info.name]


MODERATION: Final = ("kick", "ban", "unban", "mute", "unmute", "topic", "slow", "lock", "unlock")
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# What a duration was meant to be: a word that starts like a number.
_LOOKS_LIKE_DURATION: Final = re.compile(r"[-+]?\.?\d")
# The longest ban or mute the server takes (a year); longer is "until lifted".
MAX_DURATION: Final = 366 * 86400


def duration(word: str) -> float | None:
    """Seconds of a duration such as ``90s``, ``10m``, ``2h``, ``1d``; None if it is not one
    (a bare number too: "/ban eve 10 minutes" must not be ten seconds)."""
    match = _DURATION.fullmatch(word.lower())
    return None if match is None else float(match[1]) * _UNITS[match[2]]


def _moderation(info: CommandInfo, args: list[str], rest: str) -> Action:
    verb = info.name
    usage = CommandError(f"usage: {info.usage}")
    if verb == "topic":
        text = " ".join(rest.split())
        if not text:
            return ShowTopic()
        if len(text) > admin.MAX_TOPIC_CHARS:
            return CommandError(f"a topic is at most {admin.MAX_TOPIC_CHARS} characters")
        return Moderate(verb, topic=None if text == "-" else text)
    if verb in ("lock", "unlock"):
        return Moderate(verb) if not args else usage
    if verb == "slow":
        word = args[0] if len(args) == 1 else ""
        seconds = float(word) if word.isdigit() else duration(word)
        if seconds is None or seconds > 3600:
            return CommandError(f"usage: {info.usage} (0 to 3600)")
        return Moderate(verb, seconds=seconds)
    if not args:
        return usage
    name, more = args[0], args[1:]
    if not names.is_valid_name(name):
        return CommandError(f"no one can be called {name!r}: {names.CHOSEN_RULE}")
    if verb in ("unban", "unmute"):
        return Moderate(verb, name) if not more else usage
    seconds = None
    if verb in ("ban", "mute") and more and _LOOKS_LIKE_DURATION.match(more[0]):
        seconds = duration(more[0])
        if seconds is None:
            return CommandError(
                f"{more[0]!r} is not a duration: a number and its unit, 90s, 10m, 2h or 1d "
                f"(nothing was done)"
            )
        more = more[1:]
        if not 1 <= seconds <= MAX_DURATION:
            return CommandError(f"a {verb} lasts from 1s to 366d (none: until lifted)")
    reason = " ".join(more)
    if len(reason) > admin.MAX_REASON_CHARS:
        return CommandError(f"a reason is at most {admin.MAX_REASON_CHARS} characters")
    return Moderate(verb, name, seconds, reason)


def moderation_request(action: Moderate, room: str) -> tuple[str, str, dict[str, Any]]:
    """The admin API request (method, path, body) that carries out ``action`` in ``room``."""
    verb = action.verb
    who = {"room": room, "name": action.name}
    if verb == "kick":
        return "POST", admin.KICK_PATH, {**who, "reason": action.reason}
    if verb in ("ban", "mute"):
        body = {**who, "seconds": action.seconds or 0, "reason": action.reason}
        return "POST", admin.BAN_PATH if verb == "ban" else admin.MUTE_PATH, body
    if verb in ("unban", "unmute"):
        return "DELETE", admin.BAN_PATH if verb == "unban" else admin.MUTE_PATH, who
    if verb == "topic":
        return "POST", admin.room_path(room), {"topic": action.topic}
    if verb == "slow":
        return "POST", admin.room_path(room), {"slow": action.seconds}
    return "POST", admin.room_path(room), {"locked": verb == "lock"}


def moderation_done(action: Moderate, room: str) -> str:
    """What the log says once the server has done ``action``."""
    verb, name = action.verb, action.name
    said = {
        "kick": f"kicked {name} from {room}",
        "ban": f"banned {name} from {room}"
        + (f" for {format_duration(action.seconds)}" if action.seconds else ""),
        "unban": f"lifted {name}'s ban in {room}",
        "mute": f"muted {name} in {room}"
        + (f" for {format_duration(action.seconds)}" if action.seconds else ""),
        "unmute": f"{name} may speak in {room} again",
        "topic": f"topic of {room} set" if action.topic else f"topic of {room} cleared",
        "slow": f"slow mode in {room}: one message every {action.seconds:g} s"
        if action.seconds
        else f"slow mode in {room} off",
        "lock": f"{room} locked: nobody new may join",
        "unlock": f"{room} unlocked",
    }
    return said[verb]


def format_duration(seconds: float | None) -> str:
    if not seconds:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _checked_room(room: str, make: Any, *, conversations: bool = False) -> Action:
    # The status line shows rooms as "#room": typed back that way, it is the same room; and
    # the sidebar shows a conversation as "@name", which /join and /leave take as it is.
    room = typed_room(room)
    peer = names.direct_peer(room) if conversations else None
    if peer is not None:
        if not names.is_valid_name(peer):
            return CommandError(f"no one can be called {peer!r}: {names.CHOSEN_RULE}")
        return make(room)  # type: ignore[no-any-return]
    problem = names.room_problem(room)
    if problem is not None:
        return CommandError(problem)
    result: Action = make(room)
    return result


# --- HTTP look-ups ------------------------------------------------------------------------

HTTP_TIMEOUT: Final = 5.0
# The most of an answer that is read: a member list of thousands of names fits many times.
MAX_ANSWER_BYTES: Final = 1024 * 1024


class EndpointMissing(Exception):
    """The server does not offer the optional HTTP endpoint (or does not answer HTTP)."""


async def _get_json(
    url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    # Proxy variables are for the outside world; they must not capture a local server.
    trust_env = not hosts.is_loopback(urlsplit(url).hostname or "")
    try:
        async with httpx.AsyncClient(
            timeout=HTTP_TIMEOUT, transport=transport, trust_env=trust_env
        ) as client:
            status, body = await get_bounded(
                client, url, limit=MAX_ANSWER_BYTES, deadline=HTTP_TIMEOUT, headers=headers
            )
    except httpx.HTTPError as exc:
        raise EndpointMissing(f"no answer from {url} ({type(exc).__name__})") from exc
    path = urlsplit(url).path
    if body is None:
        raise EndpointMissing(f"{path} answered more than {MAX_ANSWER_BYTES // 1024} KiB")
    if status == 404:
        found = _json_or_none(body)
        if http.read_not_found(found) is http.NotFound.ROUTE:
            raise EndpointMissing(f"the server has no {path} endpoint")
        raise LookupError(http.read_detail(found))
    if status != 200:
        raise EndpointMissing(f"{path} answered HTTP {status}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EndpointMissing(f"{path} did not answer JSON") from exc


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


async def fetch_rooms(
    server_url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """One line describing the server's rooms; a line saying why when there is no answer."""
    url = http.http_base(server_url) + http.ROOMS_PATH
    try:
        body = await _get_json(url, transport=transport, headers=headers)
    except EndpointMissing as exc:
        return f"/rooms is not available: {exc}"
    except LookupError as exc:
        return f"/rooms: {exc}"
    try:
        rooms = http.read_rooms(body)
    except http.ShapeError:
        return "/rooms is not available: the server's answer has an unexpected shape"
    if not rooms:
        return "no rooms on the server"
    listed = ", ".join(f"{r.room} ({r.members})" for r in rooms)
    return f"rooms on the server ({len(rooms)}): {listed}"


async def fetch_members(
    server_url: str,
    room: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, list[str] | None, dict[str, str]]:
    """A line listing the members of ``room``, the names (None when the server has no list),
    and the away messages of those who are away."""
    url = http.http_base(server_url) + http.room_path(room)
    try:
        body = await _get_json(url, transport=transport, headers=headers)
    except EndpointMissing as exc:
        return f"/who is not available: {exc}", None, {}
    except LookupError as exc:
        return f"/who: {exc}", [], {}
    try:
        members = http.read_members(body)
    except http.ShapeError:
        return "/who is not available: the server's answer has an unexpected shape", None, {}
    names = sorted(members)
    # A server may send longer away messages than the protocol's: kept to its length.
    away = {n: m[: v2.MAX_AWAY_CHARS] for n, m in http.read_away(body).items()}
    shown = [f"{n} (away{': ' + away[n] if away[n] else ''})" if n in away else n for n in names]
    return f"members of {room} ({len(names)}): {', '.join(shown)}", names, away
