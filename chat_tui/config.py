"""Client settings, each declared once: a field of :class:`Config` with its default, what it
means (the README's config block says the same, and a test compares them) and its check.

Precedence: defaults, then the TOML config file, then ``CHAT_SERVER_URL``, then the command
line. The config file lives at ``platformdirs.user_config_dir("chat-tui")/config.toml`` (on
Linux ``~/.config/chat-tui/config.toml``) unless ``--config PATH`` names another one. Every key
is optional.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from platformdirs import user_config_dir

from chat_protocol import http, names
from chat_tui import notify

DEFAULT_SERVER = "ws://127.0.0.1:8000"
DEFAULT_ROOM = "general"
SERVER_ENV = "CHAT_SERVER_URL"


class JoinFilter(StrEnum):
    SMART = "smart"
    ALL = "all"
    NONE = "none"


class ConfigError(ValueError):
    """A config file or setting that cannot be used; the message says what and where."""


def _wrong(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key} must be {expected}, not {value!r}")


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _wrong(key, value, "true or false")
    return value


def _text(example: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise _wrong(key, value, example)
        return value

    return check


def _whole(low: int, high: int | None, expected: str) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        # bool is an int in Python; `scrollback = true` is a mistake, not 1.
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < low
            or (high is not None and value > high)
        ):
            raise _wrong(key, value, expected)
        return value

    return check


def _server(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong(key, value, "a string such as 'ws://127.0.0.1:8000'")
    problem = server_url_problem(value)
    if problem:
        raise ConfigError(f"server: {problem}")
    return value


def _rooms(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise _wrong(key, value, "a list of room names")
    value = [typed_room(room) for room in value]
    for room in value:
        problem = names.room_problem(room)
        if problem:
            raise ConfigError(f"rooms: {problem}")
    # An empty list means "the default room", as on the command line.
    return list(dict.fromkeys(value)) or [DEFAULT_ROOM]


def _nick(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong(key, value, "a name such as 'alice'")
    problem = nick_problem(value) if value else None
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return value


def _choice(kind: type[StrEnum]) -> Callable[[str, Any], str]:
    allowed = [str(member) for member in kind]

    def check(key: str, value: Any) -> str:
        if value not in allowed:
            raise _wrong(key, value, "one of " + ", ".join(repr(a) for a in allowed))
        return str(value)

    return check


def _levels(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _wrong(key, value, 'a table such as { ops = "all", random = "none" }')
    levels = [str(level) for level in notify.Level]
    for room, level in value.items():
        wanted = typed_room(room)
        problem = names.room_problem(wanted) if not wanted.startswith("@") else None
        if problem:
            raise ConfigError(f"{key}: {problem}")
        if level not in levels:
            raise _wrong(f"{key}.{room}", level, "one of " + ", ".join(repr(x) for x in levels))
    return {typed_room(room): level for room, level in value.items()}


def _words(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise _wrong(key, value, "a list of words such as ['deploy', 'alice']")
    return [w.strip() for w in value]


def _file(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong(key, value, "a file's path such as '~/.config/chat-tui/moderator-token'")
    return str(Path(value).expanduser()) if value else ""


def typed_room(word: str) -> str:
    """A room as typed (``#room``, as the status line shows it, or ``room``) as the server
    names it."""
    return word[1:] if word.startswith("#") and len(word) > 1 else word


def nick_problem(nick: str) -> str | None:
    """Why ``nick`` cannot be asked for, or None if it can."""
    problem = names.chosen_name_problem(nick)
    return None if problem is None else f"invalid name {nick!r}: {problem}"


@dataclass(frozen=True, slots=True)
class Key:
    """A config key's explanation (the README's comment on it) and its check."""

    doc: str
    check: Callable[[str, Any], Any]


def key(default: Any, doc: str, check: Callable[[str, Any], Any]) -> Any:
    """A config key: a dataclass field whose metadata is its :class:`Key` (a tuple default
    is a list, new for each Config)."""
    metadata = {"key": Key(doc, check)}
    if isinstance(default, tuple):
        return field(default_factory=lambda: list(default), metadata=metadata)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(slots=True)
class Config:
    server: str = key(
        DEFAULT_SERVER, "CHAT_SERVER_URL overrides it, --server overrides both", _server
    )
    rooms: list[str] = key(
        (DEFAULT_ROOM,), "joined at start when no room is given on the command line", _rooms
    )
    time_format: str = key(
        "%H:%M", "strftime format of the time column", _text("a strftime format such as '%H:%M'")
    )
    scrollback: int = key(
        10_000, "messages kept per room", _whole(1, None, "a positive whole number of messages")
    )
    theme: str = key(
        "textual-dark", "any Textual theme name", _text("a theme name such as 'textual-dark'")
    )
    autostart: bool = key(
        True, "start a local server when a loopback server does not answer", _flag
    )
    bell: bool = key(True, "false: no notification at all (as notifications = 'off')", _flag)
    notifications: str = key(
        "auto",
        "for a mention or direct message out of sight: auto, osc777, osc9, osc99, desktop, "
        "bell or off",
        _choice(notify.Method),
    )
    notify_rooms: dict[str, str] = key(
        {},
        'per room: "all" messages, "mentions" (the default) or "none", as { ops = "all" }',
        _levels,
    )
    highlight: list[str] = key((), "words that count as mentions of you besides your name", _words)
    title: bool = key(True, 'unread count in the terminal\'s title: "(3) chat"', _flag)
    members: bool = key(True, "the members panel where the terminal is wide enough (f2)", _flag)
    history: int = key(
        50,
        "messages of history shown on joining a room (chat.v2); 0: none",
        _whole(0, 10_000, "a whole number of messages from 0 (none) to 10000"),
    )
    keep_name: bool = key(True, "keep your name's token in the state directory (0600)", _flag)
    nick: str = key("", "the name to ask for (--nick overrides it); empty: the server's", _nick)
    typing: bool = key(True, 'send and show "alice is typing…" (chat.v2)', _flag)
    token_file: str = key(
        "",
        "a file holding the signed token a private server asks for (--token-file); read at "
        "each connection, so a rotated token needs no restart",
        _file,
    )
    moderator_token_file: str = key(
        "",
        "a file holding your moderator (or admin) token: /kick, /ban, /mute, /topic, /slow, "
        "/lock in the rooms it covers; read at each use",
        _file,
    )
    joins: str = key(
        "smart",
        "joins, leaves and renames shown: smart (of those who spoke in the last 10 minutes), "
        "all or none; alt+j shows the hidden ones",
        _choice(JoinFilter),
    )
    log: bool = key(
        True, "keep logs on disk, one file per room and day (0600), searched by /grep", _flag
    )
    away_after: int = key(
        0,
        "minutes without a key before you are marked away (chat.v2); 0: never",
        _whole(0, 24 * 60, "a whole number of minutes from 0 (never) to 1440"),
    )


def config_keys() -> list[Field[Any]]:
    """Every config key's field, in declaration order (the README lists them in it)."""
    return list(fields(Config))


