"""``chat-server start`` / ``stop`` / ``status``: the foreground server, run in the background.

One pid file and one log file per port in the user's state directory (platformdirs'
``user_state_dir("chat-server")``, or ``$CHAT_SERVER_STATE_DIR``): ``server-8000.pid`` and
``server-8000.log``. The pid file is JSON (pid, host, port, log, start time, and on Linux the
process's start time in clock ticks since boot). A pid file whose process is gone, or whose pid
now belongs to another process (its command line, and where recorded its start ticks, are
checked: a reused pid may even belong to another chat server), is stale and removed.

Exit codes: ``start`` 0 when a chat server answers on the port (also one already running),
1 when it could not be started. ``stop`` 0 when no background server is left running on the
port (including "it was not running", so scripts can stop unconditionally), 1 when a process
could not be stopped. ``status`` follows LSB: 0 running, 3 not running, 4 unknown (a process
holds the pid file but does not answer).

With ``--json`` each command prints, instead of its lines, one JSON object for programs (such
as chat-tui's autostart): ``chat_protocol.local``'s :class:`~chat_protocol.local.Outcome`.
"""

from __future__ import annotations

import contextlib
import http.client as httplib
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_state_dir

from chat_protocol import http
from chat_protocol.local import Outcome, State
from chat_server.ops.settings import Settings

STATE_DIR_ENV = "CHAT_SERVER_STATE_DIR"
LOG_TAIL_LINES = 30
STATUS_NOT_RUNNING = 3
STATUS_UNKNOWN = 4
# Only an HTTP client that ignores *_proxy variables can be trusted to reach our own port.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def state_dir() -> Path:
    override = os.environ.get(STATE_DIR_ENV)
    return Path(override) if override else Path(user_state_dir("chat-server"))


def pid_path(port: int) -> Path:
    return state_dir() / f"server-{port}.pid"


def log_path(port: int) -> Path:
    return state_dir() / f"server-{port}.log"


def ws_url(http_url: str) -> str:
    """What ``chat-tui --server`` takes for the server at ``http_url``."""
    return "ws" + http_url.removeprefix("http")


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses: wildcard addresses are reached via loopback."""
    if host in {"", "0.0.0.0"}:
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Report:
    """What a command tells its user: lines as it goes, or (``json``) one object at the end."""

    def __init__(self, json: bool = False) -> None:
        self.json = json
        self._lines: list[str] = []

    def line(self, text: str) -> None:
        if self.json:
            self._lines.append(text)
        else:
            print(text)

    def error(self, text: str) -> None:
        self._lines.append(text)
        print(text, file=sys.stderr)

    def done(self, state: State, url: str, pid: int | None = None, log: str | None = None) -> None:
        if self.json:
            outcome = Outcome(state, url, "\n".join(self._lines), pid, log)
            print(json.dumps(outcome.to_json()))


# ---------------------------------------------------------------------------- probing the port


@dataclass(frozen=True)
class Probe:
    """What answers on a port: a chat server (``health`` set), something else, or nothing."""

    health: http.Health | None = None
    other: str | None = None  # what answered instead, in words


def probe(host: str, port: int, timeout: float = 2.0) -> Probe:
    url = base_url(host, port) + http.HEALTH_PATH
    not_http = Probe(other="something that does not speak HTTP")
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            status, body = response.status, response.read(65536)
    except urllib.error.HTTPError as exc:
        try:
            status, body = exc.code, exc.read(65536)
        except OSError:
            status, body = exc.code, b""
        what = f"an HTTP server that answers /health with {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError | ConnectionResetError | ConnectionAbortedError):
            return not_http  # accepted the connection, then no HTTP answer
        return Probe()  # refused (nothing listens), or the address is unreachable
    except (OSError, httplib.HTTPException):
        return not_http  # timed out or garbled while reading the answer
    else:
        what = "an HTTP server that is not a chat server"
    try:
        return Probe(health=http.read_health(status, json.loads(body)))
    except (ValueError, http.ShapeError):
        return Probe(other=what)


# ----------------------------------------------------------------------------- pid files


@dataclass(frozen=True)
class PidFile:
    pid: int
    host: str
    port: int
    log: str
    started: float
    # /proc's start time of the process (clock ticks since boot); None where unknown. Unlike
    # ``started`` (wall clock), it tells our process from a later one that got the same pid.
    start_ticks: int | None = None


def read_pid_file(port: int, say: Callable[[str], None] = print) -> PidFile | None:
    """The pid file for ``port`` if it names our live chat server; a stale one is removed
    (and ``say`` says so)."""
    path = pid_path(port)
    try:
        data = json.loads(path.read_text())
        ticks = data.get("start_ticks")
        record = PidFile(
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            log=str(data["log"]),
            started=float(data["started"]),
            start_ticks=None if ticks is None else int(ticks),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        say(f"removing unreadable pid file {path}")
        _unlink(path)
        return None
    stale = why_not_ours(record)
    if stale is not None:
        say(f"removing stale pid file {path} ({stale})")
        _forget(port, record.pid)
        return None
    return record


def why_not_ours(record: PidFile) -> str | None:
    """None if ``record``'s process is still the chat server we started, else why it is not."""
    argv = process_command_line(record.pid)
    ticks = process_start_ticks(record.pid)
    reused = record.start_ticks is not None and ticks is not None and ticks != record.start_ticks
    if argv is not None and is_chat_server_command(argv) and not reused:
        return None
    if not process_exists(record.pid):
        return f"process {record.pid} no longer exists"
    command = shlex.join(argv) if argv else "(no command line)"
    if len(command) > 80:
        command = command[:77] + "..."
    return f"pid {record.pid} now belongs to another process: {command}"


