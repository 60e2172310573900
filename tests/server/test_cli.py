"""``chat-server start`` / ``stop`` / ``status`` / ``run`` end to end, as real subprocesses."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from websockets.sync.client import connect

from chat_testing.marks import requires_redis
from chat_testing.ports import free_port
from chat_testing.redis_servers import start_redis
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.clirunner import BIN, Cli, alive, chat_server_processes

pytestmark = pytest.mark.memory_only


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [str(BIN / "chat-server"), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("run", "start", "stop", "status"):
        assert command in result.stdout


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chat-server {importlib.metadata.version('terminal-chat')}"


def test_start_status_stop(cli: Cli) -> None:
    started = cli("start", "--port", str(cli.port), script=True)
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{cli.port}"
    pid = cli.pid()
    # What chat-tui --server takes, and where the health check answers.
    assert f"chat-server is running at ws://127.0.0.1:{cli.port} (pid {pid})" in started.stdout
    assert f"health: {url}/health" in started.stdout
    assert str(cli.log_file) in started.stdout
    assert alive(pid)
    assert cli.health() is not None  # it answered before start returned

    again = cli.on_port("start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout and f"pid {pid}" in again.stdout
    # The URL chat-tui --server takes, as a fresh start says it.
    assert f"running at ws://127.0.0.1:{cli.port} (pid {pid})" in again.stdout
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


def test_options_before_the_command_count_as_after_it(cli: Cli) -> None:
    """``chat-server --port P start`` (as --help lists the options, before the command):
    they were silently dropped, and the server started on 8000 (stop then stopped that)."""
    port = ["--port", str(cli.port)]
    started = cli(*port, "start", "--max-message-chars", "5", "--rate-limit", "0")
    assert started.returncode == 0, started.stderr
    assert f"ws://127.0.0.1:{cli.port}" in started.stdout, started.stdout
    with connect(f"ws://127.0.0.1:{cli.port}/chat/lobby") as ws:
        ws.recv(timeout=5)
        ws.send("too long")
        assert str(ws.recv(timeout=5)).startswith("error: message too long")
    assert f"running at ws://127.0.0.1:{cli.port}" in cli(*port, "status").stdout
    assert cli(*port, "stop").returncode == 0
    assert not cli.pid_file.exists()


def test_stop_kills_a_server_that_does_not_exit(cli: Cli) -> None:
    assert cli.on_port("start").returncode == 0
    pid = cli.pid()
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM; SIGKILL still works
    stopped = cli.on_port("stop", "--wait", "1")
    assert stopped.returncode == 0, stopped.stderr
    assert "did not exit within 1 s; killing it" in stopped.stdout
    assert not alive(pid)
    assert not cli.pid_file.exists()


def test_stop_keeps_the_pid_file_of_a_server_started_while_it_waited(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chat-tui's autostart starts a server the moment the old one's port comes free, which may
    # be while `stop` still waits for the old one to exit. Removing the pid file then (it names
    # the newcomer by now) left that server running, unseen by `stop` and `status`.
    from chat_server.ops import daemon
    from chat_server.ops.settings import Settings

    assert cli.on_port("start").returncode == 0
    old = cli.pid()
    newer: list[int] = []
    wait_for_exit = daemon._wait_for_exit

    def exit_then_a_start_meanwhile(pid: int, wait: float) -> bool:
        gone = wait_for_exit(pid, wait)
        started = cli.on_port("start")  # between the old server's exit and stop's clean-up
        assert started.returncode == 0, started.stderr
        newer.append(cli.pid())
        return gone

    monkeypatch.setenv("CHAT_SERVER_STATE_DIR", str(cli.state_dir))
    monkeypatch.setattr(daemon, "_wait_for_exit", exit_then_a_start_meanwhile)
    assert daemon.stop(Settings(port=cli.port)) == 0
    monkeypatch.undo()
    assert not alive(old) and alive(newer[0])
    assert cli.pid_file.exists() and cli.pid() == newer[0]
    assert cli.on_port("status").returncode == 0
    assert cli.on_port("stop").returncode == 0
    assert not alive(newer[0])


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

    with connect(server.chat_url("kept")) as ws:
        name = str(ws.recv(timeout=5)).removesuffix(" joined the chat")
        stopped = cli.on_port("stop")
        assert stopped.returncode == 1
        assert "not stopping it" in stopped.stdout
        # Its clients never noticed: still connected, still chatting.
        ws.send("still here")
        assert ws.recv(timeout=5) == f"{name} :: still here"
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
    assert list(cli.state_dir.glob("*.lock")) == []  # nothing left behind


def test_start_that_fails_shows_the_log(cli: Cli) -> None:
    # Bound but not listening: nothing answers, and the server's own bind fails.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", cli.port))
        started = cli.on_port("start")
    assert started.returncode == 1
    assert "exited with code" in started.stderr
    assert "address already in use" in started.stderr  # the tail of the server's log
    assert not cli.pid_file.exists()
    assert list(cli.state_dir.glob("*.lock")) == []


def test_stale_pid_files_are_cleaned_up(cli: Cli) -> None:
    cli.state_dir.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = {"host": "127.0.0.1", "port": cli.port, "log": "x", "started": 0}
    cli.pid_file.write_text(json.dumps({**record, "pid": gone.pid}))
    status = cli.on_port("status")
    assert status.returncode == 3
    assert f"stale pid file {cli.pid_file} (process {gone.pid} no longer exists)" in status.stdout
    assert "not running" in status.stdout and not cli.pid_file.exists()

    # Exited but not reaped yet (a zombie, as a killed server is until its parent waits): gone.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_until(
            lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, what="a zombie"
        )
        cli.pid_file.write_text(json.dumps({**record, "pid": zombie.pid}))
        status = cli.on_port("status")
        assert status.returncode == 3
        assert f"(process {zombie.pid} no longer exists)" in status.stdout
    finally:
        zombie.wait()

    # A pid now used by an unrelated process: cleaned up, and that process is left alone.
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cli.pid_file.write_text(json.dumps({**record, "pid": unrelated.pid}))
        started = cli.on_port("start")
        assert started.returncode == 0, started.stderr
        assert f"(pid {unrelated.pid} now belongs to another process: " in started.stdout
        assert cli.pid() != unrelated.pid
        assert cli.on_port("stop").returncode == 0
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_killed_server_is_not_running(cli: Cli) -> None:
    """After SIGKILL the pid file is stale: each command says the process is gone, and moves on."""
    assert cli.on_port("start").returncode == 0
    pid = cli.pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), what="the killed server to go")

    status = cli.on_port("status")
    assert status.returncode == 3
    assert status.stdout.splitlines() == [
        f"removing stale pid file {cli.pid_file} (process {pid} no longer exists)",
        f"chat-server is not running on port {cli.port}",
    ]
    assert not cli.pid_file.exists()

    started = cli.on_port("start")
    assert started.returncode == 0, started.stderr
    assert "stale" not in started.stdout  # status already removed it
    pid = cli.pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), what="the killed server to go")
    stopped = cli.on_port("stop")
    assert stopped.returncode == 0
    assert stopped.stdout.splitlines() == [
        f"removing stale pid file {cli.pid_file} (process {pid} no longer exists)",
        f"chat-server is not running on port {cli.port}",
    ]


def test_a_pid_reused_by_another_chat_server_is_not_ours(
    cli: Cli, server_factory: Callable[..., RunningServer]
) -> None:
    """A pid file whose pid now belongs to another chat server (on another port) is stale too:
    ``stop`` must not stop that one, and ``status`` must not report it as ours."""
    assert cli.on_port("start").returncode == 0
    pid = cli.pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), what="the killed server to go")
    record = json.loads(cli.pid_file.read_text())
    other = server_factory()  # a chat server started later, as if it had been given that pid
    reused = json.dumps({**record, "pid": other.process.pid})

    cli.pid_file.write_text(reused)
    stopped = cli.on_port("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"(pid {other.process.pid} now belongs to another process: " in stopped.stdout
    assert f"chat-server is not running on port {cli.port}" in stopped.stdout
    assert other.process.poll() is None and other.health() is not None

    cli.pid_file.write_text(reused)
    status = cli.on_port("status")
    assert status.returncode == 3
    assert f"(pid {other.process.pid} now belongs to another process: " in status.stdout
    assert not cli.pid_file.exists()


def test_status_4_and_start_1_when_the_server_does_not_answer(cli: Cli) -> None:
    assert cli.on_port("start").returncode == 0
    pid = cli.pid()
    os.kill(pid, signal.SIGSTOP)  # alive, holds its port, answers nothing
    try:
        status = cli.on_port("status")
        assert status.returncode == 4
        url = f"http://127.0.0.1:{cli.port}"
        assert f"chat-server (pid {pid}) is running but does not answer at {url}/health" in (
            status.stdout
        )
        assert "stale" not in status.stdout and cli.pid_file.exists()

        started = cli.on_port("start", "--wait", "1")
        assert started.returncode == 1
        assert f"already running on port {cli.port} (pid {pid}) but does not answer" in (
            started.stdout
        )
        assert [p.pid for p in chat_server_processes(cli.port)] == [pid]  # none started
    finally:
        os.kill(pid, signal.SIGCONT)
    status = cli.on_port("status")
    assert status.returncode == 0, status.stdout
    assert cli.on_port("stop").returncode == 0


HOLD_BEFORE_START = """
import sys, time
if sys.orig_argv[1:4] == ["-m", "chat_server", "run"]:
    for i in range(1, 41):
        print(f"slow start, line {i}", flush=True)
    time.sleep(60)
