"""This process's counters: plain numbers bumped where things happen, read by ``/metrics``.

Hot paths only add to integers here; ``http/metrics.py`` turns them into metric families when
``/metrics`` is scraped, so counting costs next to nothing. Labels are fixed vocabularies
(close labels, frame types): never a room, a name or any message text.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from prometheus_client import Histogram

from chat_protocol import close
from chat_protocol.close import Close, Counted
from chat_server.loop_lag import monitor

# Reasons a connection is refused before it joins a room, and reasons a member is evicted.
REFUSALS: Final = (
    "origin",
    "room",
    "query",
    "name",
    "direct",
    "limit",
    "address",
    "handshake_rate",
    "handshake_timeout",
    "head_too_large",
    "pending_limit",
    "bad_handshake",
    "bad_request",
    "http_rate",
    "broker",
)
EVICTIONS: Final = close.EVICTIONS
# How an accepted WebSocket ended: one of EVICTIONS, refused at once (invalid room, connection
# limit), the server's shutdown, the peer's close frame, or the TCP connection lost without one.
CLOSE_OUTCOMES: Final = (*EVICTIONS, "refused", "shutdown", "client_close", "lost", "other")
FRAME_TYPES: Final = ("text", "binary", "continuation", "ping", "pong", "close")


class Stats:
    """Plain counters of one server process, bumped where things happen."""

    def __init__(self) -> None:
        self.pending_connections = 0  # accepted TCP connections without a finished request
        self.websockets_open = 0
        self.frames_in: Counter[str] = Counter()
        self.bytes_in = 0
        self.frames_out = 0  # chat frames (text) written
        self.control_frames_out = 0
        self.bytes_out = 0
        self.refusals: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.rate_limited = 0
        # Client addresses whose rate budget was forgotten to keep the table bounded (the next
        # request from one starts with a full budget: the bound fails open).
        self.addresses_forgotten = 0
        self.fanout_latency = Histogram(
            "chat_fanout_latency_seconds",
            "From a frame's publish to its last write into a local member's socket",
            registry=None,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.loop_lag = Histogram(
            "chat_event_loop_lag_seconds",
            "How late the event loop ran a timer that was due (sampled every 50 ms)",
            registry=None,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )

    def refuse(self, reason: str) -> None:
        self.refusals[reason] += 1

    def closed(self, sent: Close) -> str:
        """Count a close the server sends; returns the outcome it gives the connection."""
        if sent.counted is Counted.REFUSAL:
            self.refusals[sent.label] += 1
            return "refused"
        if sent.counted is Counted.EVICTION:
            self.evictions[sent.label] += 1
        return sent.label


stats = Stats()
monitor.on_lag = stats.loop_lag.observe
