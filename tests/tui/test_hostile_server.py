"""The real chat-tui, in tmux, against a hostile or broken server written here.

Whatever the server sends, the client must stay alive, responsive (a key typed shows in its
input box within 250 ms) and bounded in memory, and say what went wrong. Each test reproduces
one probe of the red-team issue that took the client down before.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from chat_protocol import v2
from chat_testing.ports import free_port
from chat_testing.tmux import Tmux
from chat_testing.waits import wait_until
from tests.tui.tmux_screen import CHAT_TUI, STARTUP

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

CLIENT_ENV = "CHAT_TEST_CLIENT"
ME = "user_victim01"
PEER = "user_badguy66"
ROOM = "hostile"
ECHO_LIMIT = 0.25  # seconds from a key typed to the key on screen
NOW = "2026-12-06T12:00:00.000Z"


def welcome(history: int = 0, offset: int = 0) -> str:
    return v2.welcome(ROOM, ME, "e1", offset, f"{ME}.{'x' * 22}", None, False, history)


def message(text: str, offset: int, time_text: str = NOW, name: str = PEER) -> str:
    return json.dumps(
        {"type": "message", "name": name, "text": text, "offset": offset, "time": time_text}
    )


Script = Callable[[ServerConnection, int], None]  # (the connection, which one: 1, 2, ...)


class HostileServer:
    """A WebSocket server that plays ``script`` on every connection (chat.v2 when offered)
    and answers HTTP requests with ``http`` (path -> (status, body)), in a thread."""

    def __init__(self, script: Script, http: dict[str, tuple[int, bytes]] | None = None) -> None:
        self.port = free_port()
        self.script = script
        self.http = http or {}
        self.connections = 0
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def _handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        try:
            self.script(connection, self.connections)
        except Exception:  # the client went away: nothing to do
            return

    def _answer(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        status, body = self.http.get(request.path, (404, b'{"detail":"Not Found"}'))
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return Response(status, "OK" if status == 200 else "Not Found", headers, body)

    def __enter__(self) -> HostileServer:
        self._server = serve(
            self._handle,
            "127.0.0.1",
            self.port,
            subprotocols=[v2.SUBPROTOCOL],
            process_request=self._answer,
            max_size=None,
            compression=None,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(tmp_path)
    try:
        yield session
    finally:
        session.kill()


def start_chat_tui(tmux: Tmux, server: HostileServer, tmp_path: Path, **config: Any) -> int:
    """chat-tui against ``server`` in the pane; returns its pid once it shows a screen."""
    (tmp_path / "config" / "chat-tui").mkdir(parents=True, exist_ok=True)
    lines = [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    (tmp_path / "config" / "chat-tui" / "config.toml").write_text("\n".join(lines) + "\n")
    # CHAT_TEST_CLIENT: another chat-tui to try (bench/faults.py measures main "before").
    program = os.environ.get(CLIENT_ENV, str(CHAT_TUI))
    tmux.start([program, "--server", server.url, "--no-autostart", ROOM])
    tmux.wait_for(lambda screen: f"#{ROOM}" in screen, "the screen", timeout=STARTUP)
    return int(tmux.pane("#{pane_pid}"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def echo_seconds(tmux: Tmux, samples: int = 5) -> float:
    """The median time from a key typed to that key shown in the input box."""
    times = []
    for n in range(samples):
        marker = f"k{uuid.uuid4().hex[:6]}{n}"
        began = time.monotonic()
        tmux.keys(marker, literal=True)
        wait_until(lambda m=marker: m in tmux.screen(), timeout=10, interval=0.005, what=marker)
        times.append(time.monotonic() - began)
        tmux.keys("C-u")  # clear the input line
        wait_until(lambda m=marker: m not in tmux.screen(), timeout=10, interval=0.005)
    return statistics.median(times)


def assert_alive_and_responsive(tmux: Tmux) -> None:
    assert tmux.exit_status() is None, tmux.screen()
    took = echo_seconds(tmux)
    assert took < ECHO_LIMIT, f"keys took {took * 1000:.0f} ms to show"


def hold(connection: ServerConnection) -> None:
    """Keep the connection open until the client closes it."""
    for _ in connection:
        pass


# --- the probes --------------------------------------------------------------------------------


def test_frames_that_cannot_be_read_are_notices_and_the_room_lives_on(
    terminal: Tmux, tmp_path: Path
) -> None:
    """offset: Infinity, an ack with an infinite offset, 5,000 levels of nesting: each killed
    the room's task, while the status still said "connected"."""

    def script(connection: ServerConnection, number: int) -> None:
        connection.send(welcome())
        connection.recv()  # the client's first message: the server answers with poison
        connection.send(message("inf", 0).replace('"offset": 0', '"offset": Infinity'))
        connection.send(
            json.dumps({"type": "ack", "nonce": "n", "time": NOW})[:-1] + ', "offset": 1e999}'
        )
        connection.send('{"a":' + "[" * 5000 + "]" * 5000 + "}")
        connection.send(message("still talking", 1))
        hold(connection)

    with HostileServer(script) as server:
        start_chat_tui(terminal, server, tmp_path)
        terminal.keys("hello", "Enter")
        terminal.wait_for(lambda s: "still talking" in s, "the room living on")
        screen = terminal.screen()
        # One line for the three in a row, counted on (20,000 were 20,000 lines).
        assert screen.count("the server sent a frame that cannot be read") == 1, screen
        assert "(and 2 more since)" in screen, screen
        assert "connected" in screen.splitlines()[0]
        assert_alive_and_responsive(terminal)


