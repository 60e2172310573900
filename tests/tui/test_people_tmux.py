"""Issue 15 in real terminals: two chat-tui in tmux. One with a chosen name: the other sees the
name, and "is typing…" while it types and no more once it sent. Then nick changes, direct
messages and away between them, and a conversation through a server kill."""

from __future__ import annotations

import secrets
import signal
import uuid

import pytest

from chat_testing.marks import requires_redis
from chat_testing.redis_servers import start_redis
from chat_testing.servers import RunningServer, start_server
from chat_testing.tmux import Tmux
from tests.tui.tmux_screen import CHAT_TUI, STARTUP, status_row

pytestmark = pytest.mark.skipif(not CHAT_TUI.exists(), reason="chat-tui is not installed")


def start(tmux: Tmux, server: RunningServer, room: str, *more: str) -> None:
    tmux.configure('joins = "all"\n')  # every join and rename shows: they are read here
    tmux.start([str(CHAT_TUI), "--server", server.ws_url, "--no-autostart", *more, room])


def test_a_chosen_name_and_its_typing_seen_from_another_terminal(
    shared_server: RunningServer, terminals: tuple[Tmux, Tmux]
) -> None:
    ada, bob = terminals
    room, name = f"people-{uuid.uuid4().hex[:6]}", f"Ada{secrets.token_hex(3)}"
    start(bob, shared_server, room)
    bob.wait_for(lambda s: f"joined {room} as user_" in s, "bob joined", timeout=STARTUP)
    start(ada, shared_server, room, "--nick", name)
    ada.wait_for(lambda s: f"joined {room} as {name}" in s, "ada's own name", timeout=STARTUP)
    bob.wait_for(lambda s: f"{name} joined" in s, "ada's name on bob's screen")

    ada.keys("hel", literal=True)  # typed, not sent
    bob.wait_for(lambda s: f"{name} is typing…" in status_row(s), "typing on bob's status line")
    ada.keys("lo there", literal=True)
    ada.keys("Enter")
    bob.wait_for(
        lambda s: "hello there" in s and "is typing" not in status_row(s),
        "the message, and no more typing",
    )


@requires_redis
def test_nick_msg_and_away_between_two_terminals_and_through_a_server_kill(
    terminals: tuple[Tmux, Tmux], request: pytest.FixtureRequest
) -> None:
    """/nick on one shows on the other; /msg opens the conversation on the other's screen and
    a reply comes back; /away shows; the conversation survives the server's SIGKILL and
    restart (Redis keeps it) with what was typed meanwhile shown once."""
    redis = start_redis("--save", "", "--appendonly", "no")
    request.addfinalizer(redis.stop)
    server = start_server(rate_limit=0, broker_url=redis.url)
    request.addfinalizer(lambda: server.stop())
    ada, bob = terminals
    room = f"people-{uuid.uuid4().hex[:6]}"
    ada_name, bob_name = f"Ada{secrets.token_hex(3)}", f"Bob{secrets.token_hex(3)}"
    start(ada, server, room, "--nick", ada_name)
    ada.wait_for(lambda s: f"joined {room} as {ada_name}" in s, "ada joined", timeout=STARTUP)
    start(bob, server, room)
    bob.wait_for(lambda s: f"joined {room} as user_" in s, "bob joined", timeout=STARTUP)

    bob.keys(f"/nick {bob_name}", literal=True)
    bob.keys("Enter")
    bob.wait_for(lambda s: f"you are {bob_name}" in status_row(s), "bob's new name")
    ada.wait_for(lambda s: f"is now known as {bob_name}" in s, "bob's nick on ada's screen")

    ada.keys(f"/msg {bob_name} psst, a secret", literal=True)
    ada.keys("Enter")
    bob.wait_for(lambda s: f"@{ada_name}" in s, "the conversation in bob's sidebar")
    bob.keys(f"/query {ada_name}", literal=True)
    bob.keys("Enter")
    bob.wait_for(lambda s: "psst, a secret" in s, "the message on bob's screen")
    bob.keys("the secret is safe", literal=True)
    bob.keys("Enter")
    ada.keys(f"/query {bob_name}", literal=True)
    ada.keys("Enter")
    ada.wait_for(lambda s: "the secret is safe" in s, "bob's reply on ada's screen")

    bob.keys("/away lunch", literal=True)
    bob.keys("Enter")
    ada.wait_for(lambda s: f"{bob_name} is away: lunch" in s, "bob's away on ada's screen")

    server.stop(signal.SIGKILL)
    ada.wait_for(lambda s: "connected" not in status_row(s).split()[-1:], "ada lost it")
    typed = [f"while down {i}" for i in range(3)]
    for text in typed:
        ada.keys(text, literal=True)
        ada.keys("Enter")
    ada.wait_for(lambda s: f"(pending) {typed[-1]}" in s, "typed while down, pending")
    server = start_server(port=server.port, **server.options)
    for tmux in (ada, bob):
        tmux.keys("C-r")
    ada.wait_for(lambda s: "(pending)" not in s and typed[-1] in s, "ada's messages sent")
    screen = bob.wait_for(lambda s: typed[-1] in s, "bob got them")
    rows = [row for row, line in enumerate(screen.splitlines()) for t in typed if t in line]
    assert len(rows) == len(typed) and rows == sorted(rows), screen  # once each, in order
    assert "may be missing" not in screen
