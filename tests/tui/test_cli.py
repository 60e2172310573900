"""The ``chat-tui`` command line: argument errors, config file, precedence of settings."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from chat_protocol.names import ROOM_RULE
from chat_testing.ports import free_port
from chat_tui import cli
from chat_tui.cli import build_config
from chat_tui.config import Config, ConfigError
from chat_tui.identity import TOKENS_FILE, TokenStore

CHAT_TUI = Path(sys.executable).parent / "chat-tui"


def run_cli(*args: str, env: dict[str, str] | None = None, module: bool = False) -> Any:
    """Run the real program as a user would (console script, or ``python -m chat_tui``)."""
    command = [sys.executable, "-m", "chat_tui"] if module else [str(CHAT_TUI)]
    base = {k: v for k, v in os.environ.items() if k != "CHAT_SERVER_URL"}
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


# --- errors before the screen opens ------------------------------------------------------------


@pytest.mark.parametrize(
    "args, bad",
    [
        (["bad room"], "bad room"),
        (["general", "--room", "x" * 65], "x" * 65),
        (["--room", "slash/room"], "slash/room"),
        (["café"], "café"),
    ],
)
def test_invalid_room_exits_2_naming_the_rule(args: list[str], bad: str, config_home: Path) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert repr(bad) in result.stderr
    assert ROOM_RULE in result.stderr
    assert result.stdout == ""  # nothing drawn: the screen never opened


def test_python_dash_m_gives_the_same_error(config_home: Path) -> None:
    result = run_cli("no spaces allowed", module=True)
    assert result.returncode == 2
    assert ROOM_RULE in result.stderr


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "127.0.0.1:8000", "ws://", "ws://h:port"])
def test_invalid_server_url_exits_2(url: str, config_home: Path) -> None:
    result = run_cli("--server", url)
    assert result.returncode == 2
    assert "invalid server URL" in result.stderr and repr(url) in result.stderr


def test_a_rooms_address_as_the_server_says_how_to_give_it(config_home: Path) -> None:
    """The README's plain-client URL pasted as --server: told apart, not "invalid room"."""
    port = free_port()  # nothing there: were the screen to open, no server gets started
    result = run_cli("--no-autostart", "--server", f"ws://127.0.0.1:{port}/chat/slytherin")
    assert result.returncode == 2
    assert "the address of the room 'slytherin'" in result.stderr
    assert f"--server ws://127.0.0.1:{port} slytherin" in result.stderr


def test_invalid_server_url_in_environment_exits_2(config_home: Path) -> None:
    result = run_cli(env={"CHAT_SERVER_URL": "https://example.org"})
    assert result.returncode == 2
    assert "CHAT_SERVER_URL" in result.stderr and "ws://" in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("server = ", "not valid TOML"),
        ('serverr = "ws://127.0.0.1:9"', "unknown setting 'serverr'"),
        ("scrollback = -5", "scrollback must be a positive whole number"),
        ("scrollback = true", "scrollback must be a positive whole number"),
        ('rooms = ["ok", "not ok"]', "invalid room name 'not ok'"),
        ('rooms = "general"', "rooms must be a list of room names"),
        ('autostart = "yes"', "autostart must be true or false"),
        ('server = "http://127.0.0.1:8000"', "must start with ws:// or wss://"),
    ],
)
def test_bad_config_file_exits_2_with_the_reason(
    content: str, message: str, tmp_path: Path, config_home: Path
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content + "\n")
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr and message in result.stderr


def test_bad_default_config_file_is_reported_too(config_home: Path) -> None:
    path = config_home / "chat-tui" / "config.toml"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe not text")
    result = run_cli()
    assert result.returncode == 2
    assert str(path) in result.stderr and "not UTF-8" in result.stderr


