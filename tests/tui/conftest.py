"""Fixtures of the client's tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat_testing.tmux import Tmux, two_terminals


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    """One real terminal (tmux) with a home of its own."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed, and CI must run the tests that see a terminal")
    session = Tmux(tmp_path)
    try:
        yield session
    finally:
        session.kill()


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[tuple[Tmux, Tmux]]:
    """Two real terminals (tmux), each with a home of its own: two users."""
    with two_terminals(tmp_path) as pair:
        yield pair


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user config directory (platformdirs follows XDG_CONFIG_HOME on Linux)."""
    home = tmp_path / "config-home"
    home.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("CHAT_SERVER_URL", raising=False)
    return home


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CHAT_TUI_TEST_CHUNK=N``: scrollbacks keep one entry as an object and pack the rest N at
    a time, so that every in-process test runs on packed entries (a check of the packing, not
    how the program runs: tests/tui/test_scrollback_packing.py tests it at its own sizes)."""
    import os

    from chat_tui import scrollback

    size = os.environ.get("CHAT_TUI_TEST_CHUNK")
    if size:
        monkeypatch.setattr(scrollback, "CHUNK", int(size))
        monkeypatch.setattr(scrollback, "HOT", 1)
