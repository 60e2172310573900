"""Shared fixtures: real chat servers on free loopback ports, as separate processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from chat_testing.servers import RunningServer, start_server


@pytest.fixture(scope="session")
def shared_server() -> Iterator[RunningServer]:
    """One default-configured server for tests that only need rooms of their own."""
    server = start_server(rate_limit=0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., RunningServer]]:
    """Start servers with particular settings; all are stopped after the test."""
    started: list[RunningServer] = []

    def factory(**options: object) -> RunningServer:
        server = start_server(**options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
