"""Client settings: defaults, then the TOML config file, then ``CHAT_SERVER_URL``, then the CLI.

The config file lives at ``platformdirs.user_config_dir("chat-tui")/config.toml`` (on Linux
``~/.config/chat-tui/config.toml``) unless ``--config PATH`` names another one. Every key is
optional::

    server = "ws://127.0.0.1:8000"
    rooms = ["general", "slytherin"]
    time_format = "%H:%M"
    scrollback = 10000
    theme = "textual-dark"
    autostart = true
    bell = true
    title = true
    members = true
    history = 50
    keep_name = true
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from platformdirs import user_config_dir

from chat_protocol import http, names

DEFAULT_SERVER = "ws://127.0.0.1:8000"
DEFAULT_ROOM = "general"
SERVER_ENV = "CHAT_SERVER_URL"


class ConfigError(ValueError):
    """A config file or setting that cannot be used; the message says what and where."""


@dataclass(slots=True)
class Config:
    server: str = DEFAULT_SERVER
    rooms: list[str] = field(default_factory=lambda: [DEFAULT_ROOM])
    time_format: str = "%H:%M"
    scrollback: int = 10_000  # messages kept per room
    theme: str = "textual-dark"
    autostart: bool = True  # start a local server when a loopback server does not answer
    bell: bool = True  # ring the terminal bell when a message mentions us out of sight
    title: bool = True  # unread count in the terminal's title: "(3) chat"
    members: bool = True  # the members panel, where the terminal is wide enough (f2 toggles)
    history: int = 50  # messages of history shown on joining a room (chat.v2 servers; 0: none)
    keep_name: bool = True  # keep the name's resume token in the state directory (0600)


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
    known = [f.name for f in fields(Config)]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} (known settings: {', '.join(known)})")
        values[key] = _check(key, value)
    return values


def _check(key: str, value: Any) -> Any:
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"{key} must be {expected}, not {value!r}")

    if key == "server":
        if not isinstance(value, str):
            raise wrong("a string such as 'ws://127.0.0.1:8000'")
        problem = server_url_problem(value)
        if problem:
            raise ConfigError(f"server: {problem}")
        return value
    if key == "rooms":
        if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
            raise wrong("a list of room names")
        for room in value:
            problem = names.room_problem(room)
            if problem:
                raise ConfigError(f"rooms: {problem}")
        # An empty list means "the default room", as on the command line.
        return list(dict.fromkeys(value)) or [DEFAULT_ROOM]
    if key == "time_format":
        if not isinstance(value, str) or not value:
            raise wrong("a strftime format such as '%H:%M'")
        return value
    if key == "scrollback":
        # bool is an int in Python; `scrollback = true` is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise wrong("a positive whole number of messages")
        return value
    if key == "theme":
        if not isinstance(value, str) or not value:
            raise wrong("a theme name such as 'textual-dark'")
        return value
    if key == "history":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000:
            raise wrong("a whole number of messages from 0 (none) to 10000")
        return value
    if key in ("autostart", "bell", "title", "members", "keep_name"):
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    raise AssertionError(key)  # pragma: no cover -- _validated only passes known keys
