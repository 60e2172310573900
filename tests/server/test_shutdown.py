"""SIGTERM / SIGINT: as the README says, every client gets a close frame (1012) at once, a client
that stopped reading is disconnected within about 2 s, and the process exits with status 0."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from chat_protocol.v1 import format_join, format_message, parse_frame
from chat_testing.servers import RunningServer
from tests.server.wsclients import Member, join, join_many, raw_handshake

# CHAT_SERVER_CLOSE_GRACE's default: how long a peer that stopped reading is given.
CLOSE_GRACE = 2.0
# "At once", on a loaded 2-core machine: well under the grace.
CLOSE_FRAME_DEADLINE = 1.5
# "About 2 s": the grace, and the margin a busy machine needs to tear down and exit.
SHUTDOWN_DEADLINE = CLOSE_GRACE + 1.5
SERVICE_RESTART = 1012  # docs/protocol.md: "server shutting down: closed with 1012"
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


async def close_frame_after(member: Member, since: float) -> tuple[int | None, float]:
    """Read until the connection closes: the close code received (None if none) and when."""
    try:
        async with asyncio.timeout(SHUTDOWN_DEADLINE + 5):
            while True:
                await member.ws.recv()
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else None), time.monotonic() - since
    raise AssertionError("unreachable")  # pragma: no cover


async def exit_code_after(server: RunningServer, since: float) -> tuple[int, float]:
    """Poll the process until it exits, with a deadline past the one under test."""
    while server.process.poll() is None:
        if time.monotonic() - since > SHUTDOWN_DEADLINE + 10:
            raise AssertionError("the server did not exit after the signal")
        await asyncio.sleep(0.02)
    return server.process.returncode, time.monotonic() - since


@pytest.mark.parametrize("sig", SIGNALS)
async def test_signal_closes_every_client_and_exits_0(
    server_factory: Callable[..., RunningServer], sig: signal.Signals
) -> None:
    server = server_factory()
    members = await join_many(server.chat_url("lobby"), 3)
    members.append(await join(server.chat_url("other-room")))

    sent = time.monotonic()
    server.process.send_signal(sig)
    results = await asyncio.gather(*(close_frame_after(m, sent) for m in members))
    code, exited_after = await exit_code_after(server, sent)

    for close_code, after in results:
        assert close_code == SERVICE_RESTART, results
        assert after < CLOSE_FRAME_DEADLINE, results
    assert code == 0, server.log()
    assert exited_after < SHUTDOWN_DEADLINE, exited_after
    assert "Traceback" not in server.log()


def kernel_send_buffer_max() -> int:
    path = Path("/proc/sys/net/ipv4/tcp_wmem")
    return int(path.read_text().split()[2]) if path.exists() else 4 * 1024 * 1024


@pytest.mark.parametrize("sig", SIGNALS)
async def test_signal_with_a_client_that_stopped_reading(
    server_factory: Callable[..., RunningServer], sig: signal.Signals
) -> None:
    # A send buffer far above what the test pushes: the stalled member must still be a member
    # (not evicted as a slow consumer) when the signal arrives.
    server = server_factory(rate_limit=0, send_buffer=512 * 1024 * 1024)
    alice, bob = await join_many(server.chat_url("stall"), 2)
    stalled = raw_handshake(server.port, "/chat/stall", rcvbuf=4096)  # never reads again
    stalled_name = parse_frame(await alice.recv()).name
    assert await bob.recv() == format_join(stalled_name)

    # Enough to fill the stalled peer's receive buffer and the server's kernel send buffer
    # (which grows up to tcp_wmem's maximum) with a margin, so its writes are really stuck.
    payload = "s" * 4000
    count = (kernel_send_buffer_max() + 2 * 1024 * 1024) // len(payload) + 1
    expected = [format_message(alice.name, f"{i} {payload}") for i in range(count)]

    async def send_all() -> None:
        for i in range(count):
            await alice.ws.send(f"{i} {payload}")

    async def receive_all(member: Member) -> list[str]:
        return [await member.recv(timeout=20) for _ in range(count)]

    _, alice_got, bob_got = await asyncio.gather(send_all(), receive_all(alice), receive_all(bob))
    assert alice_got == expected and bob_got == expected
    # Everything was fanned out, and the stalled peer is still in the room.
    members = set(server.get_json("/rooms/stall")["members"])
    assert members == {alice.name, bob.name, stalled_name}

    try:
        sent = time.monotonic()
        server.process.send_signal(sig)
        results = await asyncio.gather(close_frame_after(alice, sent), close_frame_after(bob, sent))
        code, exited_after = await exit_code_after(server, sent)
    finally:
        stalled.close()

    for close_code, after in results:
        assert close_code == SERVICE_RESTART, results
        assert after < CLOSE_FRAME_DEADLINE, results  # the stalled peer holds up no one
    assert code == 0, server.log()
    assert exited_after < SHUTDOWN_DEADLINE, (exited_after, server.log())
