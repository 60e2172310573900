"""The server suite runs against both brokers: every single-process promise holds on Redis.

``shared_server`` and ``server_factory`` are parametrized here (not for the client's tests):
``memory`` is the embedded default, ``redis`` a single chat-server on a real redis-server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.redis_servers import RedisServer, requires_redis, start_redis
from tests.servers import RunningServer, start_server

BROKERS = [pytest.param("memory"), pytest.param("redis", marks=requires_redis)]


@pytest.fixture(scope="session", params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
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
