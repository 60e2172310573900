"""A chosen name in chat-tui (issue 15): ``--nick`` and the config's ``nick``, seen on the
screen, against the real server."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from chat_protocol.names import CHOSEN_RULE, GENERATED_RULE
from chat_protocol.v1 import format_join, format_message
from chat_testing.servers import RunningServer
from tests.server.wsclients import join
from tests.tui.app_helpers import SIZE, in_log, joined, make_app, room_name, send, until
from tests.tui.test_cli import run_cli


def nick(prefix: str = "Nia") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def test_the_app_is_known_by_its_nick_in_every_room(shared_server: RunningServer) -> None:
    first, second, name = room_name("nick"), room_name("nick"), nick()
    peer = await join(shared_server.chat_url(first))
    try:
        app = make_app(shared_server, first, second, nick=name)
        async with app.run_test(size=SIZE) as pilot:
            assert await joined(pilot, app, first) == name
            assert await joined(pilot, app, second) == name  # one person everywhere
            await until(pilot, lambda: in_log(app, f"joined {first} as {name}"), "the notice")
            assert await peer.recv() == format_join(name)
            await send(pilot, "hello from a chosen name")
            assert await peer.recv() == format_message(name, "hello from a chosen name")
    finally:
        await peer.close()


async def test_a_taken_nick_is_said_and_the_app_goes_on(shared_server: RunningServer) -> None:
    room, name = room_name("nick"), nick("Taken")
    holder = await join(shared_server.chat_url(room_name("holder")) + f"?name={name}")
    peer = await join(shared_server.chat_url(room))
    try:
        # More history than the screen has rows: the refusal is said after it, in sight.
        for number in range(40):
            await peer.ws.send(f"said before {number}")
            assert await peer.recv() == format_message(peer.name, f"said before {number}")
        # Another case of the same name is the same name.
        app = make_app(shared_server, room, nick=name.lower())
        async with app.run_test(size=SIZE) as pilot:
            me = await joined(pilot, app, room)
            assert me.startswith("user_")
            said = f"cannot be {name.lower()} (name taken: {name.lower()})"
            await until(pilot, lambda: in_log(app, said), "the refusal on screen")
            await until(pilot, lambda: in_log(app, f"joined {room} as {me}"), "the join")
            assert in_log(app, "said before 39")  # the history above them
            assert await peer.recv() == format_join(me)
            await send(pilot, "still here")
            assert await peer.recv() == format_message(me, "still here")
    finally:
        await holder.close()
        await peer.close()


@pytest.mark.parametrize(
    ("bad", "rule"), [("1abc", CHOSEN_RULE), ("user_abcdef12", GENERATED_RULE)]
)
def test_an_invalid_nick_exits_2_naming_the_rule(bad: str, rule: str, config_home: Path) -> None:
    result = run_cli("--nick", bad, "general")
    assert result.returncode == 2
    assert repr(bad) in result.stderr and rule in result.stderr
    (config_home / "chat-tui").mkdir()
    (config_home / "chat-tui" / "config.toml").write_text(f'nick = "{bad}"\n')
    result = run_cli("general")
    assert result.returncode == 2
    assert "nick" in result.stderr and rule in result.stderr
