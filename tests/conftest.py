"""Shared fixtures: real chat servers on free loopback ports, as separate processes.

The suite runs in parallel (pytest-xdist, configured in pyproject.toml): every worker process
has its own home, config, state and log directories, tmux sockets and block of ports
(:mod:`chat_testing.workers`, :mod:`chat_testing.ports`), set up before any test runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chat_testing import workers
from chat_testing.servers import RunningServer, start_server

# The longest tests (ten seconds or more in a parallel run), longest first: they start first so
# that none of them is left to run alone at the end. The scale tests run one after the other on
# one worker (their xdist_group), a minute and a half or more in all.
LONG_FIRST = (
    "tests/server/test_scale.py::test_soak_",
    "tests/server/test_scale.py::test_connect_disconnect_cycles",
    "tests/server/test_scale.py::test_10000_",
    "tests/server/test_history_cluster.py::test_history_and_live_meet",
    "tests/tui/test_e2e_tmux.py::",
    "tests/server/test_cluster.py::test_a_killed_process",
    "tests/server/test_cli.py::test_status_4_and_start_1",
    "tests/server/test_options.py::test_ping_interval_0",
    "tests/server/test_cli.py::test_the_previous_run_log",
    "tests/server/test_promises.py::test_the_log_is_rotated",
    "tests/tui/test_nick.py::test_our_nick_change_reaches",
    "tests/tui/test_recovery_tmux.py::",
    "tests/tui/test_daily_use.py::test_search_the_log",
    "tests/tui/test_app.py::test_scrolled_up_view",
    "tests/tui/test_daily_use.py::test_a_flood_past",
    "tests/tui/test_app.py::test_a_flood_in_another_room",
    "tests/server/test_hostile_http.py::test_connections_that_never_finish",
    "tests/tui/test_daily_use.py::test_the_config_in_the_running_app",
    "tests/tui/test_daily_use.py::test_pageup_and_pagedown",
    "tests/server/test_hostile_frames.py::test_compliant_sender",
    "tests/server/test_workers.py::test_workers_are_one_chat",
    "tests/tui/test_hostile_server.py::test_an_announced_backlog",
    "tests/tui/test_hostile_server.py::test_a_storm_of_joins",
    "tests/tui/test_hostile_server.py::test_a_flood_of_joins",
    "tests/tui/test_moderation.py::test_an_admin_token_moderates",
    "tests/tui/test_moderation_tmux.py::",
    "tests/server/test_addresses.py::test_on_a_shared_broker",
    "tests/server/test_governance.py::test_bans_and_kicks_reach_every_process",
    "tests/server/test_sentinel.py::test_a_failover_is_followed",
    "tests/server/test_redis_cluster_links.py::",
    "tests/server/test_redis_cluster.py::",
)

_own_directories: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Directories of its own for each process that runs tests (not for xdist's controller,
    which only hands tests out, and compiles them once for the workers)."""
    global _own_directories
    distributing = getattr(config.option, "dist", "no") != "no"
    if hasattr(config, "workerinput") or not distributing:
        _own_directories = workers.isolate()
    elif not os.environ.get(_COMPILING_ENV):
        _compile_for_the_workers(config)


_COMPILING_ENV = "CHAT_TEST_COMPILING"


def _compile_for_the_workers(config: pytest.Config) -> None:
    """Collect once, bytecode written, before the workers start.

    Every worker imports every test module, and pytest rewrites a module's asserts (about
    6 s of CPU for the suite) unless it finds the rewritten module cached; workers started
    together find nothing, and where PYTHONDONTWRITEBYTECODE is set (as where CI runs)
    nothing is ever cached, so each of them paid it in every run. This run caches the test
    modules and the project's own (which every server and chat-tui the tests start imports).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env[_COMPILING_ENV] = "1"
    subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0",
         "-p", "no:cacheprovider", *config.args],
        env=env,
        cwd=config.invocation_params.dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,  # a module that does not import fails in the run itself, where it is said
    )  # fmt: skip


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _own_directories is None:
        return
    if exitstatus == 0:
        workers.remove(_own_directories)
    else:
        print(f"\nserver logs and state of {workers.worker_name()}: {_own_directories}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        for index, prefix in enumerate(LONG_FIRST):
            if item.nodeid.startswith(prefix):
                return index
        return len(LONG_FIRST)

    items.sort(key=rank)  # stable: otherwise in collection order


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
