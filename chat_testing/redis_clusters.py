"""A real Redis Cluster for tests: ``redis-server --cluster-enabled yes`` processes on free
loopback ports, joined with ``redis-cli --cluster create``.

Like :mod:`chat_testing.redis_servers`, nothing is persisted (``--save ''``): a node that is
restarted has lost its data, but keeps its cluster identity (its ``nodes.conf``), so it
rejoins as what the cluster says it is (a killed master comes back as a replica of the one
that replaced it). ``cluster-node-timeout`` is short, so that a failover takes about two
seconds rather than the default's tens of seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from chat_testing.ports import free_port
from chat_testing.redis_servers import RedisServer
from chat_testing.waits import wait_until

REDIS_CLI = shutil.which("redis-cli")
NODE_TIMEOUT_MS = 1000
# PFAIL after the node timeout, FAIL once a majority agrees, then the replica's election
# (500-1000 ms of random delay): a few seconds, plus what a loaded 2-core machine adds.
FAILOVER_WITHIN = 15.0


@dataclass
class ClusterNode(RedisServer):
    """One ``redis-server`` of the cluster; its cluster state lives in ``config``."""

    config: Path = field(default_factory=Path)
    _admin: redis.Redis | None = None

    def admin(self) -> redis.Redis:
        """One client per node for the helpers here (they poll: a new client per poll would
        be a new connection per poll). One immediate retry: after a restart its old
        connection is dead, the retry reconnects."""
        if self._admin is None:
            self._admin = redis.Redis(
                port=self.port, socket_timeout=1, protocol=2, retry=Retry(NoBackoff(), 1)
            )
            self._clients.append(self._admin)
        return self._admin

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def info(self) -> dict[str, str]:
        """``CLUSTER INFO``, as a dict."""
        text = self.admin().execute_command("CLUSTER", "INFO")
        text = text.decode() if isinstance(text, bytes) else text
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k: v.strip() for k, v in pairs}

    def state_ok(self) -> bool:
        try:
            return self.info().get("cluster_state") == "ok"
        except redis.RedisError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class RedisCluster:
    nodes: list[ClusterNode]
    directory: Path  # the nodes' cluster config files (their logs are with the others')

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive()]

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def slot_owners(self) -> dict[int, int]:
        """Slot -> port of its master, as a live node says (``CLUSTER SLOTS``)."""
        for node in self.live():
            try:
                ranges = node.admin().execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            return {
                slot: int(entry[2][1])
                for entry in ranges
                for slot in range(int(entry[0]), int(entry[1]) + 1)
            }
        raise AssertionError("no live cluster node answers CLUSTER SLOTS")

    def masters(self) -> list[ClusterNode]:
        """The nodes that own slots, in port order."""
        return [self.node(p) for p in sorted(set(self.slot_owners().values()))]

    def master_of(self, key: str | bytes) -> ClusterNode:
        return self.node(self.slot_owners()[key_slot(_bytes(key))])

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        """Live nodes that are replicas of ``master``, with their replication link up."""
        found = []
        for node in self.live():
            if node is master:
                continue
            try:
                replication = node.admin().info("replication")
            except redis.RedisError:
                continue
            if (
                replication.get("role") == "slave"
                and int(replication.get("master_port", 0)) == master.port
                and replication.get("master_link_status") == "up"
            ):
                found.append(node)
        return found

    def wait_ok(self, timeout: float = FAILOVER_WITHIN) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on who owns every slot."""

        def agreed() -> bool:
            live = self.live()
            if not all(n.state_ok() for n in live):
                return False
            views = set()
            for node in live:
                ranges = node.admin().execute_command("CLUSTER", "SLOTS")
                views.add(tuple(sorted((int(e[0]), int(e[1]), int(e[2][1])) for e in ranges)))
            return len(views) == 1

        wait_until(agreed, timeout=timeout, interval=0.05, what="the cluster to agree, state ok")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: a crash, as a node's sudden death."""
        node.stop(signal.SIGKILL)

    def wait_failover(self, dead: ClusterNode, timeout: float = FAILOVER_WITHIN) -> ClusterNode:
        """Until another node owns the slots ``dead`` owned and the cluster is ok again;
        returns the promoted node."""
        slots = [s for s, port in self.slot_owners().items() if port == dead.port]
        assert slots, f"port {dead.port} owned no slot"

        def promoted() -> ClusterNode | None:
            try:
                owners = self.slot_owners()
            except AssertionError:
                return None
            port = owners.get(slots[0])
            return None if port in (None, dead.port) else self.node(port)

        node = wait_until(promoted, timeout=timeout, interval=0.05, what="a replica promoted")
        self.wait_ok(timeout)
        return node

    def restart(self, node: ClusterNode) -> ClusterNode:
        """Start a stopped (or killed) node again on its port, with its cluster identity."""
        node.stop()
        return node.start()

    def move_slot(self, slot: int, target: ClusterNode) -> None:
        """Migrate ``slot`` with its keys to ``target`` (what ``redis-cli --cluster reshard``
        does for each slot: IMPORTING, MIGRATING, MIGRATE the keys, SETSLOT NODE everywhere)."""
        source = self.node(self.slot_owners()[slot])
        if source is target:
            return
        src, dst = source.admin(), target.admin()
        src_id, dst_id = _node_id(source), _node_id(target)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for node in (target, source, *(n for n in self.masters() if n not in (source, target))):
            node.admin().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGKILL)  # nothing to save: no need for a clean shutdown
        shutil.rmtree(self.directory, ignore_errors=True)


def _bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _node_id(node: ClusterNode) -> str:
    reply = node.admin().execute_command("CLUSTER", "MYID")
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def start_cluster(masters: int = 3, replicas: int = 1, *redis_args: str) -> RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, joined and agreed (state ok);
    ``redis_args`` go to every node."""
    assert REDIS_CLI is not None, "redis-cli is not installed"
    log_dir = Path(os.environ.get("CHAT_TEST_LOG_DIR", "/tmp"))
    directory = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
    nodes: list[ClusterNode] = []
    cluster = RedisCluster(nodes, directory)
    try:
        for _ in range(masters * (1 + replicas)):
            port = free_port()
            config = directory / f"nodes-{port}.conf"
            extra = (
                *("--cluster-enabled", "yes", "--cluster-config-file", str(config)),
                *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                # A master's failure leaves the other masters serving their own slots (by
                # default the whole cluster refuses until a replica is promoted).
                *("--cluster-require-full-coverage", "no"),
                # A replica's first sync streams at once, rather than waiting for others.
                *("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"),
                *redis_args,
            )
            log_path = log_dir / f"redis-cluster-{port}-{os.getpid()}.log"
            node = ClusterNode(port, log_path, extra, config=config)
            nodes.append(node)
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        create = [REDIS_CLI, "--cluster", "create", *addresses]
        subprocess.run(
            [*create, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster.wait_ok(timeout=30)
        # A replica is of use to a failover test once its replication link is up.
        wait_until(
            lambda: all(len(cluster.replicas_of(m)) >= replicas for m in cluster.masters()),
            timeout=30,
            interval=0.05,
            what="every replica in sync",
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster(masters: int = 3, replicas: int = 1) -> Iterator[RedisCluster]:
    """:func:`start_cluster`, killed (every node) at the end."""
    cluster = start_cluster(masters, replicas)
    try:
        yield cluster
    finally:
        cluster.stop()
