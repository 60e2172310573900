"""Real ``chat-server`` processes on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chat_testing.ports import free_port
from chat_testing.waits import wait_until
from chat_testing.zygote import ForkedServer, zygote


@dataclass
class RunningServer:
    port: int
    process: subprocess.Popen[bytes] | ForkedServer
    log_path: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def chat_url(self, room: str) -> str:
        return f"{self.ws_url}/chat/{room}"

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.http_url + path, timeout=5) as response:
            return json.load(response)

    def health(self) -> dict[str, Any] | None:
        try:
            return self.get_json("/health")
        except OSError:
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def restart(self) -> RunningServer:
        """Stop this server and start a fresh one on the same port with the same options."""
        self.stop()
        return start_server(port=self.port, **self.options)


# Another checkout whose server the tests run instead of this one's (bench/faults.py sets it
# to measure main "before"): its directory goes first on the server's PYTHONPATH.
SERVER_ROOT_ENV = "CHAT_TEST_SERVER_ROOT"
# Every test client comes from loopback: a server's shares per client address are off unless
# a test asks for them (as options, which win over these), so that tests sharing a server do
# not count against each other. Variables, not flags: another checkout's server ignores them.
ADDRESS_SHARES_OFF = {
    "CHAT_SERVER_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "CHAT_SERVER_MAX_HANDSHAKES_PER_ADDRESS": "0",
    "CHAT_SERVER_MAX_MESSAGES_PER_ADDRESS": "0",
    "CHAT_SERVER_MAX_NEW_ROOMS_PER_ADDRESS": "0",
}
# Test servers keep nothing on disk unless a test asks (an option wins over this): the default,
# sqlite:// in the state directory, is tested on files of the tests' own (test_embedded.py).
TEST_BROKER = {"CHAT_SERVER_BROKER_URL": "memory://"}
# "0": start every server as a process of its own (python -m chat_server), not forked from a
# zygote (chat_testing/zygote.py) that imported it once.
FORK_ENV = "CHAT_TEST_FORK_SERVERS"


def start_server(
    port: int | None = None,
    plain_uvicorn: bool = False,
    env: dict[str, str] | None = None,
    wait: bool = True,
    open_files: int | None = None,
    **options: Any,
) -> RunningServer:
    """``python -m chat_server run`` on a free port; returns once ``/health`` answers.

    With ``plain_uvicorn``, ``uvicorn chat_server:app`` instead, configured through
    ``CHAT_SERVER_*`` variables as a user of plain uvicorn would. ``env`` adds variables
    (settings that exist only as ``CHAT_SERVER_*``); ``wait=False`` returns at once.
    ``open_files`` starts the server with that soft limit on open files (the hard limit stays).
    """
    port = port or free_port()
    extra_env = dict(env or {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_SERVER_")}
    env.update(ADDRESS_SHARES_OFF)
    env.update(TEST_BROKER)
    env.update(extra_env)
    root = os.environ.get(SERVER_ROOT_ENV)
    if root:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if plain_uvicorn:
        args = [sys.executable, "-m", "uvicorn", "chat_server:app", "--port", str(port)]
        for key, value in options.items():
            items = value if isinstance(value, list | tuple) else [value]
            env["CHAT_SERVER_" + key.upper()] = ",".join(map(str, items))
    else:
        args = [sys.executable, "-m", "chat_server", "run", "--port", str(port)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):  # --metrics / --no-metrics
                args.append(flag if value else "--no-" + key.replace("_", "-"))
                continue
            for item in value if isinstance(value, list | tuple) else [value]:
                args += [flag, str(item)]
    log_dir = Path(os.environ.get("CHAT_TEST_LOG_DIR", "/tmp"))
    log_path = log_dir / f"chat-server-test-{port}-{os.getpid()}.log"

    def limit_open_files() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    process: subprocess.Popen[bytes] | ForkedServer
    if not plain_uvicorn and not root and os.environ.get(FORK_ENV, "1") != "0":
        # This checkout's server, forked from a process that imported it once.
        log_path.write_bytes(b"")
        process = zygote().spawn(args[3:], env, str(log_path), open_files)
    else:
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root or None,
                preexec_fn=limit_open_files if open_files else None,
            )
    server = RunningServer(
        port,
        process,
        log_path,
        dict(options, plain_uvicorn=plain_uvicorn, env=extra_env, open_files=open_files),
    )
    if not wait:
        return server

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"chat-server exited with {process.returncode}:\n{server.log()}")
        return server.health() is not None

    wait_until(ready, timeout=20, what=f"chat-server on port {port}")
    return server


def wait_ready(server: RunningServer, timeout: float = 20) -> None:
    """Until ``/health`` answers 200 (with Redis: until the node reaches it)."""

    def ready() -> bool:
        if server.process.poll() is not None:
            raise AssertionError(f"chat-server exited:\n{server.log()}")
        return server.health() is not None

    wait_until(ready, timeout=timeout, what=f"chat-server on port {server.port}")
