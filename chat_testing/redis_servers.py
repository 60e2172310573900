"""Real ``redis-server`` processes (Debian's package) on free loopback ports, for tests and
benchmarks.

Each runs without persistence (``--save '' --appendonly no``), as the tests that restart it
expect: a restarted Redis has lost everything. ``.ci/run`` installs ``redis-server`` when it is
missing; where it cannot be installed, the tests that need it are skipped
(:data:`chat_testing.marks.requires_redis`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chat_testing.ports import free_port
from chat_testing.waits import wait_until

REDIS_SERVER = shutil.which("redis-server")


@dataclass
class RedisServer:
    port: int
    log_path: Path
    extra: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    _clients: list[redis.Redis] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 5.0) -> redis.Redis:
        client = redis.Redis(port=self.port, socket_timeout=timeout, protocol=2)
        self._clients.append(client)
        return client

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", *self.extra]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited:\n{self.log_path.read_text()}")
        # No retries: redis-py's default would back off for seconds while it starts up.
        client = redis.Redis(port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
        try:
            return bool(client.ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # it answers, and wants a password
        except redis.RedisError:
            return False
        finally:
            client.close()

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: a clean shutdown; SIGKILL: a crash) and wait until it is gone."""
        for client in self._clients:
            client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused one must be able to exit
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> RedisServer:
        """Stop and start again on the same port: an empty Redis (no persistence)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the sockets stay open, nothing answers."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.send_signal(signal.SIGCONT)

    def asleep(self) -> bool:
        """Whether its one thread that serves clients is in a sleep (``DEBUG SLEEP``), rather
        than waiting for them or working: where the kernel says it waits (Linux's
        ``/proc/PID/wchan``: a nanosleep function; "0" while it runs)."""
        assert self.process is not None
        try:
            wchan = Path(f"/proc/{self.process.pid}/wchan").read_text()
        except OSError:
            return False
        return "nanosleep" in wchan

    def node_ids(self) -> list[str]:
        """Live and dead-but-not-yet-reaped nodes, as registered in Redis."""
        return [n.decode() for n in self.client().zrange("chat:nodes", 0, -1)]

    def clients(self, name_part: str = "") -> list[dict[str, Any]]:
        return [c for c in self.client().client_list() if name_part in c.get("name", "")]


def start_redis(*extra: str, port: int | None = None) -> RedisServer:
    log_dir = Path(os.environ.get("CHAT_TEST_LOG_DIR", "/tmp"))
    port = port or free_port()
    log_path = log_dir / f"redis-test-{port}-{os.getpid()}.log"
    return RedisServer(port, log_path, extra).start()
