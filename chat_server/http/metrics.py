"""``GET /metrics``: the counters of ``chat_server.stats`` in the Prometheus text format
(prometheus-client), turned into metric families when ``/metrics`` is scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chat_protocol import hosts, http
from chat_server import asgi
from chat_server.stats import CLOSE_OUTCOMES, EVICTIONS, FRAME_TYPES, REFUSALS, stats

Family = TypeVar("Family", CounterMetricFamily, GaugeMetricFamily)


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
            "chat_broker_up", "1 while the broker (SQLite, memory or Redis) is available, else 0"
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
        forgotten = CounterMetricFamily(
            "chat_addresses_forgotten",
            "Client addresses whose rate budgets were forgotten to keep the table bounded",
        )
        forgotten.add_metric([], s.addresses_forgotten)
        yield forgotten
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
    return hosts.is_loopback(host)


class MetricsApp:
    """Serves ``GET /metrics`` in front of the chat application; everything else passes on."""

    def __init__(self, app: Any, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=False)
        node = app.node
        self.registry.register(
            _Collector(lambda: len(node.hub.rooms()), lambda: node.backend.status.available)
        )

    def __getattr__(self, name: str) -> Any:
        # The chat application's attributes (``node``, ``api``) stay reachable.
        return getattr(self.app, name)

    async def __call__(self, scope: asgi.Scope, receive: asgi.ReceiveFn, send: asgi.SendFn) -> None:
        if not (self.enabled and scope["type"] == "http" and scope["path"] == http.METRICS_PATH):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "GET":
            await _respond(send, 405, b"method not allowed\n", "text/plain; charset=utf-8")
            return
        await _respond(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)


async def _respond(send: asgi.SendFn, status: int, body: bytes, content_type: str) -> None:
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
