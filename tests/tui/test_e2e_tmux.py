"""End to end: the installed ``chat-tui`` program in a real terminal (tmux), as a user meets it.

Console script, argument parsing, terminal set-up and restore, and keys as a terminal sends
them (alt+2 arrives as ESC "2") are only exercised here; everything else has Pilot tests.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from chat_protocol.frames import FrameKind
from chat_protocol.names import NAME_PATTERN
from chat_protocol.v1 import format_message, parse_frame
from tests.servers import RunningServer, wait_until

# Headless apps write nothing to a terminal, so only this test sees what reaches one: on CI a
# missing tmux is a failure (below), elsewhere the test is skipped.
pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"), reason="tmux is not installed"
)

CHAT_TUI = Path(sys.executable).parent / "chat-tui"
WIDTH, HEIGHT = 120, 40
# Generous: the first start of a Textual app on a busy 2-core machine takes seconds.
STARTUP = 60.0
STEP = 20.0
MODE_FLAGS = ("alternate_on", "cursor_flag", "mouse_any_flag", "mouse_sgr_flag")
BOUND = 200  # the scrollback bound the program is given
FLOOD = 4000  # twenty times the bound
ALTERNATE_SCREEN_AND_MOUSE = dict(zip(MODE_FLAGS, ("1", "0", "1", "1"), strict=True))
NORMAL_SCREEN = dict(zip(MODE_FLAGS, ("0", "1", "0", "0"), strict=True))


class Tmux:
    """One tmux server on a private socket, holding the pane that runs the program."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"chat-e2e-{uuid.uuid4().hex[:12]}"  # parallel runs must not share one
        self.target = "chat"
        # No user tmux config; keep the pane after the program exits to read its exit status.
        self.conf = tmp_path / "tmux.conf"
        self.conf.write_text("set-option -g remain-on-exit on\n")
        # The tmux server, and so the program, gets this environment. Built from os.environ on
        # purpose: with env=None a child inherits the C-level environment, where GNU readline
        # (loaded by the test process) puts COLUMNS=80 and LINES=24, and the program would draw
        # an 80x24 screen in a 120x40 pane. No config file of the user's, no server from the
        # environment, and not nested in a tmux the tests may be running in.
        skip = {"COLUMNS", "LINES", "TMUX", "TMUX_PANE", "CHAT_SERVER_URL"}
        self.env = {k: v for k, v in os.environ.items() if k not in skip}
        self.env.update(
            TERM="xterm-256color",
            XDG_CONFIG_HOME=str(tmp_path / "config"),
            XDG_STATE_HOME=str(tmp_path / "state"),
        )

    def run(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=STEP,
            check=True,
            env=self.env,
        )
        return result.stdout

    def start(self, command: list[str]) -> None:
        # TERM again inside: tmux puts its own (tmux-256color) in the pane's environment.
        command = ["env", f"TERM={self.env['TERM']}", *command]
        self.run(
            "new-session", "-d", "-s", self.target, "-x", str(WIDTH), "-y", str(HEIGHT),
            shlex.join(command),
        )  # fmt: skip

    def lines(self) -> list[str]:
        return self.run("capture-pane", "-p", "-t", self.target).splitlines()

    def screen(self) -> str:
        return "\n".join(self.lines())

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", self.target, *(["-l"] if literal else []), *keys)

    def pane(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", self.target, fmt).strip()

    def exit_status(self) -> str | None:
        """The exit status once the pane's process is dead and reaped, else None."""
        dead, _, status = self.pane("#{pane_dead}|#{pane_dead_status}").partition("|")
        if dead == "1" and not status:
            # tmux marks the pane dead on EOF and records the status when it reaps the
            # process. Under load tmux 3.3 was seen to miss that SIGCHLD for good (the pane's
            # process stayed a zombie); a job of its own ending makes it reap every child.
            self.run("run-shell", "true")
        return status if dead == "1" and status else None

    def modes(self) -> dict[str, str]:
        """Terminal modes of the pane's program (tmux resets them once the pane is dead)."""
        return {flag: self.pane(f"#{{{flag}}}") for flag in MODE_FLAGS}

    def wait_for(self, condition: Callable[[str], object], what: str, timeout: float = STEP) -> str:
        """Poll the pane until ``condition(screen)`` holds; the failure shows the screen."""
        last = ""

        def check() -> object:
            nonlocal last
            last = self.screen()
            return condition(last)

        try:
            wait_until(check, timeout=timeout, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- pane ---\n{last}") from None
        return last

    def kill(self) -> None:
        where = subprocess.run(
            ["tmux", "-L", self.socket, "display-message", "-p", "#{socket_path}"],
            capture_output=True,
            text=True,
            timeout=10,
            env=self.env,
        )
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"],
            capture_output=True,
            timeout=10,
            env=self.env,
        )
        if where.returncode == 0 and where.stdout.strip():
            Path(where.stdout.strip()).unlink(missing_ok=True)  # tmux leaves it behind


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed, and CI must run the end-to-end test")
    session = Tmux(tmp_path)
    try:
        yield session
    finally:
        session.kill()


@contextmanager
def join_peer(server: RunningServer, room: str) -> Iterator[tuple[ClientConnection, str]]:
    """A second member of ``room`` (a plain WebSocket client) and its name."""
    with connect(server.chat_url(room), proxy=None, open_timeout=STEP) as ws:
        first = parse_frame(str(ws.recv(timeout=STEP)))
        assert first.kind is FrameKind.JOIN and first.name is not None, first
        yield ws, first.name


def recv_until(ws: ClientConnection, wanted: str, timeout: float = STEP) -> None:
    """Read frames until ``wanted`` arrives; fail after ``timeout`` showing what came."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] != wanted:
        try:
            seen.append(str(ws.recv(timeout=max(deadline - time.monotonic(), 0.01))))
        except TimeoutError:
            raise AssertionError(f"{wanted!r} never arrived; got {seen}") from None


# The "joined ROOM as NAME" line: the room and our name.
JOINED = re.compile(rf"joined (\S+) as ({NAME_PATTERN.pattern})")


@contextmanager
def two_terminals(directory: Path) -> Iterator[tuple[Tmux, Tmux]]:
    """Two private tmux servers (two users), each with a home of its own under ``directory``."""
    for name in ("a", "b"):
        (directory / name).mkdir()
    first, second = Tmux(directory / "a"), Tmux(directory / "b")
    try:
        yield first, second
    finally:
        first.kill()
        second.kill()


def status_row(screen: str) -> str:
    return screen.splitlines()[0]


def input_row(screen: str) -> str:
    """The text row of the input box (the second row from the bottom of the box)."""
    rows = screen.splitlines()
    return rows[-3]


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
