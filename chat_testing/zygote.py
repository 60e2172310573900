"""A process that has imported the server once and forks a real ``chat-server`` from itself on
request: each start then costs a fork, not the 0.8 s of CPU that importing FastAPI, uvicorn and
the server takes (the suite starts a couple of hundred servers).

The forked server is the same program as ``python -m chat_server ...``: the same command line
(``sys.argv``), environment, working directory and open-file limit, its output in its log
file, its own process, killed and signalled like any. Only its parent differs: this process,
which reaps it and tells its exit status (:class:`ForkedServer` asks for it), in the
convention of ``subprocess.Popen.returncode`` (a negative number: the signal that ended it).

Protocol, one JSON line each way on stdin/stdout: ``{"spawn": {...}}`` -> ``{"pid": N}``,
``{"poll": N}`` -> ``{"code": N or null}``. The zygote never starts a thread or an event loop:
forking it is safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

_exited: dict[int, int] = {}  # pid -> Popen-style return code, once reaped


def _reap(signum: int = 0, frame: object = None) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _exited[pid] = os.waitstatus_to_exitcode(status)


def _run_server(request: dict[str, Any]) -> None:
    """In the child: become ``python -m chat_server ARGS`` and never come back."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("cwd"):
            os.chdir(request["cwd"])
        if request.get("open_files"):
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (request["open_files"], hard))
        sys.argv = ["chat_server", *request["args"]]
        from chat_server.ops.cli import main

        code = main(request["args"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed log: nothing left to say
                stream.flush()
        os._exit(code)


def serve() -> None:
    # What a server start would import: paid once, here.
    import chat_server.backends.redis.backend
    import chat_server.http.app
    import chat_server.ops.cli
    import chat_server.ops.serve  # noqa: F401

    signal.signal(signal.SIGCHLD, _reap)
    requests, replies = sys.stdin, sys.stdout
    for line in requests:
        request = json.loads(line)
        if "spawn" in request:
            replies.flush()
            pid = os.fork()
            if pid == 0:
                _run_server(request["spawn"])
            reply: dict[str, Any] = {"pid": pid}
        else:
            _reap()
            reply = {"code": _exited.get(request["poll"])}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class Zygote:
    """The test process's end of one zygote (started on first use)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "chat_testing.zygote"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        reply: dict[str, Any] = json.loads(stdout.readline())
        return reply

    def spawn(
        self, args: list[str], env: dict[str, str], log: str, open_files: int | None
    ) -> ForkedServer:
        request = {"args": args, "env": env, "log": log, "open_files": open_files}
        return ForkedServer(self, self._ask({"spawn": request})["pid"])

    def poll(self, pid: int) -> int | None:
        code: int | None = self._ask({"poll": pid})["code"]
        return code


class ForkedServer:
    """A forked server as the tests use a ``subprocess.Popen``: pid, poll, wait, signals."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self._zygote = zygote
        self.pid = pid
        self.returncode: int | None = None
        self.args: list[str] = []

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.poll(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_zygote: Zygote | None = None


def zygote() -> Zygote:
    """This process's zygote."""
    global _zygote
    if _zygote is None:
        _zygote = Zygote()
    return _zygote


if __name__ == "__main__":
    serve()
