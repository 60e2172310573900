"""``chat-server start`` / ``stop`` / ``status`` / ``run`` end to end, as real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.sync.client import connect

from tests.redis_servers import requires_redis, start_redis
from tests.servers import RunningServer, free_port, wait_until

BIN = Path(sys.executable).parent
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Cli:
    """Runs the real command line with its own state directory and a port of its own."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir
        self.port = port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_SERVER_")}
        self.env["CHAT_SERVER_STATE_DIR"] = str(state_dir)

    def __call__(
        self, *args: str, script: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        program = [str(BIN / "chat-server")] if script else [sys.executable, "-m", "chat_server"]
        return subprocess.run(
            [*program, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def on_port(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self(command, "--port", str(self.port), *args)

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"server-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"server-{self.port}.log"

    def pid(self) -> int:
        return int(json.loads(self.pid_file.read_text())["pid"])

    def health(self) -> dict[str, Any] | None:
        """``/health`` of whatever listens on our port, or None if nothing answers."""
        url = f"http://127.0.0.1:{self.port}/health"
        try:
            with NO_PROXY.open(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            return None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def chat_server_processes(port: int) -> list[psutil.Process]:
    """Live processes whose command line runs a chat server on ``port``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if "chat_server" in argv and str(port) in argv and alive(process.pid):
            found.append(process)
    return found


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path / "state", free_port())
    yield runner
    # Never leave a background server behind, whatever the test did.
    for process in chat_server_processes(runner.port):
        process.kill()


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [str(BIN / "chat-server"), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("run", "start", "stop", "status"):
        assert command in result.stdout


def test_start_status_stop(cli: Cli) -> None:
    started = cli("start", "--port", str(cli.port), script=True)
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{cli.port}"
    pid = cli.pid()
    assert url in started.stdout and f"pid {pid}" in started.stdout
    assert str(cli.log_file) in started.stdout
    assert alive(pid)
    assert cli.health() is not None  # it answered before start returned

    again = cli.on_port("start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout and f"pid {pid}" in again.stdout
    assert [p.pid for p in chat_server_processes(cli.port)] == [pid]

    with connect(f"ws://127.0.0.1:{cli.port}/chat/lobby") as ws:
        assert str(ws.recv(timeout=5)).endswith(" joined the chat")
        status = cli.on_port("status")
        assert status.returncode == 0, status.stderr
        assert "running" in status.stdout and url in status.stdout
        assert f"pid {pid}" in status.stdout and str(cli.log_file) in status.stdout
        assert "1 room," in status.stdout and "1 connection" in status.stdout
        assert "up " in status.stdout

    stopped = cli.on_port("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert not alive(pid)
    assert not cli.pid_file.exists()
    assert cli.health() is None
    assert "Traceback" not in cli.log_file.read_text()

    status = cli.on_port("status")
    assert status.returncode == 3
    assert "not running" in status.stdout
    again = cli.on_port("stop")
    assert again.returncode == 0
    assert "not running" in again.stdout


def test_status_counts_rooms_and_connections(cli: Cli) -> None:
    assert cli.on_port("start").returncode == 0
    urls = [f"ws://127.0.0.1:{cli.port}/chat/{room}" for room in ("a", "b", "b")]
    with contextlib.ExitStack() as stack:
        for url in urls:
            ws = stack.enter_context(connect(url))
            ws.recv(timeout=5)  # its join notice: it is a member now
        status = cli.on_port("status")
        assert "2 rooms, 3 connections" in status.stdout

    def all_left() -> bool:
        health = cli.health()
        return health is not None and health["connections"] == 0 and health["rooms"] == 0

    wait_until(all_left, what="the clients to leave")
    assert "0 rooms, 0 connections" in cli.on_port("status").stdout
    assert cli.on_port("stop").returncode == 0


def test_concurrent_starts_run_one_server(cli: Cli) -> None:
    command = [sys.executable, "-m", "chat_server", "start", "--port", str(cli.port)]
    starts = [
        subprocess.Popen(command, env=cli.env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in starts]
    assert [p.returncode for p in starts] == [0, 0], outputs
    assert sum("already running" in out for out in outputs) == 1, outputs
    assert [p.pid for p in chat_server_processes(cli.port)] == [cli.pid()]
    assert cli.on_port("stop").returncode == 0


def test_start_passes_options_to_the_server(cli: Cli) -> None:
    started = cli.on_port("start", "--max-message-chars", "5", "--rate-limit", "0")
    assert started.returncode == 0, started.stderr
    with connect(f"ws://127.0.0.1:{cli.port}/chat/lobby") as ws:
        ws.recv(timeout=5)
        ws.send("too long")
        assert str(ws.recv(timeout=5)).startswith("error: message too long")
    assert cli.on_port("stop").returncode == 0


def test_stop_kills_a_server_that_does_not_exit(cli: Cli) -> None:
    assert cli.on_port("start").returncode == 0
    pid = cli.pid()
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM; SIGKILL still works
    stopped = cli.on_port("stop", "--wait", "1")
    assert stopped.returncode == 0, stopped.stderr
    assert "did not exit within 1 s; killing it" in stopped.stdout
    assert not alive(pid)
    assert not cli.pid_file.exists()


def test_start_recognises_a_chat_server_it_did_not_start(
    cli: Cli, server_factory: Callable[..., RunningServer]
) -> None:
    server = server_factory(port=cli.port)
    started = cli.on_port("start")
    assert started.returncode == 0, started.stderr
    assert "already running" in started.stdout and "not started by" in started.stdout
    assert not cli.pid_file.exists()

    status = cli.on_port("status")
    assert status.returncode == 0
    assert "0 rooms, 0 connections" in status.stdout

    stopped = cli.on_port("stop")
    assert stopped.returncode == 1
    assert "not stopping it" in stopped.stdout
    assert server.health() is not None


class NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


def test_start_refuses_a_port_taken_by_something_else(cli: Cli) -> None:
    other = ThreadingHTTPServer(("127.0.0.1", cli.port), NotFound)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        started = cli.on_port("start")
    finally:
        other.shutdown()
        other.server_close()
    assert started.returncode == 1
    assert f"port {cli.port} is in use by an HTTP server" in started.stderr
    assert not cli.pid_file.exists()
    assert chat_server_processes(cli.port) == []


def test_start_that_fails_shows_the_log(cli: Cli) -> None:
    # Bound but not listening: nothing answers, and the server's own bind fails.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", cli.port))
        started = cli.on_port("start")
    assert started.returncode == 1
    assert "exited with code" in started.stderr
    assert "address already in use" in started.stderr  # the tail of the server's log
    assert not cli.pid_file.exists()


def test_stale_pid_files_are_cleaned_up(cli: Cli) -> None:
    cli.state_dir.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = {"host": "127.0.0.1", "port": cli.port, "log": "x", "started": 0}
    cli.pid_file.write_text(json.dumps({**record, "pid": gone.pid}))
    status = cli.on_port("status")
    assert status.returncode == 3
    assert "stale pid file" in status.stdout and not cli.pid_file.exists()

    # A pid now used by an unrelated process: cleaned up, and that process is left alone.
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cli.pid_file.write_text(json.dumps({**record, "pid": unrelated.pid}))
        started = cli.on_port("start")
        assert started.returncode == 0, started.stderr
        assert "stale pid file" in started.stdout
        assert cli.pid() != unrelated.pid
        assert cli.on_port("stop").returncode == 0
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait()


def test_run_honours_chat_server_port(cli: Cli) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "chat_server", "run"],
        env={**cli.env, "CHAT_SERVER_PORT": str(cli.port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: process.poll() is not None or cli.health(), timeout=20, what="/health")
        assert cli.health() is not None
        # status finds it through the same variable
        status = cli("status", env={"CHAT_SERVER_PORT": str(cli.port)})
        assert status.returncode == 0 and f":{cli.port}" in status.stdout
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--port", "0"], {}, "port must be 1-65535"),
        (["start", "--port", "70000"], {}, "port must be 1-65535"),
        (["run", "--port", "eighty"], {}, "invalid int value: 'eighty'"),
        (["start", "--rate-burst", "0"], {}, "rate-burst must be at least 1"),
        (["start", "--rate-limit", "-1"], {}, "rate-limit must be 0 (off) or positive"),
        (["run", "--log-level", "loud"], {}, "invalid choice: 'loud'"),
        (["status"], {"CHAT_SERVER_PORT": "eighty"}, "CHAT_SERVER_PORT='eighty' is not a number"),
        (["frobnicate"], {}, "invalid choice: 'frobnicate'"),
    ],
)
def test_invalid_options_are_a_clear_error(
    cli: Cli, args: list[str], env: dict[str, str], message: str
) -> None:
    result = cli(*args, env=env)
    assert result.returncode == 2
    assert "error: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not cli.state_dir.exists()  # nothing was started


@requires_redis
def test_start_and_status_with_redis_down_say_so_and_it_serves_once_redis_is_up(
    cli: Cli,
) -> None:
    redis_port = free_port()  # nothing listens there yet
    cli.env.update(CHAT_SERVER_BROKER_TIMEOUT="1", CHAT_SERVER_NODE_TTL="3")
    url = f"redis://127.0.0.1:{redis_port}/0"
    started = cli.on_port("start", "--broker-url", url)
    assert started.returncode == 0, started.stdout + started.stderr
    status = cli.on_port("status")
    assert status.returncode == 0
    assert "broker unavailable: cannot reach redis" in status.stdout
    redis = start_redis(port=redis_port)
    try:
        wait_until(lambda: (cli.health() or {}).get("status") == "ok", what="it to serve")
        assert "broker unavailable" not in cli.on_port("status").stdout
        assert cli.on_port("stop").returncode == 0
    finally:
        redis.stop()
