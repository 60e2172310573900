"""Server settings, each declared once: a field with its default, its help text and its checks.

From that one declaration come the ``CHAT_SERVER_<NAME>`` environment variable of every
setting, the ``--flag`` of every setting that has one (``cli.py`` builds its parser from
:func:`options`), the limits the transport enforces (``transport/config.py``), and the
README's option table, which a test compares with it. Precedence: defaults, then the
environment, then the command line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chat_protocol import limits
from chat_server import addresses
from chat_server.backends.urls import (
    is_shared,
    parse_cluster_url,
    parse_sentinel_url,
    scheme_of,
)

ENV_PREFIX = "CHAT_SERVER_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")

# A check of one value: what is wrong with it (the setting's flag name is put in front), or None.
Check = Callable[[Any], str | None]


def positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def off_or_positive(value: float) -> str | None:
    return None if value >= 0 else "must be 0 (off) or positive"


def cidrs(value: tuple[str, ...]) -> str | None:
    try:
        addresses.networks(value)
    except ValueError as exc:
        return f"not a network: {exc}"
    return None


# An admin token: at least this many characters (the file's owner makes them up).
MIN_ADMIN_TOKEN_CHARS = 16


def admin_tokens(path: str) -> list[tuple[str, str]]:
    """The (label, token) pairs of an admin token file: one per line, ``LABEL TOKEN`` or just
    ``TOKEN`` (labelled ``admin``); blank lines and ``#`` comments skipped. Raises ValueError
    (OSError for a file that cannot be read) for a file without a token, or a short one."""
    pairs = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) > 2:
                raise ValueError(f"{path}:{number}: a line is `LABEL TOKEN` or `TOKEN`")
            label, token = words if len(words) == 2 else ("admin", words[0])
            if len(token) < MIN_ADMIN_TOKEN_CHARS:
                raise ValueError(
                    f"{path}:{number}: a token has at least {MIN_ADMIN_TOKEN_CHARS} characters"
                )
            pairs.append((label, token))
    if not pairs:
        raise ValueError(f"{path} holds no token")
    return pairs


def a_token_file(value: str) -> str | None:
    if not value:
        return None
    try:
        admin_tokens(value)
    except (OSError, ValueError) as exc:
        return f"cannot be used: {exc}"
    return None


# An HS256 secret: at least this many bytes (RFC 7518 3.2: the hash's size).
MIN_JWT_SECRET_BYTES = 32


def a_jwt_secret_file(value: str) -> str | None:
    if not value:
        return None
    try:
        secret = Path(value).read_bytes().strip()
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if len(secret) < MIN_JWT_SECRET_BYTES:
        return f"holds {len(secret)} bytes; an HS256 secret has at least {MIN_JWT_SECRET_BYTES}"
    return None


def a_public_key_file(value: str) -> str | None:
    if not value:
        return None
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(Path(value).read_bytes())
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except ValueError:
        return "is not a PEM public key"
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return "is neither an RSA key (RS256) nor an elliptic curve key (ES256)"
    return None


def at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be at least 1"


def a_port(value: int) -> str | None:
    return None if 0 < value < 65536 else f"must be 1-65535, not {value}"


def one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def a_node_name(value: str) -> str | None:
    if value == "" or re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", value):
        return None
    return "must be 1-32 letters, digits, '.', '_' or '-'"


def a_broker_url(value: str) -> str | None:
    try:
        is_shared(value)
        scheme = scheme_of(value)
        if scheme == "redis+sentinel":  # its hosts and service, read at start
            parse_sentinel_url(value)
        if scheme == "redis+cluster":  # its seed nodes
            parse_cluster_url(value)
        if scheme == "sqlite" and urlsplit(value).netloc:
            return f"a sqlite:// URL names a file (sqlite:///path/file.db), not a host: {value}"
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class Option:
    """How a setting is given and explained (a field's metadata)."""

    help: str
    check: Check | None = None
    cli: bool = True  # a --flag; False: only the environment variable
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    default_text: str | None = None  # the default as the help and the README say it


def option(default: Any, help: str, **how: Any) -> Any:
    """A setting: a dataclass field whose metadata is its :class:`Option`."""
    return field(default=default, metadata={"option": Option(help, **how)})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(8000, "port to listen on", check=a_port)
    log_level: str = option(
        "info",
        "`critical`, `error`, `warning`, `info`, `debug`",
        check=one_of(*LOG_LEVELS),
        choices=LOG_LEVELS,
    )
    log_format: str = option(
        "text",
        "`text`, or `json`: one object per line (`time`, `level`, `event`, and `room`, "
        "`name`, `code`, `reason` where they apply)",
        check=one_of(*LOG_FORMATS),
        choices=LOG_FORMATS,
    )
    log_file: str = option(
        "",
        "write the log to this file, rotated by size, instead of stderr",
        metavar="PATH",
        default_text="stderr",
    )
    log_file_bytes: int = option(
        10 * 1024 * 1024,
        "size at which `--log-file` is rotated (`.1`, `.2`, ... kept)",
        check=positive,
    )
    log_file_count: int = option(
        5, "rotated log files kept beside `--log-file`", check=not_negative
    )
    # Browser origins allowed to open a WebSocket; clients that send no Origin always may.
    allow_origin: tuple[str, ...] = option(
        (),
        "a browser origin allowed to connect (repeatable; `*` for any)",
        metavar="ORIGIN",
        default_text="none",
    )
    admin_token_file: str = option(
        "",
        "a file of admin tokens (one a line: `LABEL TOKEN`, or `TOKEN`); turns on the admin "
        "API under `/admin/`, which is 404 without it",
        metavar="PATH",
        default_text="none (no admin API)",
        check=a_token_file,
    )
    proxy_protocol: bool = option(
        False,
        "read the PROXY protocol header (v1 or v2) that a `--trusted-proxy` balancer sends "
        "first on each connection: the client's address (connections from others send none)",
        default_text="off",
    )
    # Signed connection tokens (chat_server.signed): a private server.
    jwt_secret_file: str = option(
        "",
        "a file holding an HS256 secret: every WebSocket must present a token signed with it "
        "(`Authorization: Bearer` or `?token=`), else HTTP 401",
        metavar="PATH",
        default_text="none (open server)",
        check=a_jwt_secret_file,
    )
    jwt_public_key_file: str = option(
        "",
        "a file holding a PEM public key (RSA for RS256, EC for ES256): as `--jwt-secret-file`, "
        "for tokens signed with its private key",
        metavar="PATH",
        default_text="none (open server)",
        check=a_public_key_file,
    )
    # Proxies whose forwarding headers say the client's address (see chat_server.addresses).
    trusted_proxy: tuple[str, ...] = option(
        (),
        "a proxy (CIDR, repeatable) whose `X-Forwarded-For` / `Forwarded` header gives the "
        "client's address on connections from it",
        metavar="CIDR",
        default_text="none",
        check=cidrs,
    )
    max_connections_per_address: int = option(
        100,
        "connections at once from one client address (an IPv6 /64); more are closed with "
        "1013 `too many connections from your address`; `0` = off",
        check=not_negative,
    )
    max_handshakes_per_address: int = option(
        300,
        "new WebSocket handshakes per minute from one client address (a minute's worth in a "
        "burst); more get HTTP 429 with `Retry-After`; `0` = off",
        check=not_negative,
    )
    max_messages_per_address: float = option(
        30.0,
        "chat messages per second from one client address, all its connections together "
        "(2 s worth in a burst); more are refused like a connection's own rate; `0` = off",
        check=off_or_positive,
    )
    max_new_rooms_per_address: int = option(
        60,
        "rooms one client address may bring into being a minute (joining a room nobody is in "
        "and none was kept for, or opening a conversation); more are closed with 1013 `too "
        "many new rooms from your address`; `0` = off",
        check=not_negative,
    )
    max_message_chars: int = option(
        limits.MAX_MESSAGE_CHARS,
        "longest chat message; longer ones are refused with an `error:` notice",
        check=positive,
    )
    rate_limit: float = option(
        limits.RATE_LIMIT,
        "messages per second per connection; `0` turns off every per-connection input limit "
        "(messages, frames, bytes) and every per-address share, for benchmarks",
        check=off_or_positive,
    )
    rate_burst: int = option(
        limits.RATE_BURST, "messages a connection may send in a burst", check=at_least_one
    )
    max_frame_rate: float = option(
        100.0,
        "frames per second a connection may send, of any type (5 s worth in a burst); `0` = off",
        check=off_or_positive,
    )
    max_byte_rate: float = option(
        1024 * 1024,
        "bytes per second a connection may send (5 s worth in a burst); `0` = off",
        check=off_or_positive,
    )
    send_buffer: int = option(
        1024 * 1024,
        "bytes queued for one connection before it is dropped as a slow consumer",
        check=positive,
    )
    max_connections: int = option(
        10_000, "connections beyond this are closed with 1013", check=positive
    )
    max_pending: int = option(
        1000,
        "connections at once that have not finished their request or handshake",
        check=positive,
    )
    handshake_timeout: float = option(
        10.0, "seconds from accept to a complete request or WebSocket handshake", check=positive
    )
    max_head_bytes: int = option(
        16 * 1024, "largest HTTP request head (request line and headers)", check=positive
    )
    max_headers: int = option(100, "most headers in an HTTP request", check=positive)
    max_http_rate: float = option(
        100.0,
        "plain HTTP requests (`/health`, `/rooms`, ...) per second from one client address "
        "(5 s worth in a burst); over it, 429; `0` = off",
        check=off_or_positive,
    )
    # GET /metrics; None = only when listening on a loopback address.
    metrics: bool | None = option(
        None, "serve `GET /metrics`", default_text="on for loopback addresses"
    )
    ping_interval: float = option(
        20.0, "seconds between keepalive pings (`0` = off)", check=off_or_positive
    )
    ping_timeout: float = option(
        20.0, "seconds a client has to answer a ping before it is dropped", check=off_or_positive
    )
    broker_url: str = option(
        "sqlite://",
        "where rooms live: `sqlite://` (this process, kept in `chat-PORT.db` of the state "
        "directory; `sqlite:///path/file.db` for another file), `memory://` (this process, "
        "forgotten when it stops) or `redis://[[user]:password@]host:port/db` (also "
        "`rediss://`, `unix://`, `redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`, "
        "`redis+cluster://HOST:PORT[,HOST:PORT...]`) shared by every process of the chat",
        check=a_broker_url,
        metavar="URL",
    )
    # Processes serving the port (uvicorn's --workers); more than one needs a shared broker.
    workers: int = option(
        1,
        "processes serving the port; more than one needs a `redis://` broker (with `sqlite://` "
        "or `memory://` it refuses to start)",
        check=at_least_one,
    )
    # What the server keeps (see the README's "What the server keeps").
    history_size: int = option(
        limits.HISTORY_SIZE,
        "chat messages kept per room for history and recovery; `0` keeps none",
        check=not_negative,
    )
    history_ttl: float = option(
        7 * 24 * 3600.0,
        "seconds a room's history is kept after its last event (7 days)",
        check=positive,
        metavar="SECONDS",
    )
    history_rooms: int = option(
        1000,
        "rooms without members whose history is kept (rooms where nothing was said are "
        "forgotten first, then the one idle longest; on Redis too)",
        check=not_negative,
    )
    history_bytes: int = option(
        2 * 1024 * 1024,
        "bytes a room's history keeps at most (each message's text in UTF-8 and 100 for its "
        "name and time; with `sqlite://` and `memory://`, weighed every 16 KiB of text added "
        "and when the room empties; on Redis, at every message); the oldest go first",
        check=positive,
    )
    history_total_bytes: int = option(
        256 * 1024 * 1024,
        "with `sqlite://` and `memory://`: the same for every room together; past it, rooms "
        "without members are forgotten first (the one idle longest first), then a room "
        "written to keeps no more than its share",
        check=positive,
    )
    recovery_limit: int = option(
        limits.RECOVERY_LIMIT,
        "most messages sent to one connection on joining, as history or recovery",
        check=not_negative,
    )
    max_backlog_bytes: int = option(
        4 * 1024 * 1024,
        "bytes of history or recovery sent to one connection on joining (the newest messages "
        "that fit; a recovery cut short says `recovered: false`); never counted as a slow "
        "consumer",
        check=positive,
    )
    name_reservation: float = option(
        limits.NAME_RESERVATION,
        "seconds a `chat.v2` client's name stays reserved for its token after its last "
        "connection ends",
        check=not_negative,
        metavar="SECONDS",
    )
    max_reservations: int = option(
        100_000,
        "names kept reserved for their tokens at once (on Redis too); past it, the reservation "
        "that would end first ends early",
        check=positive,
    )
    node_name: str = option(
        "",
        "a name for this process in `/health` and among the processes of a shared broker "
        "(letters, digits, `.`, `_`, `-`); a random part is added",
        check=a_node_name,
        metavar="NAME",
        default_text="none",
    )
    # Settings that exist only as environment variables.
    max_frame_bytes: int = option(
        limits.MAX_FRAME_BYTES,
        "largest frame or fragmented message in bytes (closed 1009 beyond it)",
        check=positive,
        cli=False,
    )
    close_grace: float = option(
        2.0,
        "seconds a dropped slow consumer is given to take its close frame before the TCP "
        "connection is aborted",
        check=positive,
        cli=False,
    )
    jwt_leeway: float = option(
        30.0,
        "seconds of clock difference forgiven between a signed token's issuer and the server: "
        "a token is good until `exp` plus this, at the handshake and during the connection",
        check=not_negative,
        cli=False,
    )
    broker_timeout: float = option(
        2.0,
        "seconds Redis may take to answer before the process declares it unavailable and "
        "closes its connections with 1013",
        check=positive,
        cli=False,
    )
    node_ttl: float = option(
        15.0,
        "seconds after which a process that stopped renewing its heartbeat is taken for dead, "
        "its members announced as left and its names freed",
        check=positive,
        cli=False,
    )
    probe_interval: float = option(
        1.0,
        "seconds between the probes a process sends itself through Redis to check its subscription",
        check=positive,
        cli=False,
    )

    def per_address(self, value: float) -> float:
        """A per-address share as in force: off (0) with every input limit off."""
        return 0 if self.rate_limit == 0 else value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CHAT_SERVER_*`` variables, then ``overrides`` (None = not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(env_name(f))
            if raw is not None and raw != "":
                values[f.name] = from_text(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for f in fields(cls):
            if _is_list(f) and isinstance(values.get(f.name), list | str):
                values[f.name] = _items(f, values[f.name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ValueError with every problem (each setting's checks, then how they combine)."""
        problems = []
        for f in fields(self):
            check = how(f).check
            problem = check(getattr(self, f.name)) if check is not None else None
            if problem is not None:
                problems.append(problem if f.name == "broker_url" else f"{flag(f)} {problem}")
        shared = a_broker_url(self.broker_url) is None and is_shared(self.broker_url)
        if self.workers > 1 and a_broker_url(self.broker_url) is None and not shared:
            problems.append(
                f"--workers {self.workers} needs a broker that the processes share: with "
                f"{self.broker_url} each worker would be a chat of its own; use "
                f"--broker-url redis://HOST:PORT/DB"
            )
        if self.log_file and self.workers > 1:
            problems.append(
                "--log-file needs --workers 1 (several processes cannot rotate one file): log "
                "to stderr and let the service manager keep it"
            )
        if self.jwt_secret_file and self.jwt_public_key_file:
            problems.append("give --jwt-secret-file or --jwt-public-key-file, not both")
        if self.node_ttl < 3 * self.broker_timeout:
            problems.append("node-ttl must be at least 3 times broker-timeout")
        if problems:
            raise ValueError("; ".join(problems))

    def to_env(self) -> dict[str, str]:
        """These settings as ``CHAT_SERVER_*`` variables (what worker processes read)."""
        return {env_name(f): to_text(getattr(self, f.name)) for f in fields(self)}


# --- the declarations, read --------------------------------------------------------------------


def options() -> list[Field[Any]]:
    """Every setting's field, in declaration order."""
    return list(fields(Settings))


def how(f: Field[Any]) -> Option:
    option_: Option = f.metadata["option"]
    return option_


def flag(f: Field[Any]) -> str:
    """The setting's name as a flag, without dashes in front: ``max-frame-rate``."""
    return f.name.replace("_", "-")


def env_name(f: Field[Any]) -> str:
    return ENV_PREFIX + f.name.upper()


def default_text(f: Field[Any]) -> str:
    """The default as people read it (help text, README)."""
    text = how(f).default_text
    if text is not None:
        return text
    value = f.default
    return f"{value:g}" if isinstance(value, float) else str(value)


def to_text(value: Any) -> str:
    if value is None:
        return "auto"  # metrics: decided by the host, as when not given
    if isinstance(value, bool):
        return "true" if value else "false"
    return ",".join(value) if isinstance(value, tuple) else str(value)


def from_text(f: Field[Any], raw: str) -> Any:
    """A setting's value from its environment variable."""
    name = env_name(f)
    if _is_list(f):
        return _items(f, raw)
    if f.name == "metrics":
        answer = {"1": True, "true": True, "yes": True, "on": True, "auto": None}
        answer |= {"0": False, "false": False, "no": False, "off": False}
        if raw.lower() not in answer:
            raise ValueError(f"{name}={raw!r} is not one of on, off, auto")
        return answer[raw.lower()]
    if str(f.type) == "bool":
        switch = {"1": True, "true": True, "yes": True, "on": True}
        switch |= {"0": False, "false": False, "no": False, "off": False}
        if raw.lower() not in switch:
            raise ValueError(f"{name}={raw!r} is not one of on, off")
        return switch[raw.lower()]
    kind = value_type(f)
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def is_switch(f: Field[Any]) -> bool:
    """A setting that is on or off: ``--NAME`` / ``--no-NAME``."""
    return str(f.type) in ("bool", "bool | None")


def value_type(f: Field[Any]) -> type:
    """What a setting's text is converted to (``int``, ``float`` or ``str``)."""
    return {"int": int, "float": float}.get(str(f.type), str)


def _is_list(f: Field[Any]) -> bool:
    """A repeatable option (a flag given several times, a variable of comma-separated items)."""
    return str(f.type).startswith("tuple")


def _items(f: Field[Any], value: str | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if f.name == "allow_origin":
        return tuple(o.strip().rstrip("/") for o in items if o.strip())
    return tuple(item.strip() for item in items if item.strip())
