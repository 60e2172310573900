"""``GET /metrics`` read by prometheus_client's own parser, and ``--log-format json``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chat_server.http.metrics import metrics_enabled
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.hostile import (
    client_frame,
    close_frame_of,
    connect,
    handshake_request,
    open_raw,
    read_response,
)
from tests.server.wsclients import join_many

pytestmark = pytest.mark.memory_only


def scrape(server: RunningServer) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample, by name and labels, as prometheus_client parses the exposition."""
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


async def test_metrics_count_what_happened(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory()
    room = "metrics-room"
    alice, bob = await join_many(server.chat_url(room), 2)
    secret = "metrics-secret-text"
    await alice.ws.send(secret)
    assert (await bob.recv()).endswith(secret)
    assert (await alice.recv()).endswith(secret)

    # A flooder, evicted; a bad handshake; a refused origin; an invalid room.
    def abuse() -> None:
        sock = open_raw(server.port, f"/chat/{room}")
        with contextlib.suppress(OSError):
            sock.sendall(client_frame(0x9, b"x") * 2000)
        data, _ = read_response(sock, timeout=5, until_close_frame=True)
        assert close_frame_of(data.partition(b"\r\n\r\n")[2] or data) is not None
        sock.close()
        for request in (
            handshake_request(server.port, "/chat/x", key=""),
            handshake_request(server.port, "/chat/x", extra="Origin: http://evil.example\r\n"),
            handshake_request(server.port, "/chat/bad%20room"),
        ):
            sock = connect(server.port)
            sock.sendall(request)
            read_response(sock, timeout=2, until_close_frame=True)
            sock.close()

    await asyncio.to_thread(abuse)

    def settled() -> dict:
        samples = scrape(server)
        done = (
            value(samples, "chat_evictions_total", reason="flood") == 1
            and value(samples, "chat_connections_open", state="websocket") == 2
        )
        return samples if done else {}

    samples = wait_until(settled, what="the flooder's eviction in /metrics")
    assert value(samples, "chat_rooms") == 1
    assert value(samples, "chat_refusals_total", reason="bad_handshake") == 1
    assert value(samples, "chat_refusals_total", reason="origin") == 1
    assert value(samples, "chat_refusals_total", reason="room") == 1
    assert value(samples, "chat_connections_closed_total", outcome="flood") == 1
    assert value(samples, "chat_frames_received_total", type="text") == 1
    assert value(samples, "chat_frames_received_total", type="ping") >= 500
    # Joins (3), the message (2 copies), the flooder's leave (2): chat frames written.
    assert value(samples, "chat_frames_sent_total", type="text") >= 7
    assert value(samples, "chat_sent_bytes_total") > 0
    assert value(samples, "chat_fanout_latency_seconds_count") >= 3
    assert value(samples, "chat_event_loop_lag_seconds_count") > 0
    assert value(samples, "chat_rate_limited_messages_total") == 0

    await alice.close()
    await bob.close()
    samples = wait_until(
        lambda: (
            (s := scrape(server))
            and value(s, "chat_connections_closed_total", outcome="client_close") == 2
            and s
        ),
        what="two clean closes",
    )
    assert value(samples, "chat_connections_open", state="websocket") == 0
    assert value(samples, "chat_rooms") == 0
    # Labels are fixed vocabularies: never a room, a name or any text.
    text = urllib.request.urlopen(server.http_url + "/metrics", timeout=5).read().decode()
    for leak in (room, alice.name, bob.name, secret):
        assert leak not in text


def test_metrics_default_only_on_loopback() -> None:
    assert metrics_enabled(None, "127.0.0.1")
    assert metrics_enabled(None, "::1")
    assert metrics_enabled(None, "localhost")
    assert not metrics_enabled(None, "0.0.0.0")
    assert not metrics_enabled(None, "192.0.2.7")
    assert metrics_enabled(True, "0.0.0.0")
    assert not metrics_enabled(False, "127.0.0.1")


def test_no_metrics_answers_404(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(metrics=False)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.http_url + "/metrics", timeout=5)
    assert info.value.code == 404


async def test_json_log_has_one_object_per_line(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory(log_format="json")
    alice, bob = await join_many(server.chat_url("json-room"), 2)
    await alice.ws.send("never in the log")
    await bob.recv()
    await alice.close()
    wait_until(lambda: '"event": "left"' in server.log(), what="the leave logged")
    events = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    for event in events:
        assert {"time", "level", "event"} <= event.keys(), event
    joined = [e for e in events if e["event"] == "joined"]
    assert [e["name"] for e in joined] == [alice.name, bob.name]
    assert all(e["room"] == "json-room" and e["level"] == "info" for e in joined)
    (left,) = [e for e in events if e["event"] == "left"]
    assert left["name"] == alice.name and left["code"] == 1000
    assert "never in the log" not in server.log()
    await bob.close()
