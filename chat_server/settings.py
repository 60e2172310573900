"""Server settings: defaults, ``CHAT_SERVER_*`` environment variables, command-line overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from chat_server import protocol

ENV_PREFIX = "CHAT_SERVER_"
# A connection may send this many seconds' worth of its frame and byte rates at once.
FLOOD_BURST_SECONDS = 5.0
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # Browser origins allowed to open a WebSocket; clients that send no Origin always may.
    allow_origin: tuple[str, ...] = ()
    max_message_chars: int = protocol.MAX_MESSAGE_CHARS
    max_frame_bytes: int = protocol.MAX_FRAME_BYTES
    # Messages per second per connection; 0 turns off every per-connection input limit
    # (messages, frames, bytes), for benchmarks.
    rate_limit: float = 10.0
    rate_burst: int = 20
    # Every frame (continuations and control frames too) and every byte a connection sends,
    # per second, with FLOOD_BURST_SECONDS of it allowed at once; over it: close 1008. 0 = off.
    max_frame_rate: float = 100.0
    max_byte_rate: float = 1024 * 1024
    send_buffer: int = 1024 * 1024  # bytes of queued outgoing text per connection
    max_connections: int = 10_000
    # Before a connection is a WebSocket (or has sent a whole HTTP request): its request head
    # in bytes and headers, the seconds it has from accept, and how many may be in that state.
    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    handshake_timeout: float = 10.0
    max_pending: int = 1000
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    broker_url: str = "memory://"
    # Processes serving the port (uvicorn's --workers); more than one needs a shared broker.
    workers: int = 1
    # How long the broker may take to answer before the node declares it unavailable.
    broker_timeout: float = 2.0
    # A node that has not renewed its heartbeat for this long is dead: the others announce its
    # members' leaves and free its names. Heartbeats go out every third of it.
    node_ttl: float = 15.0
    # Seconds between two probes a node publishes to itself to check its subscription.
    probe_interval: float = 1.0
    # How long an evicted connection may take to take its close frame before it is aborted.
    close_grace: float = 2.0
    # What the server keeps (see the README's "What the server keeps"): the last messages of
    # each room (0 = no history), for this long after the room's last event; with memory://
    # also the rooms that emptied, this many of them (oldest dropped first).
    history_size: int = protocol.DEFAULT_HISTORY_SIZE
    history_ttl: float = 7 * 24 * 3600.0
    history_rooms: int = 1000
    # Most messages replayed to one connection on joining (?history=N, or a recovery).
    recovery_limit: int = protocol.DEFAULT_RECOVERY_LIMIT
    # Seconds a resumable name stays its token's after its last connection ended.
    name_reservation: float = protocol.DEFAULT_NAME_RESERVATION
    log_format: str = "text"  # or "json": one object per line
    # GET /metrics; None = only when listening on a loopback address.
    metrics: bool | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``CHAT_SERVER_*`` variables, then ``overrides`` (None = not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "allow_origin" in values and isinstance(values["allow_origin"], list | str):
            values["allow_origin"] = _origins(values["allow_origin"])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"port must be 1-65535, not {self.port}")
        for name in (
            "max_message_chars",
            "max_frame_bytes",
            "send_buffer",
            "max_connections",
            "max_head_bytes",
            "max_headers",
            "max_pending",
            "handshake_timeout",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name.replace('_', '-')} must be positive")
        for name in ("history_size", "history_rooms", "recovery_limit", "name_reservation"):
            if getattr(self, name) < 0:
                problems.append(f"{name.replace('_', '-')} must be 0 or more")
        if self.history_ttl <= 0:
            problems.append("history-ttl must be positive")
        for name in ("rate_limit", "max_frame_rate", "max_byte_rate"):
            if getattr(self, name) < 0:
                problems.append(f"{name.replace('_', '-')} must be 0 (off) or positive")
        if self.log_format not in LOG_FORMATS:
            problems.append(f"log-format must be one of {', '.join(LOG_FORMATS)}")
        if self.rate_burst < 1:
            problems.append("rate-burst must be at least 1")
        if self.ping_interval < 0 or self.ping_timeout < 0:
            problems.append("ping interval and timeout must be 0 (off) or positive")
        problems += self._broker_problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _broker_problems(self) -> list[str]:
        from chat_server.backends import is_shared

        problems = []
        try:
            shared = is_shared(self.broker_url)
        except ValueError as exc:
            return [str(exc)]
        if self.workers < 1:
            problems.append("workers must be at least 1")
        elif self.workers > 1 and not shared:
            problems.append(
                f"--workers {self.workers} needs a broker that the processes share: with "
                f"{self.broker_url} each worker would be a chat of its own; use "
                f"--broker-url redis://HOST:PORT/DB"
            )
        if self.broker_timeout <= 0 or self.probe_interval <= 0:
            problems.append("broker-timeout and probe-interval must be positive")
        if self.node_ttl < 3 * self.broker_timeout:
            problems.append("node-ttl must be at least 3 times broker-timeout")
        return problems

    def to_env(self) -> dict[str, str]:
        """These settings as ``CHAT_SERVER_*`` variables (what worker processes read)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                text = "auto"  # metrics: decided by the host, as when not given
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = ",".join(value) if isinstance(value, tuple) else str(value)
            env[ENV_PREFIX + f.name.upper()] = text
        return env


def _origins(value: str | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(o.strip().rstrip("/") for o in items if o.strip())


def _convert(name: str, raw: str) -> Any:
    default = Settings.__dataclass_fields__[name].default
    if name == "allow_origin":
        return _origins(raw)
    if name == "metrics":
        flag = raw.lower()
        if flag in {"1", "true", "yes", "on"}:
            return True
        if flag in {"0", "false", "no", "off"}:
            return False
        if flag == "auto":
            return None
        raise ValueError(f"{ENV_PREFIX}METRICS={raw!r} is not one of on, off, auto")
    try:
        if isinstance(default, bool):
            return raw.lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number") from None
    return raw
