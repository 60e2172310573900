"""Plain WebSocket members beside a real chat-tui (in tmux or under a pty): what the program
sends, as another member of the room receives it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.sync.client import ClientConnection, connect

from chat_protocol.frames import FrameKind
from chat_protocol.v1 import parse_frame
from chat_testing.servers import RunningServer
from chat_testing.tmux import STEP


@contextmanager
def join_peer(server: RunningServer, room: str) -> Iterator[tuple[ClientConnection, str]]:
    """A member of ``room`` (the text protocol) and its name."""
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
