"""What the real chat-tui writes to its terminal, read raw from a pty: a notification for a
mention out of sight (the terminal's own, wrapped for tmux inside tmux), hyperlinks (OSC 8),
and nothing from the network as a control sequence."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection

from chat_protocol.v1 import parse_frame
from chat_testing.pty_run import PtyProgram
from chat_testing.servers import RunningServer
from tests.tui.peers import join_peer
from tests.tui.tmux_screen import CHAT_TUI, STARTUP


def start(tmp_path: Path, server: RunningServer, *rooms: str, **env: str) -> PtyProgram:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in {"COLUMNS", "LINES", "TMUX", "TMUX_PANE", "TERM_PROGRAM", "VTE_VERSION"}
        and not k.startswith(("KITTY_", "LC_TERMINAL", "WT_"))
    }
    environ.update(
        TERM="xterm-256color",
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        **env,
    )
    command = [str(CHAT_TUI), "--server", server.ws_url, "--no-autostart", *rooms]
    return PtyProgram(command, environ)


@contextmanager
def running(program: PtyProgram) -> Iterator[PtyProgram]:
    try:
        yield program
    finally:
        program.close()


def name_of_the_program(ws: ClientConnection) -> str:
    """The program's name, from its join notice as a plain member reads it."""
    while True:
        frame = parse_frame(str(ws.recv(timeout=STARTUP)))
        if frame.name is not None and frame.text.endswith("joined the chat"):
            return frame.name


OSC8 = re.compile(rb"\x1b\]8;id=[^;]*;([^\x1b]*)\x1b\\")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"VTE_VERSION": "7600"},
            b"\x1b]777;notify;{room};{peer}: {me}: deploy]52;c;eA== is done\x1b\\",
        ),
        (
            {"VTE_VERSION": "7600", "TMUX": "/tmp/tmux-0/default,1,0"},
            b"\x1bPtmux;\x1b\x1b]777;notify;{room};{peer}: {me}: deploy]52;c;eA== is done"
            b"\x1b\x1b\\\x1b\\",
        ),
        (
            {"TERM_PROGRAM": "WezTerm"},
            b"\x1b]9;{room}: {peer}: {me}: deploy]52;c;eA== is done\x1b\\",
        ),
    ],
    ids=["osc777", "osc777-in-tmux", "osc9"],
)
def test_a_mention_out_of_sight_reaches_the_terminal_as_its_notification(
    tmp_path: Path, shared_server: RunningServer, env: dict[str, str], expected: bytes
) -> None:
    shown, elsewhere = f"pty-{uuid.uuid4().hex[:6]}", f"pty-{uuid.uuid4().hex[:6]}"
    with (
        join_peer(shared_server, elsewhere) as (ws, peer),
        running(start(tmp_path, shared_server, shown, elsewhere, **env)) as program,
    ):
        me = name_of_the_program(ws)
        # A hostile sender: an escape sequence in the text must not reach the terminal (the
        # server strips ESC and BEL; what is left is plain text).
        ws.send(f"{me}: deploy\x1b]52;c;eA==\x07 is done")
        wanted = expected.replace(b"{room}", elsewhere.encode())
        wanted = wanted.replace(b"{peer}", peer.encode()).replace(b"{me}", me.encode())
        output = program.wait_for(lambda out: wanted in out, "the notification", STARTUP)
        assert b"\x1b]52;" not in output


def test_links_are_terminal_hyperlinks_and_a_lookalike_is_not(
    tmp_path: Path, shared_server: RunningServer
) -> None:
    room = f"pty-{uuid.uuid4().hex[:6]}"
    with (
        join_peer(shared_server, room) as (ws, _),
        running(start(tmp_path, shared_server, room)) as program,
    ):
        name_of_the_program(ws)
        ws.send("docs at https://example.com/a_(b) and https://p\u0430ypal.com/x.")
        output = program.wait_for(
            lambda out: b"https://example.com/a_(b)" in b"".join(OSC8.findall(out)),
            "the link as a hyperlink",
            STARTUP,
        )
        # The lookalike is shown, underlined, but the terminal is given no link to open.
        assert all(b"paypal" not in link and b"xn--" not in link for link in OSC8.findall(output))


def test_the_title_is_written_at_start(tmp_path: Path, shared_server: RunningServer) -> None:
    """The terminal's title says "chat" from the start (it stayed the shell's until the first
    unread message), the terminal's own kept first to be restored at exit."""
    room = f"pty-{uuid.uuid4().hex[:6]}"
    with (
        join_peer(shared_server, room) as (ws, _),
        running(start(tmp_path, shared_server, room)) as program,
    ):
        name_of_the_program(ws)
        output = program.wait_for(lambda out: b"\x1b]2;chat\x07" in out, "the title", STARTUP)
        assert output.index(b"\x1b[22;0t") < output.index(b"\x1b]2;chat\x07")
