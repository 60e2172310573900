"""chat-tui on a private server (issue 16): token_file presents the signed token, read again at
each connection, so an expired token (closed 4004) comes back with the rotated one; without a
good token the screen says the server refused it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from chat_testing.servers import RunningServer, start_server
from tests.tui.app_helpers import joined, log_lines, make_app, room_name, send, until

SECRET = secrets.token_urlsafe(48).encode()


def signed(sub: str, seconds: float = 600) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + seconds)}, SECRET, "HS256")


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    secret = tmp_path_factory.mktemp("jwt") / "secret"
    secret.write_bytes(SECRET)
    server = start_server(rate_limit=0, jwt_secret_file=secret, env={"CHAT_SERVER_JWT_LEEWAY": "0"})
    try:
        yield server
    finally:
        server.stop()


def in_log(app: object, text: str) -> bool:
    return any(text in line for line in log_lines(app))


async def test_the_token_file_lets_it_in_and_a_rotated_token_takes_over(
    private: RunningServer, tmp_path: Path
) -> None:
    room = room_name()
    token_file = tmp_path / "token"
    token_file.write_text(signed("Nadia", seconds=5) + "\n")
    app = make_app(private, room, token_file=str(token_file))
    async with app.run_test(size=(100, 30)) as pilot:
        assert await joined(pilot, app, room) == "Nadia"
        token_file.write_text(signed("Nadia") + "\n")  # rotated before the old one ends
        await until(pilot, lambda: in_log(app, "reconnected"), "back after the expiry", 20)
        rooms = app.controller.rooms
        assert rooms[room].me == "Nadia" and rooms[room].state.value == "connected"
        # The HTTP endpoints take the rotated token too (asked once the first has ended: a
        # loaded machine may take longer than the first one's life to get here).
        await send(pilot, "/who")
        await until(pilot, lambda: in_log(app, f"members of {room} (1): Nadia"), "/who")


async def test_without_a_good_token_the_screen_says_it_was_refused(
    private: RunningServer, tmp_path: Path
) -> None:
    room = room_name()
    app = make_app(private, room)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(
            pilot,
            lambda: in_log(app, "this server needs a signed token (HTTP 401): give its file"),
            "the refusal",
        )


async def test_an_expired_token_is_said_to_be_expired(
    private: RunningServer, tmp_path: Path
) -> None:
    """The server says why it refused a token (``WWW-Authenticate``, RFC 6750); the screen
    says it too, rather than "expired, or not one of this server's"."""
    room = room_name()
    token_file = tmp_path / "token"
    token_file.write_text(signed("Nadia", seconds=-60) + "\n")
    app = make_app(private, room, token_file=str(token_file))
    async with app.run_test(size=(160, 30)) as pilot:

        def said() -> str:  # the log's lines as one text: the path makes it wrap
            return " ".join(line.strip() for line in log_lines(app))

        await until(pilot, lambda: "(HTTP 401): the token has expired; write" in said(), "why")
