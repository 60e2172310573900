"""Loopback ports for the servers a test starts: each test process draws from a block of its own.

The kernel's "any free port" (bind to port 0) is a race when tests run side by side: the port is
free when asked, and another process (a pytest-xdist worker, another test run on the machine,
or an outgoing connection) can take it before the server binds it. Here each process claims a
block of ports below the kernel's ephemeral range (where outgoing connections never land), by
holding the block's first port bound for as long as it lives: another process cannot claim the
same block, whichever run it belongs to. Within its block a process hands out ports in turn,
each checked by binding it, so a port is not handed out again until the block has gone round.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading

FIRST_PORT = 20000
BLOCK_SIZE = 500
BLOCKS = 24  # 20000-31999, below Linux's default ephemeral range (32768-60999)
WORKER_ENV = "PYTEST_XDIST_WORKER"  # gw0, gw1, ...: where a worker starts looking

_lock = threading.Lock()
_claim: socket.socket | None = None
_claimed_by = 0  # the pid that claimed it: a forked child claims a block of its own
_ports: itertools.cycle[int] | None = None


def _preferred_block() -> int:
    match = re.fullmatch(r"gw(\d+)", os.environ.get(WORKER_ENV, ""))
    return (int(match.group(1)) + 1) % BLOCKS if match else 0


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _claim_block() -> itertools.cycle[int]:
    global _claim, _claimed_by
    start = _preferred_block()
    for index in [*range(start, BLOCKS), *range(start)]:
        first = FIRST_PORT + index * BLOCK_SIZE
        claim = socket.socket()
        try:
            # No SO_REUSEADDR: nobody else can bind this port (or claim the block) meanwhile.
            claim.bind(("127.0.0.1", first))
        except OSError:
            claim.close()
            continue
        _claim, _claimed_by = claim, os.getpid()
        return itertools.cycle(range(first + 1, first + BLOCK_SIZE))
    raise RuntimeError(f"every block of test ports from {FIRST_PORT} is claimed")


def free_port() -> int:
    """A loopback port nobody holds, from this process's block (see the module's docstring)."""
    global _ports
    with _lock:
        if _ports is None or _claimed_by != os.getpid():
            _ports = _claim_block()
        for _ in range(BLOCK_SIZE):
            port = next(_ports)
            if _bindable(port):
                return port
    raise RuntimeError("no free port left in this process's block")