def explain(f: Field[Any]) -> Key:
    described: Key = f.metadata["key"]
    return described


def default_config_path() -> Path:
    return Path(user_config_dir("chat-tui")) / "config.toml"


def server_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a chat server URL, or None if it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"invalid server URL {url!r}: {exc}"
    if parts.scheme not in ("ws", "wss"):
        return f"invalid server URL {url!r}: it must start with ws:// or wss://"
    if not parts.hostname:
        return f"invalid server URL {url!r}: it has no host"
    if parts.query or parts.fragment:
        return f"invalid server URL {url!r}: it must not have a query or fragment"
    # A room's own address (as a plain WebSocket client is given it) is a likely paste here;
    # the client would then ask for ".../chat/ROOM/chat/general" and be told the name is bad.
    prefix, found, room = parts.path.partition(http.CHAT_PATH_PREFIX)
    if found and room.strip("/"):
        server = urlunsplit((parts.scheme, parts.netloc, prefix, "", ""))
        return (
            f"invalid server URL {url!r}: that is the address of the room {room.strip('/')!r}; "
            f"give the server and the room apart: --server {server} {room.strip('/')}"
        )
    return None


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the config file (``path``, or the default one if it exists), then the
    environment. Raises :class:`ConfigError` for anything that cannot be used."""
    env = os.environ if environ is None else environ
    config = Config()
    if path is not None:
        config = _apply_file(config, path, required=True)
    else:
        config = _apply_file(config, default_config_path(), required=False)
    server = env.get(SERVER_ENV)
    if server:
        problem = server_url_problem(server)
        if problem:
            raise ConfigError(f"{SERVER_ENV}: {problem}")
        config.server = server
    return config


def _apply_file(config: Config, path: Path, *, required: bool) -> Config:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return config
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return replace(config, **_validated(data))
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def _validated(data: dict[str, Any]) -> dict[str, Any]:
    known = {f.name: explain(f).check for f in config_keys()}
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r} (known settings: {', '.join(known)})")
        values[name] = known[name](name, value)
    return values
