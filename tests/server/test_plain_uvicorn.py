"""``uvicorn chat_server:app`` (as the original README ran it) speaks the same protocol.

Without chat-server's uvicorn protocol class the app falls back to ASGI sends with one writer
task per member; these tests cover that path.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from chat_protocol.close import CloseCode
from chat_testing.servers import RunningServer
from tests.server.wsclients import join_many


@pytest.fixture
def plain(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(plain_uvicorn=True, rate_limit=0, max_message_chars=100)


async def test_chat_join_message_leave(plain: RunningServer) -> None:
    alice, bob = await join_many(plain.chat_url("plain"), 2)
    await bob.ws.send("hello from plain uvicorn")
    for member in (alice, bob):
        assert await member.recv() == f"{bob.name} :: hello from plain uvicorn"
    await bob.close()
    assert await alice.recv() == f"{bob.name} left the chat"
    await alice.close()


async def test_settings_come_from_environment(plain: RunningServer) -> None:
    (alice,) = await join_many(plain.chat_url("env"), 1)
    await alice.ws.send("x" * 101)
    assert (await alice.recv()).startswith("error: message too long (101 characters")
    await alice.close()


async def test_binary_frame_closes_1003(plain: RunningServer) -> None:
    alice, mallory = await join_many(plain.chat_url("bin"), 2)
    await mallory.ws.send(b"\x00")
    with pytest.raises(ConnectionClosed) as info:
        await mallory.ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.UNSUPPORTED_DATA
    assert await alice.recv() == f"{mallory.name} left the chat"
    await alice.close()


async def test_invalid_room_closes_1008(plain: RunningServer) -> None:
    async with websockets.connect(plain.chat_url("no%20spaces")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.POLICY_VIOLATION
