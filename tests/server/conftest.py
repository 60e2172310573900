"""The server suite runs against both brokers: every single-process promise holds on Redis.

``shared_server`` and ``server_factory`` are parametrized here (not for the client's tests):
``memory`` is one process's broker, ``redis`` a single chat-server on a real redis-server;
``CHAT_TEST_BROKERS`` adds ``sqlite`` (the embedded default), ``sentinel`` and ``cluster``
(``chat_testing/brokers.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chat_testing.brokers import (
    SHARED_KINDS,
    ClusterRedis,
    SharedBroker,
    chosen_brokers,
    sqlite_url,
    start_shared_broker,
)
from chat_testing.marks import requires_redis
from chat_testing.ports import free_port
from chat_testing.servers import RunningServer, start_server
from tests.server.clirunner import Cli, chat_server_processes

BROKERS = [
    pytest.param(kind, marks=requires_redis) if kind in SHARED_KINDS else pytest.param(kind)
    for kind in chosen_brokers()
]
# Where the ``memory_only`` tests run: the first one-process broker chosen (their promises
# hold above the broker, or are the process's own, as history bounded in bytes is).
ONE_PROCESS = [next((k for k in chosen_brokers() if k not in SHARED_KINDS), "memory")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests whose servers come from ``broker`` run once per broker; those marked
    ``memory_only`` (promises that live above the broker: HTTP and WebSocket guards, the
    command line, metrics; or the process's own) once, on one process's broker, so that the
    fault suite's minutes are not spent twice."""
    if "broker" not in metafunc.fixturenames:
        return
    single = metafunc.definition.get_closest_marker("memory_only") is not None
    metafunc.parametrize(
        "broker", ONE_PROCESS if single else BROKERS, indirect=True, scope="session"
    )


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> str:
    """The broker of the test's servers (``chat_testing.brokers``; see
    pytest_generate_tests): ``memory`` and ``redis`` unless ``CHAT_TEST_BROKERS`` says."""
    return str(request.param)


@pytest.fixture(scope="session")
def session_broker(broker: str) -> Iterator[SharedBroker]:
    """The session's one Redis (or Sentinel set) for servers that live as long as a module."""
    shared = start_shared_broker(broker)
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture(scope="session")
def shared_broker_options(
    broker: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], dict[str, object]]:
    """Options for a server that lives as long as a module or the session: on the session's
    broker (Redis), or a database file of its own (SQLite)."""

    def options() -> dict[str, object]:
        if broker in SHARED_KINDS:
            return {"broker_url": request.getfixturevalue("session_broker").broker_url()}
        if broker == "sqlite":
            return {"broker_url": sqlite_url(tmp_path_factory.mktemp("db"))}
        return {}

    return options


@pytest.fixture(scope="session")
def shared_server(
    shared_broker_options: Callable[[], dict[str, object]],
) -> Iterator[RunningServer]:
    server = start_server(rate_limit=0, **shared_broker_options())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def factory_sentinel() -> Iterator[SharedBroker]:
    """One Sentinel set for every test's servers (it takes seconds to start): emptied before
    each test's first server, as a test's own redis-server would be."""
    shared = start_shared_broker("sentinel")
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture(scope="session")
def factory_cluster() -> Iterator[ClusterRedis]:
    """One Redis Cluster for every test's servers (it takes seconds to start): emptied before
    each test's first server."""
    shared = start_shared_broker("cluster")
    assert isinstance(shared, ClusterRedis)
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture
def server_factory(
    broker: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., RunningServer]]:
    """Servers on the test's broker; with Redis, a redis-server of the test's own, so that
    the rooms and names of one test's servers never meet another's."""
    started: list[RunningServer] = []
    shared: SharedBroker | None = None

    def factory(**options: object) -> RunningServer:
        nonlocal shared
        if "broker_url" not in options:
            if broker == "redis":
                shared = shared or start_shared_broker("redis")
            elif broker == "sentinel" and shared is None:
                shared = request.getfixturevalue("factory_sentinel")
                shared.client().flushall()
            elif broker == "cluster" and shared is None:
                cluster = request.getfixturevalue("factory_cluster")
                cluster.flush()
                shared = cluster
            elif broker == "sqlite":
                options["broker_url"] = sqlite_url(tmp_path)
            if shared is not None:
                options["broker_url"] = shared.broker_url()
        server = start_server(**options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
    if broker == "redis" and shared is not None:
        shared.stop()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The command line with a private state directory and a free port of its own."""
    runner = Cli(tmp_path / "state", free_port())
    yield runner
    # Never leave a background server behind, whatever the test did.
    for process in chat_server_processes(runner.port):
        process.kill()
