"""Two real ``chat-tui`` programs, in tmux, on two chat-server processes sharing one Redis.

Only the screen is read and only keys are typed. Each program reaches the cluster through a
relay that prefers one process and fails over to the other (a load balancer as far as the
clients can tell): they chat across processes, and when the process under one of them is
killed, that one reconnects to the other process and nothing it typed meanwhile is lost.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator

import pytest

from chat_testing.clusters import Cluster, running_cluster
from chat_testing.marks import requires_redis
from chat_testing.proxy import TcpProxy
from chat_testing.tmux import STEP, Tmux
from tests.tui.tmux_screen import CHAT_TUI, JOINED, STARTUP

pytestmark = [
    requires_redis,
    pytest.mark.skipif(not CHAT_TUI.exists(), reason="chat-tui is not installed"),
]

RECONNECTED = re.compile(r"── reconnected( as (user_[a-z]{6}[0-9]{2}))? ──")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with running_cluster(2) as c:
        yield c


def start_tui(tmux: Tmux, port: int, room: str) -> str:
    """Start chat-tui on ``room`` through the relay on ``port``; returns the name it got."""
    tmux.configure('joins = "all"\n')  # every join and leave shows: they are read here
    tmux.start([str(CHAT_TUI), "--server", f"ws://127.0.0.1:{port}", "--no-autostart", room])
    screen = tmux.wait_for(JOINED.search, f"joining {room}", timeout=STARTUP)
    match = JOINED.search(screen)
    assert match is not None
    return match.group(2)


def say(tmux: Tmux, text: str) -> None:
    tmux.keys(text, literal=True)
    tmux.keys("Enter")


def test_two_tuis_on_two_processes_chat_and_survive_a_killed_process(
    cluster: Cluster, terminals: tuple[Tmux, Tmux]
) -> None:
    tui_a, tui_b = terminals
    node_a, node_b = cluster.nodes
    room = f"cluster-{uuid.uuid4().hex[:6]}"
    with (
        TcpProxy([node_a.port, node_b.port]) as to_a,
        TcpProxy([node_b.port, node_a.port]) as to_b,
    ):
        name_a = start_tui(tui_a, to_a.port, room)
        name_b = start_tui(tui_b, to_b.port, room)
        # One program on each process.
        assert node_a.get_json("/health")["node"]["connections"] == 1
        assert node_b.get_json("/health")["node"]["connections"] == 1
        tui_a.wait_for(lambda s: f"{name_b} joined the chat" in s, "b's join, seen by a")

        say(tui_a, "hello from process a")
        tui_b.wait_for(lambda s: f"{name_a} hello from process a" in s, "a's message on b")
        say(tui_b, "and back from process b")
        tui_a.wait_for(lambda s: f"{name_b} and back from process b" in s, "b's reply on a")

        node_a.stop(signal.SIGKILL)
        # Typed while its server is gone: kept pending, sent once it is back.
        say(tui_a, "typed while the server was down")
        screen = tui_a.wait_for(RECONNECTED.search, "a reconnecting to process b")
        match = RECONNECTED.search(screen)
        assert match is not None
        # chat.v2: the name is taken back (the token is the cluster's, in Redis).
        assert match.group(2) is None
        new_name = name_a
        assert node_b.get_json("/health")["node"]["connections"] == 2

        tui_b.wait_for(
            lambda s: f"{new_name} typed while the server was down" in s,
            "the pending message, delivered after the reconnect",
            timeout=STEP,
        )
        # The old connection is announced as gone (by process b's reaper), the new one as
        # joined, under the same name.
        tui_b.wait_for(
            lambda s: f"{name_a} left the chat" in s and f"{new_name} joined the chat" in s,
            "a's old name leaving and its new name joining",
            timeout=STEP,
        )
        say(tui_b, "still together")
        tui_a.wait_for(lambda s: f"{name_b} still together" in s, "b's message after the kill")
        screen = tui_b.screen()
        assert screen.count(f"{new_name} typed while the server was down") == 1
