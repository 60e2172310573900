"""Issue 16 in real terminals: a moderator's chat-tui (``moderator_token_file``) kicks the
other chat-tui out of the room, and the kicked one reads why; the topic shows under the
status line of both."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path

import pytest

from chat_protocol import admin, admin_client
from chat_testing.servers import RunningServer, start_server
from chat_testing.tmux import Tmux
from tests.tui.tmux_screen import CHAT_TUI, JOINED, STARTUP, status_row

pytestmark = pytest.mark.skipif(not CHAT_TUI.exists(), reason="chat-tui is not installed")


@pytest.fixture
def governed_server(tmp_path: Path) -> RunningServer:
    token = "ops-" + secrets.token_hex(12)
    (tmp_path / "admin-tokens").write_text(f"ops {token}\n")
    server = start_server(rate_limit=0, admin_token_file=tmp_path / "admin-tokens")
    server.admin_token = token  # type: ignore[attr-defined]
    yield server
    server.stop()


def moderator_config(server: RunningServer, room: str, tmp_path: Path) -> Path:
    """A config whose moderator_token_file holds a new moderator token for ``room``."""
    made = asyncio.run(
        admin_client.call(
            server.http_url,
            server.admin_token,  # type: ignore[attr-defined]
            "POST",
            admin.TOKENS_PATH,
            {"label": "mia", "rooms": [room]},
        )
    )
    assert made.ok, made
    (tmp_path / "moderator-token").write_text(made.body["token"] + "\n")
    config = tmp_path / "moderator.toml"
    config.write_text(f'moderator_token_file = "{tmp_path / "moderator-token"}"\n')
    return config


def test_a_moderators_kick_takes_the_other_terminal_out_with_the_reason(
    governed_server: RunningServer, terminals: tuple[Tmux, Tmux], tmp_path: Path
) -> None:
    mia, eve = terminals
    room = f"mod-{uuid.uuid4().hex[:6]}"
    config = moderator_config(governed_server, room, tmp_path)
    server = governed_server.ws_url
    eve.start([str(CHAT_TUI), "--server", server, "--no-autostart", room])
    eve.wait_for(lambda s: f"joined {room} as" in s, "eve joined", timeout=STARTUP)
    match = JOINED.search(eve.screen())
    assert match is not None
    eve_name = match.group(2)
    mia.start([str(CHAT_TUI), "--server", server, "--no-autostart", "--config", str(config), room])
    mia.wait_for(lambda s: f"joined {room} as" in s, "mia joined", timeout=STARTUP)

    mia.keys("/topic release on friday", literal=True)
    mia.keys("Enter")
    for terminal in (mia, eve):
        terminal.wait_for(
            lambda s: s.splitlines()[1].strip() == "topic: release on friday",
            "the topic under the status line",
        )

    mia.keys(f"/kick {eve_name} flooding the room", literal=True)
    mia.keys("Enter")
    eve.wait_for(
        lambda s: "you were kicked: flooding the room (4001)" in s, "the reason on eve's screen"
    )
    mia.wait_for(
        lambda s: (
            f"{eve_name} was kicked: flooding the room" in s
            and f"kicked {eve_name} from {room}" in s
        ),
        "the kick and its confirmation on mia's screen",
    )
    # Eve stays out until she asks: the kick is not a disconnection to retry.
    assert "connected" not in status_row(eve.screen()).split("│")[-1]

    outside = f"mod-{uuid.uuid4().hex[:6]}"
    mia.keys(f"/join {outside}", literal=True)
    mia.keys("Enter")
    mia.wait_for(lambda s: f"joined {outside} as" in s, "mia in another room")
    mia.keys("/lock", literal=True)
    mia.keys("Enter")
    mia.wait_for(lambda s: f"/lock: not allowed: mia may not act in {outside}" in s, "refused")
