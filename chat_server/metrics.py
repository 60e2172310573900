"""``GET /metrics``: the server's counters in the Prometheus text format (prometheus-client).

Hot paths only bump plain integers on :data:`stats`; a collector turns them into metric
families when ``/metrics`` is scraped, so counting costs next to nothing. Labels are fixed
vocabularies (reasons, frame types): never a room, a name or any message text.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chat_server.loop_lag import monitor

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_PATH = "/metrics"

Family = TypeVar("Family", CounterMetricFamily, GaugeMetricFamily)

# Reasons a connection is refused before it joins a room, and reasons a member is evicted.
REFUSALS = (
    "origin",
    "room",
    "limit",
    "handshake_timeout",
    "head_too_large",
    "pending_limit",
    "bad_handshake",
    "bad_request",
    "broker",
)
EVICTIONS = (
    "slow_consumer",
    "flood",
    "size",
    "binary",
    "invalid_utf8",
    "protocol_error",
    "ping_timeout",
    "broker",
)
# How an accepted WebSocket ended: one of EVICTIONS, refused at once (invalid room, connection
# limit), the server's shutdown, the peer's close frame, or the TCP connection lost without one.
CLOSE_OUTCOMES = (*EVICTIONS, "refused", "shutdown", "client_close", "lost", "other")
FRAME_TYPES = ("text", "binary", "continuation", "ping", "pong", "close")

_EVICTION_BY_CODE = {
    1002: "protocol_error",
    1003: "binary",
    1007: "invalid_utf8",
    1009: "size",
    1011: "ping_timeout",
}


def classify_close(code: int, reason: str) -> tuple[str, str]:
    """``("refusal" | "eviction" | "shutdown" | "other", label)`` for a close the server sends."""
    if code == 1013:
        # Refused (or closed) while the broker is unavailable, or at the connection limit.
        return "refusal", "broker" if reason.startswith("broker") else "limit"
    if code == 1012 and "broker" in reason:
        return "eviction", "broker"  # the broker lost events or our membership: reconnect
    if code in (1001, 1012):
        return "shutdown", "shutdown"
    if code == 1008:
        if reason.startswith("invalid room"):
            return "refusal", "room"
        if reason.startswith("flood"):
            return "eviction", "flood"
        return "eviction", "slow_consumer"
    label = _EVICTION_BY_CODE.get(code)
    if label is not None:
        return "eviction", label
    return "other", "other"


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

    def evict(self, reason: str) -> None:
        self.evictions[reason] += 1


stats = Stats()
monitor.on_lag = stats.loop_lag.observe


class _Collector(Collector):
    def __init__(self, rooms: Callable[[], int], broker_up: Callable[[], bool]) -> None:
        self.rooms = rooms
        self.broker_up = broker_up

    def collect(self) -> Iterable[Any]:
        s = stats
        yield _gauge(
            "chat_connections_open",
            "Open connections: WebSockets in rooms, and accepted connections still in their "
            "request or handshake",
            "state",
            {"websocket": s.websockets_open, "pending": s.pending_connections},
        )
        yield _counter(
            "chat_connections_closed",
            "WebSocket connections that ended, by outcome",
            "outcome",
            {k: s.closes[k] for k in CLOSE_OUTCOMES},
        )
        rooms = GaugeMetricFamily("chat_rooms", "Rooms with at least one member on this node")
        rooms.add_metric([], self.rooms())
        yield rooms
        broker = GaugeMetricFamily(
            "chat_broker_up", "1 while the broker (memory or Redis) is available, else 0"
        )
        broker.add_metric([], 1 if self.broker_up() else 0)
        yield broker
        yield _counter(
            "chat_frames_received",
            "WebSocket frames received, by type",
            "type",
            {k: s.frames_in[k] for k in FRAME_TYPES},
        )
        received = CounterMetricFamily("chat_received_bytes", "Bytes read from WebSockets")
        received.add_metric([], s.bytes_in)
        yield received
        yield _counter(
            "chat_frames_sent",
            "WebSocket frames written: chat frames (text) and control frames",
            "type",
            {"text": s.frames_out, "control": s.control_frames_out},
        )
        sent = CounterMetricFamily("chat_sent_bytes", "Bytes of chat frames written to members")
        sent.add_metric([], s.bytes_out)
        yield sent
        yield _counter(
            "chat_refusals",
            "Connections refused before joining a room, by reason",
            "reason",
            {k: s.refusals[k] for k in REFUSALS},
        )
        yield _counter(
            "chat_evictions",
            "Members closed by the server for what they did, by reason",
            "reason",
            {k: s.evictions[k] for k in EVICTIONS},
        )
        limited = CounterMetricFamily(
            "chat_rate_limited_messages", "Messages dropped by the per-connection rate limit"
        )
        limited.add_metric([], s.rate_limited)
        yield limited
        yield from s.fanout_latency.collect()
        yield from s.loop_lag.collect()


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    return _labelled(CounterMetricFamily(name, doc, labels=[label]), values)


def _gauge(name: str, doc: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    return _labelled(GaugeMetricFamily(name, doc, labels=[label]), values)


def _labelled(family: Family, values: dict[str, int]) -> Family:
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def metrics_enabled(setting: bool | None, host: str) -> bool:
    """``--metrics``/``--no-metrics`` decide; by default only on a loopback address."""
    if setting is not None:
        return setting
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsApp:
    """Serves ``GET /metrics`` in front of the chat application; everything else passes on."""

    def __init__(self, app: Any, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=False)
        chat = app.chat
        self.registry.register(
            _Collector(lambda: len(chat.hub.rooms()), lambda: chat.backend.status.available)
        )

    def __getattr__(self, name: str) -> Any:
        # The chat application's attributes (``chat``, ``http``) stay reachable.
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (self.enabled and scope["type"] == "http" and scope["path"] == METRICS_PATH):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "GET":
            await _respond(send, 405, b"method not allowed\n", "text/plain; charset=utf-8")
            return
        await _respond(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
