"""Issue 15 in real terminals: two chat-tui in tmux, one with a chosen name; the other sees the
name, and sees "is typing…" while it types and no more once it sent."""

from __future__ import annotations

import secrets
import uuid

import pytest

from chat_testing.servers import RunningServer
from chat_testing.tmux import Tmux
from tests.tui.tmux_screen import CHAT_TUI, STARTUP, status_row

pytestmark = pytest.mark.skipif(not CHAT_TUI.exists(), reason="chat-tui is not installed")


def start(tmux: Tmux, server: RunningServer, room: str, *more: str) -> None:
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