def write_pid_file(record: PidFile) -> None:
    path = pid_path(record.port)
    tmp = path.with_suffix(".pid.tmp")
    tmp.write_text(json.dumps(record.__dict__) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _forget(port: int, pid: int) -> None:
    """Remove the pid file only if it still names ``pid``: a ``start`` that ran meanwhile (a
    client's autostart, the moment the old server's port came free) wrote its own, and losing
    it would leave that server running where ``stop`` and ``status`` cannot see it."""
    path = pid_path(port)
    try:
        if int(json.loads(path.read_text())["pid"]) != pid:
            return
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        pass  # unreadable: nobody's
    _unlink(path)


def process_command_line(pid: int) -> list[str] | None:
    """The command line of a live process, or None if there is none (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # exists, but belongs to someone else
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None
    # No /proc (macOS, BSD): ask ps.
    result = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return result.stdout.split() or None


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie, not yet reaped, has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, but belongs to someone else
    fields = _proc_stat(pid)
    if fields is not None:
        return fields[0] != "Z"
    if Path("/proc/self/stat").exists():
        return False  # /proc works, so the process has just gone
    result = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    state = result.stdout.strip()
    return bool(state) and not state.startswith("Z")


def process_start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (Linux); None where unknown."""
    fields = _proc_stat(pid)
    try:
        return None if fields is None else int(fields[19])  # field 22 of /proc/PID/stat
    except (ValueError, IndexError):
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), if there is one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may itself hold spaces and parentheses.
    return stat.rpartition(")")[2].split()


def is_chat_server_command(argv: Sequence[str]) -> bool:
    # ``python -m chat_server run ...`` as started below, or the ``chat-server`` console script.
    module = any(a == "-m" and b == "chat_server" for a, b in itertools.pairwise(argv))
    return module or any(Path(arg).name == "chat-server" for arg in argv[:2])


