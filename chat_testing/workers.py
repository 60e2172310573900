"""A test process of its own: home, config, state, logs and tmux sockets, apart from every other.

Tests run side by side (pytest-xdist workers, and other test runs on the same machine): each
process gets a directory of its own, and the environment variables that the programs under
test (and the tools they start) read point into it, so that no two share a config file, a kept
name, a pid file, a server log or a tmux socket. Ports: :mod:`chat_testing.ports`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

WORKER_ENV = "PYTEST_XDIST_WORKER"
LOG_DIR_ENV = "CHAT_TEST_LOG_DIR"  # where chat_testing puts the logs of the servers it starts

# The variable, and its directory under the process's own.
DIRECTORIES = {
    "HOME": "home",
    "XDG_CONFIG_HOME": "config",
    "XDG_STATE_HOME": "state",
    "XDG_DATA_HOME": "data",
    "XDG_CACHE_HOME": "cache",
    "CHAT_SERVER_STATE_DIR": "chat-server",  # chat-server start/stop/status's pid files and logs
    "TMUX_TMPDIR": "tmux",  # tmux's sockets
    LOG_DIR_ENV: "logs",
}


def worker_name() -> str:
    """``gw0``, ``gw1``, ... for a pytest-xdist worker; ``main`` for a run without workers."""
    return os.environ.get(WORKER_ENV, "main")


def isolate() -> Path:
    """Give this process its own directories (see the module's docstring); returns their root.

    Call it before anything reads them (pytest_configure). A log directory given in
    ``$CHAT_TEST_LOG_DIR`` is kept: each process logs into a directory of its own in it.
    """
    root = Path(tempfile.mkdtemp(prefix=f"chat-tests-{worker_name()}-"))
    given_logs = os.environ.get(LOG_DIR_ENV)
    for variable, name in DIRECTORIES.items():
        path = root / name
        if variable == LOG_DIR_ENV and given_logs:
            path = Path(given_logs) / worker_name()
        path.mkdir(parents=True, exist_ok=True)
        os.environ[variable] = str(path)
    return root


def remove(root: Path) -> None:
    """Remove what :func:`isolate` made (after a run that passed: the logs are kept otherwise)."""
    shutil.rmtree(root, ignore_errors=True)