def test_missing_explicit_config_file_exits_2(tmp_path: Path, config_home: Path) -> None:
    result = run_cli("--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml does not exist" in result.stderr


def test_help_lists_the_options(config_home: Path) -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--room", "--server", "--no-autostart", "--config", "CHAT_SERVER_URL"):
        assert option in result.stdout


# --- building the Config --------------------------------------------------------------------


def test_defaults(config_home: Path) -> None:
    assert build_config([], environ={}) == Config(
        server="ws://127.0.0.1:8000",
        rooms=["general"],
        time_format="%H:%M",
        scrollback=10_000,
        theme="textual-dark",
        autostart=True,
    )


def test_rooms_from_arguments_keep_their_order_without_repeats(config_home: Path) -> None:
    config = build_config(["b", "a", "--room", "c", "--room", "b"], environ={})
    assert config.rooms == ["b", "a", "c"]
    # As the status line shows them ("chat-tui '#potions'", quoted in a shell).
    assert build_config(["#potions", "potions", "--room", "#c"], environ={}).rooms == [
        "potions",
        "c",
    ]


def test_precedence_file_then_environment_then_command_line(config_home: Path) -> None:
    path = config_home / "chat-tui" / "config.toml"
    path.parent.mkdir()
    path.write_text(
        'server = "ws://127.0.0.1:1111"\nrooms = ["slytherin", "potions"]\n'
        'time_format = "%H:%M:%S"\nscrollback = 500\ntheme = "nord"\nautostart = false\n'
    )
    from_file = build_config([], environ={})
    assert from_file == Config("ws://127.0.0.1:1111", ["slytherin", "potions"], "%H:%M:%S", 500,
                               "nord", False)  # fmt: skip

    env = {"CHAT_SERVER_URL": "ws://127.0.0.1:2222"}
    from_env = build_config([], environ=env)
    assert from_env.server == "ws://127.0.0.1:2222"
    assert from_env.rooms == ["slytherin", "potions"]  # the rest still from the file

    from_cli = build_config(["hall", "--server", "wss://chat.example:3333"], environ=env)
    assert from_cli.server == "wss://chat.example:3333"
    assert from_cli.rooms == ["hall"]  # rooms given replace the file's rooms
    assert from_cli.scrollback == 500


def test_explicit_config_file_replaces_the_default_one(tmp_path: Path, config_home: Path) -> None:
    default = config_home / "chat-tui" / "config.toml"
    default.parent.mkdir()
    default.write_text('server = "ws://127.0.0.1:1111"\n')
    other = tmp_path / "other.toml"
    other.write_text("scrollback = 42\n")
    config = build_config(["--config", str(other)], environ={})
    assert config.scrollback == 42 and config.server == "ws://127.0.0.1:8000"


def test_no_autostart_flag(config_home: Path) -> None:
    assert build_config([], environ={}).autostart is True
    assert build_config(["--no-autostart"], environ={}).autostart is False


def test_bad_room_raises_before_anything_else(config_home: Path) -> None:
    with pytest.raises(ConfigError, match="invalid room name 'a b'"):
        build_config(["ok", "a b"], environ={})


def test_main_runs_the_app_with_the_config(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """main() hands the finished Config to ChatApp and returns the app's exit code; the name's
    token is kept in the user's state directory."""
    seen: list[Config] = []
    stores: list[Path] = []
    monkeypatch.setenv("XDG_STATE_HOME", str(config_home / "state"))

    class FakeApp:
        return_code = 7

        def __init__(self, config: Config, token_store: TokenStore) -> None:
            seen.append(config)
            stores.append(token_store.path)

        def run(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "chat_tui.app", types.SimpleNamespace(ChatApp=FakeApp))
    assert cli.main(["potions", "--no-autostart", "--server", "ws://127.0.0.1:9"]) == 7
    assert seen == [
        Config(server="ws://127.0.0.1:9", rooms=["potions"], autostart=False),
    ]
    assert stores == [config_home / "state" / "chat-tui" / TOKENS_FILE]


def test_version(config_home: Path) -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chat-tui {importlib.metadata.version('terminal-chat')}"
