"""End to end: the installed ``chat-tui`` program in a real terminal (tmux), as a user meets it.

Console script, argument parsing, terminal set-up and restore, and keys as a terminal sends
them (alt+2 arrives as ESC "2") are only exercised here; everything else has Pilot tests.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from chat_protocol.v1 import format_message
from chat_testing.servers import RunningServer
from chat_testing.tmux import MODE_FLAGS, STEP, Tmux
from chat_testing.waits import wait_until
from tests.tui.peers import join_peer, recv_until
from tests.tui.tmux_screen import CHAT_TUI, STARTUP, input_row, status_row

# Headless apps write nothing to a terminal, so only this test sees what reaches one: on CI a
# missing tmux is a failure (below), elsewhere the test is skipped.
pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"), reason="tmux is not installed"
)

BOUND = 200  # the scrollback bound the program is given
FLOOD = 4000  # twenty times the bound
ALTERNATE_SCREEN_AND_MOUSE = dict(zip(MODE_FLAGS, ("1", "0", "1", "1"), strict=True))
NORMAL_SCREEN = dict(zip(MODE_FLAGS, ("0", "1", "0", "0"), strict=True))


def test_chat_tui_in_a_real_terminal(
    server_factory: Callable[..., RunningServer],
    tmux: Tmux,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    assert CHAT_TUI.exists(), f"console script not installed at {CHAT_TUI}"
    server = server_factory(rate_limit=0)
    room = f"e2e-{uuid.uuid4().hex[:8]}"
    # The program in a shell that then waits for a line: the pane stays alive after chat-tui
    # exits, so the terminal modes it left behind can be read, and the line discipline must
    # be back to normal for `read` to see the Enter. The shell exits with chat-tui's status.
    script = (
        'status=0; "$0" "$@" || status=$?; echo "chat-tui exited: $status"; read r; exit $status'
    )
    # A small scrollback, so that the flood below passes the bound many times over.
    (tmp_path / "config" / "chat-tui").mkdir(parents=True)
    (tmp_path / "config" / "chat-tui" / "config.toml").write_text(f"scrollback = {BOUND}\n")
    tmux.start(
        ["sh", "-c", script, str(CHAT_TUI), "--server", server.ws_url, "--no-autostart", room]
    )

    joined = re.compile(rf"joined {re.escape(room)} as (user_[a-z]{{6}}[0-9]{{2}})")
    screen = tmux.wait_for(joined.search, f"joining {room}", timeout=STARTUP)
    match = joined.search(screen)
    assert match is not None
    name = match.group(1)
    assert f"#{room}" in status_row(screen) and f"you are {name}" in status_row(screen)
    # Full-screen mode as the program set it up (checked again after it exits).
    assert tmux.modes() == ALTERNATE_SCREEN_AND_MOUSE

    with join_peer(server, room) as (peer, peer_name):
        # The peer has said nothing: their join is hidden (the smart filter), their name is
        # in the members panel; alt+j (ESC j from the terminal) shows the hidden lines.
        tmux.wait_for(lambda s: peer_name in s, "the peer in the members panel")
        assert f"{peer_name} joined the chat" not in tmux.screen()
        tmux.keys("M-j")
        tmux.wait_for(lambda s: f"{peer_name} joined the chat" in s, "the peer's join")

        # Typed in the terminal, received by another client as the protocol says.
        tmux.keys("hello from tmux", literal=True)
        tmux.keys("Enter")
        recv_until(peer, format_message(name, "hello from tmux"))

        # Keys that arrive in one read: three messages, each sent once, the input empty.
        tmux.keys("one", "Enter", "two", "Enter", "three", "Enter")
        for text in ("one", "two", "three"):
            recv_until(peer, format_message(name, text))
        tmux.wait_for(lambda s: "Message, or /help" in input_row(s), "an empty input")

        # A failed command: said in the log, and the input is empty again.
        tmux.keys("/frobnicate", "Enter")
        tmux.wait_for(
            lambda s: "unknown command /frobnicate" in s and "Message, or /help" in input_row(s),
            "the error and an empty input",
        )

        # A flood far past the scrollback bound is followed to its last message.
        for n in range(FLOOD):
            peer.send(f"flood {n}")
        tmux.wait_for(
            lambda s: f"{peer_name} flood {FLOOD - 1}" in s, "the flood's last message", STARTUP
        )
        # ...and so is what comes after it.
        peer.send("after the flood")
        tmux.wait_for(lambda s: f"{peer_name} after the flood" in s, "the next message")

        # Markup from the network is shown as typed, not interpreted.
        markup = "[bold red]x[/] and [@click=app.quit]y[/]"
        peer.send(markup)
        tmux.wait_for(lambda s: f"{peer_name} {markup}" in s, "the peer's text, literally")
        assert tmux.pane("#{pane_dead}") == "0"

        # A second room, then the keys a terminal sends for alt+1 and alt+2 (ESC + digit).
        tmux.keys("/join other", literal=True)
        tmux.keys("Enter")
        other_joined = re.compile(r"joined other as (user_[a-z]{6}[0-9]{2})")
        screen = tmux.wait_for(other_joined.search, "joining other")
        assert "#other" in status_row(screen)
        other = other_joined.search(screen)
        assert other is not None
        assert other.group(1) == name  # chat.v2: one name in every room
        names = {room: name, "other": name}
        tmux.keys("M-1")
        tmux.wait_for(lambda s: f"#{room}" in status_row(s), f"alt+1: {room} active")
        tmux.wait_for(lambda s: f"{peer_name} {markup}" in s, f"{room}'s log shown again")
        tmux.keys("M-2")
        tmux.wait_for(
            lambda s: "#other" in status_row(s) and markup not in s,
            "alt+2: other active, its log shown",
        )

        # Unread messages elsewhere are counted in the terminal's title.
        peer.send("while you are in the other room")
        wait_until(lambda: tmux.pane("#{pane_title}") == "(1) chat", STEP, 0.1, "the title")

        # The server goes and comes back; ctrl+r reconnects at once, with feedback. A memory
        # server forgets its names when it restarts: a new name, but one for both rooms.
        server.stop()
        tmux.wait_for(lambda s: "offline, retrying in" in status_row(s), "the countdown")
        server = server.restart()
        request.addfinalizer(server.stop)
        tmux.keys("C-r")
        tmux.wait_for(lambda s: "reconnected as" in s, "ctrl+r: reconnected")
        screen = tmux.wait_for(lambda s: status_row(s).endswith("connected"), "connected again")
        match = re.search(r"reconnected as (user_[a-z]{6}[0-9]{2})", screen)
        assert match is not None
        name = match.group(1)
        assert f"you are {name}" in status_row(screen)
        tmux.keys("M-1")
        tmux.wait_for(
            lambda s: f"#{room}" in status_row(s) and f"you are {name}" in status_row(s),
            f"{room} reconnected too, under the same name",
        )
        names = {room: name, "other": name}

        # ctrl+q: a clean exit, every socket closed with 1000, the terminal restored.
        tmux.keys("C-q")
        tmux.wait_for(lambda s: "chat-tui exited: " in s, "chat-tui to exit")
        assert "chat-tui exited: 0" in tmux.screen()
        assert tmux.modes() == NORMAL_SCREEN
        tmux.keys("typed after exit", literal=True)
        tmux.keys("Enter")
        status = wait_until(tmux.exit_status, STEP, 0.1, "the shell to read the line and exit")
        assert status == "0"
        assert "typed after exit" in tmux.screen()  # echo is back on
        for left_room, left_name in names.items():
            wanted = f"left room={left_room} name={left_name} code=1000"
            wait_until(
                lambda w=wanted: w in server.log(),
                STEP,
                0.1,
                f"the server to log {wanted!r}:\n{server.log()}\n{tmux.screen()}",
            )
    server.stop()
    assert "Traceback" not in server.log()
