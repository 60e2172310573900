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
    password: str | None = None  # requirepass (and masterauth, for a replica)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 5.0) -> redis.Redis:
        client = redis.Redis(
            port=self.port, socket_timeout=timeout, protocol=2, password=self.password
        )
        self._clients.append(client)
        return client

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no"]
        # A replica's full sync writes an RDB file: beside the log, never in the working tree,
        # and gone before a server starts on that port again (a later test's server would
        # load it: nothing is persisted here unless a test's own --dir/--dbfilename say so).
        dump = self.log_path.parent / f"dump-{self.port}.rdb"
        if "--dbfilename" not in self.extra:
            dump.unlink(missing_ok=True)
        args += ["--dir", str(dump.parent), "--dbfilename", dump.name, *self.extra]
        if self.password is not None:
            args += ["--requirepass", self.password, "--masterauth", self.password]
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


def start_redis(*extra: str, port: int | None = None, password: str | None = None) -> RedisServer:
    log_dir = Path(os.environ.get("CHAT_TEST_LOG_DIR", "/tmp"))
    port = port or free_port()
    log_path = log_dir / f"redis-test-{port}-{os.getpid()}.log"
    return RedisServer(port, log_path, extra, password=password).start()


def start_replica(master: RedisServer, *extra: str) -> RedisServer:
    """A replica of ``master`` (``--replicaof``); returns once its link to the master is up."""
    # A master waits 5 s by default before a diskless full sync, for more replicas to come.
    master.client().config_set("repl-diskless-sync-delay", 0)
    replica = start_redis(
        "--replicaof", "127.0.0.1", str(master.port), *extra, password=master.password
    )
    client = replica.client()
    wait_until(
        lambda: client.info("replication").get("master_link_status") == "up",
        timeout=10,
        what=f"the replica on port {replica.port} in sync",
    )
    return replica


@dataclass
class RedisSentinel(RedisServer):
    """A ``redis-server --sentinel`` watching one master as ``service``; its config file (which
    Sentinel rewrites as it learns) is its own, in ``log_path``'s directory."""

    service: str = "chat"
    master_port: int = 0
    down_after_ms: int = 1000
    failover_timeout_ms: int = 5000
    master_password: str | None = None  # the master's and replicas' (sentinel auth-pass)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisSentinel:
        assert REDIS_SERVER is not None
        config = self.log_path.with_suffix(".conf")
        if not config.exists():
            name = self.service
            auth = f"sentinel auth-pass {name} {self.master_password}\n"
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {config.parent}\n"
                f"sentinel monitor {name} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
                + (auth if self.master_password is not None else "")
            )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [REDIS_SERVER, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._answers, timeout=10, what=f"redis-sentinel on port {self.port}")
        return self

    def master(self) -> dict[str, Any]:
        """What this sentinel says of its master (``SENTINEL MASTER``)."""
        reply = self.client(timeout=1).execute_command("SENTINEL", "MASTER", self.service)
        if isinstance(reply, dict):
            return reply
        return {k.decode(): v.decode() for k, v in zip(reply[::2], reply[1::2], strict=True)}

    def master_port_now(self) -> int:
        """The port of the master as this sentinel names it now."""
        reply = self.client(timeout=1).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        )
        return int(reply[1])


def start_sentinels(
    master: RedisServer,
    count: int = 3,
    service: str = "chat",
    replicas: int = 1,
    directory: Path | None = None,
) -> list[RedisSentinel]:
    """``count`` sentinels watching ``master`` (quorum 2, down after 1 s): returns once each
    knows the others and ``replicas`` replicas, so that a failover can be agreed at once."""
    directory = directory or Path(os.environ.get("CHAT_TEST_LOG_DIR", "/tmp"))
    sentinels: list[RedisSentinel] = []
    try:
        for _ in range(count):
            port = free_port()
            log_path = directory / f"redis-sentinel-{port}-{os.getpid()}.log"
            sentinels.append(
                RedisSentinel(
                    port,
                    log_path,
                    service=service,
                    master_port=master.port,
                    master_password=master.password,
                ).start()
            )

        def ready() -> bool:
            for sentinel in sentinels:
                state = sentinel.master()
                if int(state["num-other-sentinels"]) < count - 1:
                    return False
                if int(state["num-slaves"]) < replicas:
                    return False
            return True

        # Sentinels find each other through the master's hello channel, every 2 s.
        wait_until(ready, timeout=15, interval=0.1, what="the sentinels to know each other")
    except BaseException:
        for sentinel in sentinels:
            sentinel.stop()
        raise
    return sentinels
