"""Fixtures for the server's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.clirunner import Cli, chat_server_processes
from tests.servers import free_port


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The command line with a private state directory and a free port of its own."""
    runner = Cli(tmp_path / "state", free_port())
    yield runner
    # Never leave a background server behind, whatever the test did.
    for process in chat_server_processes(runner.port):
        process.kill()
