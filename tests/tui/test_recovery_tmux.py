"""Issue 7 end to end: two real ``chat-tui`` in tmux, one room, the server gone and back.

What one typed while the server was down must appear on the other's screen exactly once and in
order, whichever of the two reconnects first. Each program reaches the server through a relay
that can hold new connections, which decides who gets back first (the old ones die with the
server). Memory broker: the server is stopped (SIGTERM) and started again, so the room starts a
new epoch and the later one is shown the history after a "may be missing" marker. Redis
broker: the server is killed (SIGKILL) and started again; Redis kept the room, so the later
one recovers the gap in place.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable

import pytest

from chat_testing.marks import requires_redis
from chat_testing.proxy import TcpProxy
from chat_testing.redis_servers import start_redis
from chat_testing.servers import RunningServer, start_server
from chat_testing.tmux import Tmux
from tests.tui.tmux_screen import CHAT_TUI, JOINED, STARTUP, status_row

pytestmark = pytest.mark.skipif(not CHAT_TUI.exists(), reason="chat-tui is not installed")

TYPED = 4  # messages typed per outage


def start_tui(tmux: Tmux, port: int, room: str) -> None:
    tmux.start([str(CHAT_TUI), "--server", f"ws://127.0.0.1:{port}", "--no-autostart", room])
    tmux.wait_for(
        lambda s: JOINED.search(s) and status_row(s).endswith("connected"),
        f"joining {room}",
        timeout=STARTUP,
    )


def connected(screen: str) -> bool:
    return status_row(screen).endswith(" connected")


def outage(
    server: RunningServer,
    stop: Callable[[RunningServer], object],
    order: list[tuple[Tmux, TcpProxy]],
    sender: Tmux,
    receiver: Tmux,
    label: str,
) -> RunningServer:
    """The server goes; ``sender`` types; the server comes back on the same port, and the
    programs get through in ``order``. The receiver then shows what was typed, once each, in
    order. Returns the new server."""
    for _, relay in order:
        relay.hold()
    stop(server)
    for tmux in (sender, receiver):
        tmux.wait_for(lambda s: not connected(s), f"{label}: the loss noticed")
    typed = [f"{label} typed while down {i}" for i in range(TYPED)]
    for text in typed:
        sender.keys(text, literal=True)
        sender.keys("Enter")
    sender.wait_for(lambda s: f"(pending) {typed[-1]}" in s, f"{label}: typed, pending")
    server = start_server(port=server.port, **server.options)
    for tmux, relay in order:
        relay.release()
        tmux.keys("C-r")  # in case it is waiting out a backoff
        tmux.wait_for(connected, f"{label}: reconnected")
        if tmux is sender:
            sender.wait_for(lambda s: "(pending)" not in s, f"{label}: every message sent")
    screen = receiver.wait_for(lambda s: typed[-1] in s, f"{label}: the messages received")
    rows = [row for row, line in enumerate(screen.splitlines()) for t in typed if t in line]
    assert len(rows) == TYPED, screen  # each exactly once ...
    assert rows == sorted(rows), screen  # ... and in order
    assert connected(receiver.screen()) and connected(sender.screen())
    return server


def two_outages(
    server: RunningServer,
    stop: Callable[[RunningServer], object],
    terminals: tuple[Tmux, Tmux],
    request: pytest.FixtureRequest,
) -> None:
    tui_a, tui_b = terminals
    room = f"recover-{uuid.uuid4().hex[:6]}"
    with TcpProxy([server.port]) as to_a, TcpProxy([server.port]) as to_b:
        start_tui(tui_a, to_a.port, room)
        start_tui(tui_b, to_b.port, room)
        a, b = (tui_a, to_a), (tui_b, to_b)
        # The one who typed gets back first: the other catches up from the server.
        server = outage(server, stop, [a, b], tui_a, tui_b, "one")
        request.addfinalizer(server.stop)
        # The other gets back first: the messages reach it live.
        server = outage(server, stop, [b, a], tui_a, tui_b, "two")
        request.addfinalizer(server.stop)


def test_memory_server_stopped_and_started_again(
    terminals: tuple[Tmux, Tmux], request: pytest.FixtureRequest
) -> None:
    server = start_server(rate_limit=0)
    request.addfinalizer(server.stop)
    two_outages(server, RunningServer.stop, terminals, request)
    # A new epoch each time: the later one was told that it may have missed something.
    assert "may be missing" in terminals[1].screen()


@requires_redis
def test_redis_server_killed_and_started_again(
    terminals: tuple[Tmux, Tmux], request: pytest.FixtureRequest
) -> None:
    redis = start_redis("--save", "", "--appendonly", "no")
    request.addfinalizer(redis.stop)
    server = start_server(rate_limit=0, broker_url=redis.url)
    request.addfinalizer(server.stop)
    two_outages(server, lambda s: s.stop(signal.SIGKILL), terminals, request)
    # Redis kept the room: the gap was filled, nothing is said to be missing.
    assert "may be missing" not in terminals[1].screen()
    assert "may be missing" not in terminals[0].screen()
