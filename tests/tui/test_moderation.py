"""Moderator commands on the screen (issue 16): each gives a clear answer in the log, done,
refused or not allowed; a server's mute and slow mode read as errors; the topic shows under the
status line. (A moderator's kick between two real terminals: test_moderation_tmux.py.)"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat_protocol import admin, admin_client
from chat_testing.servers import RunningServer, start_server
from tests.tui.app_helpers import joined, log_lines, make_app, room_name, send, until


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    """A server with the admin API, and its admin token."""
    token = "ops-" + secrets.token_hex(12)
    tokens = tmp_path_factory.mktemp("admin") / "admin-tokens"
    tokens.write_text(f"ops {token}\n")
    server = start_server(rate_limit=0, admin_token_file=tokens)
    try:
        yield server, token
    finally:
        server.stop()


def in_log(app: object, text: str) -> bool:
    return any(text in line for line in log_lines(app))


async def test_without_a_token_file_the_commands_say_what_they_need(
    shared_server: RunningServer,
) -> None:
    room = room_name()
    app = make_app(shared_server, room)
    async with app.run_test(size=(100, 30)) as pilot:
        await joined(pilot, app, room)
        await send(pilot, "/kick somebody")
        await until(
            pilot,
            lambda: in_log(app, "/kick needs moderator_token_file in the config"),
            "the error",
        )


async def test_a_server_without_the_admin_api_says_so(
    shared_server: RunningServer, tmp_path: Path
) -> None:
    room = room_name()
    (tmp_path / "token").write_text("mod_" + "x" * 30 + "\n")
    app = make_app(shared_server, room, moderator_token_file=str(tmp_path / "token"))
    async with app.run_test(size=(100, 30)) as pilot:
        await joined(pilot, app, room)
        await send(pilot, "/lock")
        await until(pilot, lambda: in_log(app, "/lock: this server has no admin API"), "said")


async def test_an_admin_token_moderates_and_the_room_answers(
    governed: tuple[RunningServer, str], tmp_path: Path
) -> None:
    server, token = governed
    room = room_name()
    (tmp_path / "token").write_text(token + "\n")
    app = make_app(server, room, moderator_token_file=str(tmp_path / "token"))
    async with app.run_test(size=(100, 30)) as pilot:
        me = await joined(pilot, app, room)
        await send(pilot, "/slow 30")
        await until(
            pilot, lambda: in_log(app, f"slow mode in {room}: one message every 30 s"), "done"
        )
        await send(pilot, "one")
        await send(pilot, "two")
        await until(pilot, lambda: in_log(app, "slow mode: one message every 30 s"), "refused")
        await send(pilot, "/slow 0")
        await until(pilot, lambda: in_log(app, f"slow mode in {room} off"), "off")
        await send(pilot, "/unmute nobody")
        await until(
            pilot,
            lambda: in_log(app, f"/unmute: refused: nobody is not muted in {room}"),
            "refused",
        )
        await send(pilot, "/topic --  the plan")
        await until(
            pilot,
            lambda: app.screen.query_one("#topic").render().plain == "topic: -- the plan",  # type: ignore[attr-defined]
            "the topic under the status line",
        )
        answer = await admin_client.call(
            server.http_url,
            token,
            "POST",
            admin.MUTE_PATH,
            {"room": room, "name": me, "reason": "r"},
        )
        assert answer.ok
        await send(pilot, "muted now")
        await until(pilot, lambda: in_log(app, "you are muted in this room: r"), "the refusal")