@contextlib.contextmanager
def _start_lock(port: int) -> Iterator[None]:
    """Serialise concurrent ``start`` commands for one port (the second then sees the first).
    The lock file is removed when done, so that none is left behind: a waiter that locked a
    file already removed tries again with the new one."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the port bind still lets only one server win
        yield
        return
    path = state_dir() / f"server-{port}.lock"
    while True:
        lock = open(path, "a")  # noqa: SIM115 - held across the yield, closed below
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.fstat(lock.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: nobody can lock this file and keep it
        lock.close()


# ----------------------------------------------------------------------------- commands


def start(
    settings: Settings, child_argv: Sequence[str], wait: float = 15.0, report: Report | None = None
) -> int:
    say = report or Report()
    host, port = settings.host, settings.port
    url = base_url(host, port)
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with _start_lock(port):
        record = read_pid_file(port, say.line)
        if record is not None:
            health = _wait_for_health(record.host, port, wait, lambda: why_not_ours(record))
            if health is not None:
                say.line(f"chat-server is already running at {ws_url(url)} (pid {record.pid})")
                say.done(State.RUNNING, url, record.pid, record.log)
                return 0
            if read_pid_file(port, say.line) is not None:
                say.line(
                    f"chat-server is already running on port {port} (pid {record.pid}) "
                    f"but does not answer at {url}/health; see {record.log}"
                )
                say.done(State.FAILED, url, record.pid, record.log)
                return 1
            # It exited while we waited (its pid file is removed now): start a new one.

        found = probe(host, port)
        if found.health is not None:
            say.line(
                f"a chat server is already running at {ws_url(url)} "
                "(not started by 'chat-server start', so 'stop' will not stop it)"
            )
            say.done(State.RUNNING, url)
            return 0
        if found.other is not None:
            say.error(f"error: port {port} is in use by {found.other}")
            say.done(State.FAILED, url)
            return 1

        log = log_path(port)
        _rotate(log)
        if not settings.log_file:  # the log rotated by size as it grows, within one run too
            child_argv = [*child_argv, "--log-file", str(log), "--log-file-count", "1"]
        # Its output too (what comes before logging is set up, a crash's traceback).
        with open(log, "ab") as log_file, open(os.devnull, "rb") as devnull:
            process = subprocess.Popen(
                list(child_argv),
                # `python -m` would put the working directory first on sys.path: run from a
                # checkout of another version, it would start that one instead of ours.
                env={**os.environ, "PYTHONSAFEPATH": "1"},
                stdin=devnull,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no controlling terminal: Ctrl+C here does not reach it
                close_fds=True,
            )
        ticks = process_start_ticks(process.pid)
        write_pid_file(PidFile(process.pid, host, port, str(log), time.time(), ticks))

        health = _wait_for_health(host, port, wait, process.poll)
        if health is not None and not health.available:
            # It may still be connecting: a broker that answers is given a moment to.
            health = _wait_for_broker(host, port, settings.broker_timeout, health)
        if health is not None:
            say.line(f"chat-server is running at {ws_url(url)} (pid {process.pid})")
            say.line(f"health: {url}{http.HEALTH_PATH}")
            if not health.available:
                # Started, but of no use yet: said plainly rather than "running" alone.
                say.line(
                    f"but it cannot reach its broker ({health.reason or 'unavailable'}): every "
                    "connection is refused with 1013 until it can; chat-server status says when"
                )
            say.line(f"log: {log}")
            say.done(State.STARTED, url, process.pid, str(log))
            # It outlives us on purpose; tell Popen not to warn that it is still running.
            process.returncode = 0
            return 0

        code = process.poll()
        if code is None:
            process.kill()
            process.wait()
            problem = f"did not answer at {url}/health within {wait:g} s and was stopped"
        else:
            problem = f"exited with code {code}"
        _forget(port, process.pid)
        say.error(f"error: chat-server {problem}; last lines of {log}:")
        say.error(_tail(log))
        say.done(State.FAILED, url, log=str(log))
        return 1


def stop(settings: Settings, wait: float = 10.0, report: Report | None = None) -> int:
    say = report or Report()
    port = settings.port
    url = base_url(settings.host, port)
    record = read_pid_file(port, say.line)
    if record is None:
        found = probe(settings.host, port)
        if found.health is not None:
            say.line(
                f"a chat server answers at {url} but was not started "
                "by 'chat-server start' (no pid file); not stopping it"
            )
            say.done(State.NOT_OURS, url)
            return 1
        say.line(f"chat-server is not running on port {port}")
        say.done(State.NOT_RUNNING, url)
        return 0

    pid = record.pid
    _signal(pid, signal.SIGTERM)
    if not _wait_for_exit(pid, wait):
        say.line(f"chat-server (pid {pid}) did not exit within {wait:g} s; killing it")
        _signal(pid, signal.SIGKILL)
        if not _wait_for_exit(pid, 5.0):
            say.error(f"error: chat-server (pid {pid}) survived SIGKILL")
            say.done(State.FAILED, url, pid)
            return 1
    _forget(port, pid)
    say.line(f"chat-server stopped (pid {pid}, port {port})")
    say.done(State.STOPPED, url, pid)
    return 0


def status(settings: Settings, report: Report | None = None) -> int:
    say = report or Report()
    port = settings.port
    record = read_pid_file(port, say.line)
    host = record.host if record is not None else settings.host
    url = base_url(host, port)
    found = probe(host, port)
    if record is None:
        if found.health is not None:
            say.line(
                f"a chat server is running at {ws_url(url)} (not started by 'chat-server start')"
            )
            say.line(_counts(found.health))
            say.done(State.RUNNING, url)
            return 0
        say.line(f"chat-server is not running on port {port}")
        if found.other is not None:
            say.line(f"port {port} is in use by {found.other}")
        say.done(State.NOT_RUNNING, url)
        return STATUS_NOT_RUNNING
    if found.health is None and read_pid_file(port, say.line) is None:
        # It exited while we probed: the pid file was just removed as stale.
        say.line(f"chat-server is not running on port {port}")
        say.done(State.NOT_RUNNING, url)
        return STATUS_NOT_RUNNING
    if found.health is None:
        say.line(f"chat-server (pid {record.pid}) is running but does not answer at {url}/health")
        say.line(f"log: {record.log}")
        say.done(State.UNKNOWN, url, record.pid, record.log)
        return STATUS_UNKNOWN
    say.line(f"chat-server is running at {ws_url(url)} (pid {record.pid})")
    say.line(f"health: {url}{http.HEALTH_PATH}")
    say.line(_counts(found.health))
    say.line(f"log: {record.log}")
    say.done(State.RUNNING, url, record.pid, record.log)
    return 0


# ----------------------------------------------------------------------------- helpers


def _wait_for_health(
    host: str, port: int, wait: float, exited: Callable[[], object], interval: float = 0.05
) -> http.Health | None:
    """Poll ``/health`` until it answers; give up after ``wait`` or once ``exited()`` is set."""
    deadline = time.monotonic() + wait
    while True:
        found = probe(host, port, timeout=1.0)
        if found.health is not None:
            return found.health
        if exited() is not None or time.monotonic() > deadline:
            return None
        time.sleep(interval)


def _wait_for_broker(
    host: str, port: int, wait: float, health: http.Health, interval: float = 0.05
) -> http.Health:
    """``/health`` once it says the broker is available, or as it is after ``wait``."""
    deadline = time.monotonic() + wait
    while not health.available and time.monotonic() < deadline:
        time.sleep(interval)
        health = probe(host, port, timeout=1.0).health or health
    return health


def _wait_for_exit(pid: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while process_command_line(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _rotate(log: Path) -> None:
    """Keep the previous run's log as ``.log.1``: bounded disk use (the running server rotates
    its own by size into the same ``.log.1``), one run back to look at."""
    if log.exists():
        log.replace(log.with_suffix(".log.1"))


def _tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read the log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"


def _counts(health: http.Health) -> str:
    rooms, connections = health.rooms, health.connections
    counts = (
        f"up {_duration(health.uptime_seconds)}, {rooms} room{'' if rooms == 1 else 's'}, "
        f"{connections} connection{'' if connections == 1 else 's'}"
    )
    if not health.available:
        counts += f"; {health.reason or 'broker unavailable'} (retrying)"
    return counts


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{seconds}s")
    return " ".join(parts)
