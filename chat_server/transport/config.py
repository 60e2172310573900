"""uvicorn's configuration with the chat server's input limits: the one way the protocols of
``http_guard`` and ``uvicorn_ws`` learn them, in the server process and in every worker (uvicorn
hands its config to worker processes pickled, so the limits travel with it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import uvicorn

from chat_server.ops.settings import Settings

# A connection may send this many seconds' worth of its frame and byte rates at once.
FLOOD_BURST_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class InputLimits:
    """One WebSocket's input limits (0 turns a rate off), and its outgoing bound."""

    message_rate: float
    message_burst: int
    frame_rate: float
    frame_burst: float
    byte_rate: float
    byte_burst: float
    send_buffer: int


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Every connection's limits before it is a WebSocket (or has sent a whole request)."""

    max_head_bytes: int
    max_headers: int
    handshake_timeout: float
    max_pending: int
    http_rate: float  # plain HTTP requests per second per client address; 0: no limit
    handshakes_per_minute: int  # new WebSocket handshakes per client address; 0: no limit
    trusted_proxies: tuple[str, ...]  # CIDRs whose forwarding headers give the address
    proxy_protocol: bool = False  # trusted proxies send a PROXY protocol header first


@dataclass(frozen=True, slots=True)
class Limits:
    input: InputLimits
    http: HttpLimits

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        # --rate-limit 0 is the benchmarks' "no input limits": frames and bytes go unlimited too.
        off = settings.rate_limit == 0
        frames = 0.0 if off else settings.max_frame_rate
        nbytes = 0.0 if off else settings.max_byte_rate
        return cls(
            InputLimits(
                message_rate=settings.rate_limit,
                message_burst=settings.rate_burst,
                frame_rate=frames,
                frame_burst=frames * FLOOD_BURST_SECONDS,
                byte_rate=nbytes,
                byte_burst=nbytes * FLOOD_BURST_SECONDS,
                send_buffer=settings.send_buffer,
            ),
            HttpLimits(
                max_head_bytes=settings.max_head_bytes,
                max_headers=settings.max_headers,
                handshake_timeout=settings.handshake_timeout,
                max_pending=settings.max_pending,
                http_rate=settings.max_http_rate,
                handshakes_per_minute=int(
                    settings.per_address(settings.max_handshakes_per_address)
                ),
                trusted_proxies=settings.trusted_proxy,
                proxy_protocol=settings.proxy_protocol,
            ),
        )


_DEFAULT = Limits.of(Settings())


class ChatConfig(uvicorn.Config):
    """A ``uvicorn.Config`` that carries the server's :class:`Limits`."""

    def __init__(self, app: Any, *, limits: Limits, **options: Any) -> None:
        super().__init__(app, **options)
        self.limits = limits


def limits_of(config: uvicorn.Config) -> Limits:
    """The limits a protocol runs with: its server's (the defaults if it has none)."""
    return config.limits if isinstance(config, ChatConfig) else _DEFAULT