def test_times_out_of_range_are_clamped(terminal: Tmux, tmp_path: Path) -> None:
    """ "0001-01-01T00:00:00+14:00" (and year 9999 east of UTC) made chat-tui exit with an
    OverflowError and print a traceback with room state in its locals."""

    def script(connection: ServerConnection, number: int) -> None:
        connection.send(welcome())
        connection.send(message("from the year one", 1, "0001-01-01T00:00:00+14:00"))
        connection.send(message("from the year 9999", 2, "9999-12-31T23:59:59-12:00"))
        hold(connection)

    with HostileServer(script) as server:
        start_chat_tui(terminal, server, tmp_path)
        terminal.wait_for(lambda s: "from the year 9999" in s, "both messages")
        assert "from the year one" in terminal.screen()
        assert_alive_and_responsive(terminal)


def test_a_huge_frame_is_refused_and_the_screen_stays_responsive(
    terminal: Tmux, tmp_path: Path
) -> None:
    """One 10 MB text frame froze the screen for over 100 s at 100 % CPU; a 1 MB word for
    2.4 s."""

    def script(connection: ServerConnection, number: int) -> None:
        connection.send(welcome())
        if number == 1:
            connection.send(message("w" * 200_000, 1))  # within the bound: shown, cut
            connection.send(message("x" * 10_000_000, 2))
        hold(connection)

    with HostileServer(script) as server:
        pid = start_chat_tui(terminal, server, tmp_path)
        before = rss_mib(pid)
        terminal.wait_for(lambda s: "sent a message over" in s, "the refusal")
        terminal.wait_for(lambda s: "connected" in s.splitlines()[0], "connected again")
        assert_alive_and_responsive(terminal)
        assert rss_mib(pid) - before < 60


def test_a_member_list_too_long_to_read_is_not_read(terminal: Tmux, tmp_path: Path) -> None:
    """GET /rooms/{room} answering 200,000 names froze the client about 30 s, at 970 MB."""
    names = json.dumps({"room": ROOM, "members": [f"user_{n:06d}xx" for n in range(200_000)]})

    def script(connection: ServerConnection, number: int) -> None:
        connection.send(welcome())
        hold(connection)

    http = {f"/rooms/{ROOM}": (200, names.encode())}
    with HostileServer(script, http) as server:
        pid = start_chat_tui(terminal, server, tmp_path)
        terminal.keys("/who", "Enter")
        terminal.wait_for(lambda s: "answered more than" in s, "the refusal")
        assert_alive_and_responsive(terminal)
        assert rss_mib(pid) < 200


def test_an_announced_backlog_is_taken_only_as_far_as_asked(terminal: Tmux, tmp_path: Path) -> None:
    """A welcome announcing 10**9 history messages, then 200,000 of 1 KB: all buffered,
    nothing shown, memory growing with whatever arrived."""

    def script(connection: ServerConnection, number: int) -> None:
        connection.send(welcome(history=10**9, offset=10**9))
        for n in range(1, 20_001):
            connection.send(message(f"backlog {n} " + "b" * 1000, n))
        hold(connection)

    with HostileServer(script) as server:
        pid = start_chat_tui(terminal, server, tmp_path, scrollback=1000)
        terminal.wait_for(lambda s: "backlog 20000" in s, "the last message shown")
        assert_alive_and_responsive(terminal)
        assert rss_mib(pid) < 200


def test_a_storm_of_joins_and_leaves_keeps_what_was_said(terminal: Tmux, tmp_path: Path) -> None:
    """94,000 joins and leaves in a minute: 47 s of CPU, memory growing with every name, and
    a message said before the storm pushed out of the scrollback."""
    storm = 10_000

    def script(connection: ServerConnection, number: int) -> None:
        connection.send(welcome())
        connection.send(message("remember this", 1))
        for n in range(storm):
            name = f"user_churn{n % 5000:04d}"
            connection.send(v2.presence(True, name, 0.0))
            connection.send(v2.presence(False, name, 0.0))
        connection.send(message("after the storm", 2))
        hold(connection)

    with HostileServer(script) as server:
        pid = start_chat_tui(terminal, server, tmp_path, scrollback=1000)
        terminal.wait_for(lambda s: "after the storm" in s, "the storm over", timeout=120)
        screen = terminal.screen()
        assert "remember this" in screen  # a handful of lines for the storm, not 20,000
        # Churners who never spoke: their lines are hidden (the smart join filter).
        assert "more joined" not in screen
        assert_alive_and_responsive(terminal)
        assert rss_mib(pid) < 200


def test_a_flood_of_joins_keeps_the_members_panel_and_the_keys_quick(
    terminal: Tmux, tmp_path: Path
) -> None:
    """4,000 members joining over two seconds, the members panel shown: the panel drew
    every name at each change (a Static of them all), and keys waited seconds for it."""
    joined_total = 4_000

    def script(connection: ServerConnection, number: int) -> None:
        connection.send(welcome())
        for batch in range(joined_total // 200):
            for n in range(200):
                connection.send(v2.presence(True, f"user_flood{batch * 200 + n:05d}", 0.0))
            time.sleep(0.1)
        connection.send(message("joins over", 1))
        hold(connection)

    with HostileServer(script) as server:
        start_chat_tui(terminal, server, tmp_path)  # 120 columns: the panel is shown
        terminal.wait_for(lambda s: "members (" in s, "the panel")
        took = []
        while "joins over" not in terminal.screen():
            took.append(echo_seconds(terminal, samples=3))
        assert_alive_and_responsive(terminal)
        assert max(took, default=0) < ECHO_LIMIT * 2, took  # during the flood too
        # Everyone seen (no list from this server): the flood, its sender and us.
        assert f"seen here ({joined_total + 2})" in terminal.screen()
