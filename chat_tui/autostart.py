"""Start a local chat server when the configured loopback server does not answer.

Only loopback servers are ever started: a remote URL that does not answer is the user's
(or the network's) business, and the client just keeps retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from chat_protocol import hosts
from chat_protocol.local import Outcome, State

START_TIMEOUT = 30.0  # `chat-server start` itself waits up to 15 s for /health
REACHABLE_TIMEOUT = 1.0


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    return host, port


def is_local(url: str) -> bool:
    """Whether the server of ``url`` is on this machine (a loopback address); never resolves
    DNS."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return hosts.is_loopback(host)


async def server_reachable(url: str, timeout: float = REACHABLE_TIMEOUT) -> bool:
    """Whether something accepts TCP connections at the server's address.

    A TCP connect, not ``GET /health``: the protocol does not require the HTTP endpoints,
    and a third-party server without them must count as running.
    """
    try:
        host, port = _host_port(url)
    except ValueError:
        return False
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass(frozen=True, slots=True)
class StartResult:
    """What ``chat-server start`` did: ``message`` is for the user."""

    message: str
    started: bool = False  # a server was started now (not found running, not failed)
    failed: bool = False


def start_local_server(url: str) -> StartResult:
    """Run ``chat-server start`` for the port of ``url``; what happened, with a message.

    Blocks until the server answers (or the start fails): call it from a thread, e.g.
    ``await asyncio.to_thread(start_local_server, url)``. A non-loopback URL is never
    started; the message says so.
    """
    if not is_local(url):
        return StartResult(
            f"not starting a server for {url}: only a local (loopback) server is started",
            failed=True,
        )
    host, port = _host_port(url)
    if host.lower().rstrip(".") == "localhost":
        host = "127.0.0.1"
    # The module, not the console script: this works from a virtualenv that is not on PATH.
    command = [
        *(sys.executable, "-m", "chat_server", "start", "--json"),
        *("--host", host, "--port", str(port)),
    ]
    # "-m" puts the working directory first on sys.path: run from a directory holding another
    # chat_server (a checkout), it would start that code. PYTHONSAFEPATH (Python 3.11) keeps it
    # off, also for the server process that `start` spawns (it inherits the environment).
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return _failed(port, f"no answer in {START_TIMEOUT:g} s")
    except OSError as exc:
        return _failed(port, str(exc))
    try:
        outcome = Outcome.read(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        # Not even an answer (the command itself failed): its first line says why.
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        return _failed(port, lines[0] if lines else f"exit code {result.returncode}")
    if outcome.state is State.RUNNING:
        return StartResult(f"a local server is already running on port {port}")
    if outcome.state is not State.STARTED:
        # The first line says what went wrong; a log tail may follow it.
        lines = (result.stderr.strip() or outcome.message).splitlines()
        reason = lines[0].removeprefix("error: ") if lines else outcome.state.value
        return _failed(port, reason)
    return StartResult(
        f"started a local chat server on port {port} (chat-server stop --port {port} stops it)",
        started=True,
    )


def _failed(port: int, reason: str) -> StartResult:
    return StartResult(f"could not start a local server on port {port}: {reason}", failed=True)
