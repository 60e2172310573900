"""The real ``chat-server`` command line, run as subprocesses with a state directory of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psutil

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
        self,
        *args: str,
        script: bool = False,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        program = [str(BIN / "chat-server")] if script else [sys.executable, "-m", "chat_server"]
        return subprocess.run(
            [*program, *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def on_port(
        self, command: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self(command, "--port", str(self.port), *args, env=env)

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
