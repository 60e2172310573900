"""The server suite runs against both brokers: every single-process promise holds on Redis.

``shared_server`` and ``server_factory`` are parametrized here (not for the client's tests):
``memory`` is the embedded default, ``redis`` a single chat-server on a real redis-server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chat_testing.marks import requires_redis
from chat_testing.ports import free_port
from chat_testing.redis_servers import RedisServer, start_redis
from chat_testing.servers import RunningServer, start_server
from tests.server.clirunner import Cli, chat_server_processes

BROKERS = [pytest.param("memory"), pytest.param("redis", marks=requires_redis)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests whose servers come from ``broker`` run once per broker; those marked
    ``memory_only`` (promises that live above the broker: HTTP and WebSocket guards, the
    command line, metrics) once, so the fault suite's minutes are not spent twice."""
    if "broker" not in metafunc.fixturenames:
        return
    single = metafunc.definition.get_closest_marker("memory_only") is not None
    metafunc.parametrize(
        "broker", BROKERS[:1] if single else BROKERS, indirect=True, scope="session"
    )


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> str:
    """``memory`` or ``redis``: the broker of the test's servers (see pytest_generate_tests)."""
    return str(request.param)


@pytest.fixture(scope="session")
def session_redis() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


def _broker_options(broker: str, request: pytest.FixtureRequest) -> dict[str, object]:
    if broker == "memory":
        return {}
    return {"broker_url": request.getfixturevalue("session_redis").url}


@pytest.fixture(scope="session")
def shared_server(broker: str, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    server = start_server(rate_limit=0, **_broker_options(broker, request))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory(
    broker: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningServer]]:
    """Servers on the test's broker; with Redis, a redis-server of the test's own, so that
    the rooms and names of one test's servers never meet another's."""
    started: list[RunningServer] = []
    redis: RedisServer | None = None

    def factory(**options: object) -> RunningServer:
        nonlocal redis
        if broker == "redis" and "broker_url" not in options:
            if redis is None:
                redis = start_redis()
            options["broker_url"] = redis.url
        server = start_server(**options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
    if redis is not None:
        redis.stop()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The command line with a private state directory and a free port of its own."""
    runner = Cli(tmp_path / "state", free_port())
    yield runner
    # Never leave a background server behind, whatever the test did.
    for process in chat_server_processes(runner.port):
        process.kill()
