"""``--workers N``: N processes on one port, one chat through the shared broker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from chat_protocol.v1 import format_join, format_leave, parse_frame
from chat_testing.clusters import FAST
from chat_testing.marks import requires_redis
from chat_testing.ports import free_port
from chat_testing.redis_servers import RedisServer, start_redis
from chat_testing.servers import RunningServer, start_server
from chat_testing.waits import wait_until
from tests.server.wsclients import Member, join, raw_handshake

pytestmark = requires_redis


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


def nodes_registered(server: RunningServer, count: int) -> bool:
    health = server.health()
    return health is not None and health["cluster"]["nodes"] == count


async def join_all(url: str, count: int) -> list[Member]:
    members: list[Member] = []
    for _ in range(count):
        member = await join(url)
        for earlier in members:
            assert await earlier.recv() == format_join(member.name)
        members.append(member)
    return members


async def test_workers_are_one_chat_with_chat_server_s_protocol(redis: RedisServer) -> None:
    server = start_server(workers=2, broker_url=redis.url, rate_limit=0, env=FAST)
    try:
        wait_until(lambda: nodes_registered(server, 2), what="both workers in the cluster")
        members = await join_all(server.chat_url("w"), 8)
        await members[-1].ws.send("to every worker")
        for member in members:
            assert await member.recv() == f"{members[-1].name} :: to every worker"
        assert server.get_json("/health")["cluster"]["connections"] == 8

        await asyncio.gather(*(m.close() for m in members))

        # A stalled member is evicted and its socket aborted: only chat-server's uvicorn
        # protocol can do that (plain uvicorn keeps it open), so it runs in the workers.
        (alice,) = await join_all(server.chat_url("w-stall"), 1)
        stalled = raw_handshake(server.port, "/chat/w-stall", rcvbuf=4096)
        stalled_name = parse_frame(await alice.recv()).name
        payload = "p" * 4000
        left = format_leave(stalled_name)

        async def flood() -> None:
            for i in range(1500):  # ~6 MB: past the kernel's buffers and the 1 MiB bound
                await alice.ws.send(f"{i} {payload}")

        last = f"{alice.name} :: 1499 {payload}"
        _, seen = await asyncio.gather(flood(), alice.recv_until(lambda f: f == last, timeout=30))
        assert left in seen
        stalled.settimeout(1)
        deadline = time.monotonic() + 10
        with pytest.raises((ConnectionResetError, BrokenPipeError, EOFError)):
            while time.monotonic() < deadline:
                try:
                    if not stalled.recv(1 << 20):
                        raise EOFError
                except TimeoutError:
                    continue
        stalled.close()
        await alice.close()
    finally:
        code = server.stop()
    assert code == 0, server.log()


def test_workers_without_a_shared_broker_refuse_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chat_server", "run", "--workers", "2", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=20,
        env={k: v for k, v in os.environ.items() if not k.startswith("CHAT_SERVER_")},
    )
    assert result.returncode == 2
    assert "--workers 2 needs a broker that the processes share" in result.stderr
    assert "--broker-url redis://" in result.stderr


async def test_plain_uvicorn_workers_with_a_broker_url_are_one_chat(redis: RedisServer) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_SERVER_")}
    env.update(FAST, CHAT_SERVER_BROKER_URL=redis.url)
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "chat_server:app", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = RunningServer(port, process, log_path=None)  # type: ignore[arg-type]
    try:
        wait_until(lambda: nodes_registered(server, 2), timeout=30, what="both workers")
        members = await join_all(server.chat_url("plain-w"), 6)
        await members[0].ws.send("hello")
        for member in members:
            assert await member.recv() == f"{members[0].name} :: hello"
        await asyncio.gather(*(m.close() for m in members))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
        log.close()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # every worker is gone
