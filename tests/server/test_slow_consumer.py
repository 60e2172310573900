"""A member that stops reading must cost the others nothing, and be evicted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psutil
import pytest

from chat_protocol.v1 import parse_frame
from chat_server.transport.uvicorn_ws import ABORT_GRACE_SECONDS, KERNEL_SEND_BUFFER
from chat_testing.servers import RunningServer
from chat_testing.waits import wait_until
from tests.server.hostile import server_frames
from tests.server.test_promises import ROOMY_HISTORY, _post_big
from tests.server.wsclients import join_many, join_v2, raw_handshake, server_send_queue

MESSAGES = 1500
PAYLOAD = "p" * 4000  # ~6 MB in all: far past kernel buffers plus the 1 MiB send buffer
# The sender stays at most this many messages (~256 KB) ahead of the healthy members it
# shares this test process with: unthrottled, it outpaces their reading on a loaded machine
# and makes them slow consumers too, which is the server right and the test wrong.
WINDOW = 64
# The close frame a slow consumer finds at the end of its backlog.
SLOW_CONSUMER_CLOSE = b"\x88\x0f" + (1008).to_bytes(2, "big") + b"slow consumer"


class Window:
    def __init__(self, readers: int) -> None:
        self.read = [0] * readers
        self._changed = asyncio.Event()

    def advance(self, reader: int) -> None:
        self.read[reader] += 1
        self._changed.set()

    async def wait(self, sent: int) -> None:
        while sent - min(self.read) >= WINDOW:
            self._changed.clear()
            await self._changed.wait()


@pytest.mark.parametrize("plain_uvicorn", [False, True], ids=["chat-server", "plain-uvicorn"])
async def test_stalled_member_is_evicted_and_others_get_everything_promptly(
    server_factory: Callable[..., RunningServer], plain_uvicorn: bool
) -> None:
    # History off: what is checked is that nothing piles up behind the stalled member; the
    # room's history ring (~4 MB of these messages) is bounded on its own and measured in
    # bench/server_bench.py.
    server = server_factory(rate_limit=0, plain_uvicorn=plain_uvicorn, history_size=0)
    rss = psutil.Process(server.process.pid)
    # Plain uvicorn offers permessage-deflate, which makes the healthy members too slow to
    # keep up with an unthrottled flood in this test process: they decline it.
    alice, bob = await join_many(server.chat_url("stall"), 2, compression=None)
    stalled = raw_handshake(server.port, "/chat/stall", rcvbuf=4096)  # reads nothing, ever
    stalled_name = parse_frame(await alice.recv()).name
    assert await bob.recv() == f"{stalled_name} joined the chat"
    rss_before = rss.memory_info().rss

    left = f"{stalled_name} left the chat"
    expected = [f"{alice.name} :: {i} {PAYLOAD}" for i in range(MESSAGES)]

    window = Window(2)

    async def send_all() -> None:
        for i in range(MESSAGES):
            await window.wait(i)
            await alice.ws.send(f"{i} {PAYLOAD}")

    async def receive_all(member_index: int) -> tuple[list[str], bool]:
        member = (alice, bob)[member_index]
        chat: list[str] = []
        saw_leave = False
        while len(chat) < MESSAGES or not saw_leave:
            frame = await member.recv(timeout=10)
            if frame == left:
                saw_leave = True
            else:
                chat.append(frame)
                window.advance(member_index)
        return chat, saw_leave

    started = time.monotonic()
    _, (alice_got, alice_left), (bob_got, bob_left) = await asyncio.gather(
        send_all(), receive_all(0), receive_all(1)
    )
    elapsed = time.monotonic() - started

    # Healthy members got every message, in order, and saw the stalled one leave.
    assert alice_got == expected and bob_got == expected
    assert alice_left and bob_left
    # Promptly: megabytes over loopback take well under the deadline even on a busy machine.
    assert elapsed < 30, elapsed
    assert stalled_name not in server.get_json("/rooms/stall")["members"]
    if not plain_uvicorn:
        # The stalled socket itself is freed (plain uvicorn has no way to abort it), and with
        # it what the kernel still had to send: reset, not left to drain for minutes into a
        # window that never opens.
        wait_until(lambda: server.get_json("/health")["connections"] == 2, what="eviction")
        wait_until(
            lambda: server_send_queue(server.port, stalled) is None,
            what="the server's socket of the stalled member gone, its send queue with it",
        )
    assert "evicted room=stall name=" + stalled_name in server.log()
    # Memory stayed bounded: nowhere near the ~6 MB that was sent past the stalled member.
    growth = rss.memory_info().rss - rss_before
    assert growth < 4 * 1024 * 1024, growth
    stalled.close()
    for member in (alice, bob):
        await member.close()


async def test_slow_member_finds_close_1008_slow_consumer_after_its_backlog(
    server_factory: Callable[..., RunningServer],
) -> None:
    """A peer that was only slow, not dead, reads the reason in the close frame: it catches up
    once it is evicted, within the grace the server gives a close before it resets the
    connection (30 s here, so that a loaded machine's slow reader is still in time)."""
    server = server_factory(rate_limit=0, env={"CHAT_SERVER_CLOSE_GRACE": "30"})
    alice = (await join_many(server.chat_url("slow"), 1))[0]
    slow = raw_handshake(server.port, "/chat/slow", rcvbuf=4096)
    slow_name = parse_frame(await alice.recv()).name
    left = f"{slow_name} left the chat"
    evicted = asyncio.Event()

    window = Window(1)

    async def send_all() -> None:
        for i in range(MESSAGES):
            await window.wait(i)
            await alice.ws.send(f"{i} {PAYLOAD}")

    async def receive_all() -> list[str]:
        seen: list[str] = []
        chat = 0
        async with asyncio.timeout(30):
            while chat < MESSAGES or left not in seen:
                frame = await alice.recv(timeout=10)
                seen.append(frame)
                if frame == left:
                    evicted.set()
                else:
                    chat += 1
                    window.advance(0)
        return seen

    def read_to_the_close() -> bytes:
        """Everything the server sent, up to and with its close frame."""
        slow.settimeout(5)
        data = b""
        while not data.endswith(SLOW_CONSUMER_CLOSE):
            chunk = slow.recv(1 << 20)
            assert chunk, "the connection ended before its close frame"
            data += chunk
        return data

    async def catch_up() -> bytes:
        await evicted.wait()
        return await asyncio.to_thread(read_to_the_close)

    _, seen, data = await asyncio.gather(send_all(), receive_all(), catch_up())
    assert left in seen
    frames = server_frames(data)
    assert frames[-1] == (0x8, (1008).to_bytes(2, "big") + b"slow consumer")
    texts = [payload.decode() for opcode, payload in frames if opcode == 0x1]
    assert texts[0] == f"{slow_name} joined the chat"
    # What it did get is an unbroken prefix of the room's order.
    assert texts[1:] == [f"{alice.name} :: {i} {PAYLOAD}" for i in range(len(texts) - 1)]
    slow.close()
    await alice.close()


@pytest.mark.memory_only  # the transport's doing: the same whatever the broker
async def test_a_member_that_never_reads_its_close_is_reset_after_the_grace(
    server_factory: Callable[..., RunningServer],
) -> None:
    """Evicted and still not reading: after the grace the connection is reset, and the
    kernel's queue for it goes with it (a close would leave megabytes queued for minutes)."""
    server = server_factory(rate_limit=0, history_size=0)
    alice = (await join_many(server.chat_url("deaf"), 1))[0]
    deaf = raw_handshake(server.port, "/chat/deaf", rcvbuf=4096)
    deaf_name = parse_frame(await alice.recv()).name
    left = f"{deaf_name} left the chat"
    sent = 0
    async with asyncio.timeout(30):
        while True:  # one message at a time, read back: alice never lags
            await alice.ws.send(f"{sent} {PAYLOAD}")
            sent += 1
            if await alice.recv(timeout=10) == left:
                break
    evicted_at = time.monotonic()
    wait_until(
        lambda: server_send_queue(server.port, deaf) is None,
        what="the deaf member's connection reset",
    )
    assert time.monotonic() - evicted_at >= ABORT_GRACE_SECONDS - 0.5  # the grace was given
    with pytest.raises(ConnectionResetError):  # what the peer finds when it reads at last
        while deaf.recv(1 << 20):
            pass
    deaf.close()
    await alice.close()


@pytest.mark.memory_only  # the transport's doing: the same whatever the broker
async def test_a_member_that_never_reads_holds_little_of_the_kernels_memory(
    server_factory: Callable[..., RunningServer],
) -> None:
    """A member that never reads, sent 3.2 MiB of history: the kernel holds at most twice
    KERNEL_SEND_BUFFER of it (Linux doubles what is asked), not the 2.8 MiB it held, up to
    4 MiB, for each connection an address may open, until the ping timed out."""
    server = server_factory(rate_limit=0, env=ROOMY_HISTORY)
    await _post_big(server.chat_url("deaf-history"), 200)
    deaf = raw_handshake(server.port, "/chat/deaf-history?history=200", rcvbuf=4096)
    try:
        queued = lambda: server_send_queue(server.port, deaf) or 0  # noqa: E731
        wait_until(lambda: queued() >= KERNEL_SEND_BUFFER, what="the kernel's queue filled")
        # Filled as far as it goes (it went on to 2.8 MiB within a quarter of a second).
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert queued() <= 2 * KERNEL_SEND_BUFFER
            await asyncio.sleep(0.05)
    finally:
        deaf.close()


@pytest.mark.memory_only  # the session's doing: the same whatever the broker
async def test_backlogs_nobody_reads_are_bounded_per_address(
    server_factory: Callable[..., RunningServer],
) -> None:
    """Connections that join with a big history and never read: each held its backlog (never
    counted against a slow consumer) until its ping timed out, 1.5 MB each, 600 MB for 400
    sockets of 4 addresses (a hostile-client run). What one address's connections may have
    queued and unwritten is 4 backlogs; past it a join is sent less history, not another
    address's joins, and it is all given back when they go."""
    server = server_factory(rate_limit=0, env=ROOMY_HISTORY, max_backlog_bytes=1024 * 1024)
    url = server.chat_url("hoard")
    await _post_big(url, 200)  # 3.2 MB: each backlog is cut at 1 MiB

    async def history_sent(address: str) -> int:
        member = await join_v2(url, "history=200", local_addr=(address, 0))
        try:
            await member.backlog()
            return int(member.welcome["history"])
        finally:
            await member.close()

    full = await history_sent("127.0.0.2")
    assert 60 <= full < 64  # 1 MiB of 16 KiB messages
    deaf = [raw_handshake(server.port, "/chat/hoard?history=200", rcvbuf=4096) for _ in range(12)]
    try:
        for sock in deaf:  # each one's kernel queue full: the rest of its backlog waits
            wait_until(lambda s=sock: (server_send_queue(server.port, s) or 0) > 0, what="sent")
        assert await history_sent("127.0.0.1") < full // 2  # the same address: little left
        assert await history_sent("127.0.0.3") == full  # another: all of it
    finally:
        for sock in deaf:
            sock.close()
    deadline = time.monotonic() + 10  # closed: the server learns it, and lets go
    while await history_sent("127.0.0.1") != full:
        assert time.monotonic() < deadline, "the closed connections' backlogs are not given back"
        await asyncio.sleep(0.1)