"""


def test_start_wait_times_out(cli: Cli, tmp_path: Path) -> None:
    """A server that does not answer within ``--wait`` is stopped; start prints the log's end.

    The child is held before it starts by a ``sitecustomize`` on its PYTHONPATH (a stand-in for
    a server that is slow to come up, e.g. on a loaded machine), after writing 40 log lines.
    """
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(HOLD_BEFORE_START)
    path = os.pathsep.join(filter(None, [str(hold), cli.env.get("PYTHONPATH")]))
    began = time.monotonic()
    started = cli.on_port("start", "--wait", "2", env={"PYTHONPATH": path})
    assert time.monotonic() - began >= 2
    assert started.returncode == 1
    url = f"http://127.0.0.1:{cli.port}"
    lines = started.stderr.splitlines()
    assert lines[0] == (
        f"error: chat-server did not answer at {url}/health within 2 s and was stopped; "
        f"last lines of {cli.log_file}:"
    )
    log = cli.log_file.read_text().splitlines()
    assert log == [f"slow start, line {i}" for i in range(1, 41)]
    assert lines[1:] == log[-30:]  # the end of the log, not all of it
    assert chat_server_processes(cli.port) == []
    assert not cli.pid_file.exists()
    assert cli.on_port("status").returncode == 3


def test_the_previous_run_log_is_kept_as_log_1(cli: Cli) -> None:
    pids = []
    for _ in range(3):
        assert cli.on_port("start").returncode == 0
        pids.append(cli.pid())
        assert cli.on_port("stop").returncode == 0
    log_1 = cli.log_file.with_suffix(".log.1")
    assert f"Started server process [{pids[2]}]" in cli.log_file.read_text()
    assert f"Started server process [{pids[1]}]" in log_1.read_text()
    # One run back only: the first run's log is gone.
    assert sorted(p.name for p in cli.state_dir.glob("*.log*")) == [
        cli.log_file.name,
        log_1.name,
    ]
    assert not any(str(pids[0]) in p.read_text() for p in (cli.log_file, log_1))


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


def test_start_runs_the_installed_server_whatever_the_working_directory(
    cli: Cli, tmp_path: Path
) -> None:
    """`chat-server start` run inside a checkout of another chat_server starts this one."""
    impostor = tmp_path / "checkout" / "chat_server"
    impostor.mkdir(parents=True)
    (impostor / "__init__.py").write_text("")
    (impostor / "__main__.py").write_text("raise SystemExit('the chat_server of the cwd')\n")
    started = cli("start", "--port", str(cli.port), script=True, cwd=impostor.parent)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "the chat_server of the cwd" not in cli.log_file.read_text()
    assert (cli.health() or {}).get("status") == "ok"
    assert cli.on_port("stop").returncode == 0


def test_start_says_plainly_when_the_broker_cannot_be_reached(cli: Cli) -> None:
    port_without_redis = free_port()
    started = cli.on_port("start", "--broker-url", f"redis://127.0.0.1:{port_without_redis}/0")
    assert started.returncode == 0, started.stderr
    assert "but it cannot reach its broker (" in started.stdout
    assert "every connection is refused with 1013 until it can" in started.stdout
    assert cli.on_port("stop").returncode == 0


def test_status_read_by_a_reader_that_stops_has_no_traceback(cli: Cli) -> None:
    """``chat-server status | head -1`` printed a BrokenPipeError traceback (4 runs in 15 in a
    new-user run): the reader had gone before the rest was written."""
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "chat_server", "status", "--port", str(cli.port)],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before anything is read
        said = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.wait(60) in (141, 4), said  # 4: nothing runs there, as status says
        assert "Traceback" not in said, said
