"""Starting a local server when the configured loopback server does not answer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat_protocol.frames import FrameKind
from chat_protocol.v1 import parse_frame
from chat_testing.ports import free_port
from chat_testing.servers import RunningServer
from chat_tui.autostart import is_local, server_reachable, start_local_server


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ws://127.0.0.1:8000", True),
        ("ws://127.1.2.3:8000", True),
        ("ws://localhost:8000", True),
        ("wss://LOCALHOST", True),
        ("ws://[::1]:8000", True),
        ("ws://[::ffff:127.0.0.1]:8000", True),
        ("ws://0.0.0.0:8000", False),
        ("ws://10.0.0.1:8000", False),
        ("ws://192.168.1.10:8000", False),
        ("ws://[::]:8000", False),
        ("ws://[2001:db8::1]:8000", False),
        ("ws://example.org:8000", False),
        ("ws://localhost.example.org", False),
        ("ws://127.0.0.1.example.org", False),
        ("not a url", False),
    ],
)
def test_is_loopback(url: str, expected: bool) -> None:
    assert is_local(url) is expected


async def test_reachable_when_a_chat_server_listens(shared_server: RunningServer) -> None:
    assert await server_reachable(shared_server.ws_url) is True


async def test_unreachable_when_nothing_listens() -> None:
    assert await server_reachable(f"ws://127.0.0.1:{free_port()}") is False


async def test_reachable_means_tcp_not_health() -> None:
    """A third-party server without ``/health`` still counts as running."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert await server_reachable(f"ws://127.0.0.1:{port}") is True


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep ``chat-server start``'s pid and log files out of the user's state directory."""
    monkeypatch.setenv("CHAT_SERVER_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def port(state_dir: Path) -> Iterator[int]:
    """A free port; whatever `chat-server start` left on it is stopped afterwards."""
    port = free_port()
    yield port
    subprocess.run(
        [sys.executable, "-m", "chat_server", "stop", "--port", str(port)],
        capture_output=True,
        timeout=30,
        check=False,
        # Not the chat_server of the working directory (a test may be in a checkout's).
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )


async def test_autostart_starts_a_server_that_answers(port: int, state_dir: Path) -> None:
    url = f"ws://127.0.0.1:{port}"
    assert await server_reachable(url) is False

    result = await asyncio.to_thread(start_local_server, url)
    assert result.started and not result.failed
    assert result.message.startswith(f"started a local chat server on port {port}")
    assert await server_reachable(url) is True
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        assert json.load(response)["status"] == "ok"
    assert (state_dir / f"server-{port}.pid").exists()

    from websockets.asyncio.client import connect

    async with connect(f"{url}/chat/autostart") as ws:
        join = parse_frame(str(await ws.recv()))
        assert join.kind is FrameKind.JOIN

    again = await asyncio.to_thread(start_local_server, url)
    assert again.message == f"a local server is already running on port {port}"
    assert not again.started and not again.failed

    stopped = subprocess.run(
        [sys.executable, "-m", "chat_server", "stop", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert await server_reachable(url) is False


async def test_the_installed_server_starts_whatever_the_working_directory(
    port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chat-tui run from a directory holding another chat_server (a checkout) starts ours."""
    impostor = tmp_path / "checkout" / "chat_server"
    impostor.mkdir(parents=True)
    (impostor / "__init__.py").write_text("")
    (impostor / "__main__.py").write_text("raise SystemExit('the chat_server of the cwd')\n")
    monkeypatch.chdir(impostor.parent)
    result = await asyncio.to_thread(start_local_server, f"ws://127.0.0.1:{port}")
    assert result.started, result.message
    assert await server_reachable(f"ws://127.0.0.1:{port}") is True


async def test_localhost_is_started_on_ipv4_loopback(port: int) -> None:
    result = await asyncio.to_thread(start_local_server, f"ws://localhost:{port}")
    assert result.started
    assert await server_reachable(f"ws://127.0.0.1:{port}") is True


async def test_a_port_taken_by_something_else_is_reported(port: int, state_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = await asyncio.to_thread(start_local_server, f"ws://127.0.0.1:{port}")
    assert result.failed and not result.started
    assert result.message.startswith(f"could not start a local server on port {port}")
    assert f"port {port} is in use" in result.message
    assert not (state_dir / f"server-{port}.pid").exists()


def test_a_remote_server_is_never_started(state_dir: Path) -> None:
    result = start_local_server("ws://192.0.2.10:8000")
    assert result.failed
    assert "only a local (loopback) server is started" in result.message
    assert list(state_dir.iterdir()) == []  # `chat-server start` never ran
