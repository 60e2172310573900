"""Waiting for a condition, with a deadline: what tests and benchmarks do instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def wait_until(
    condition: Any, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


async def eventually(
    condition: Any, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """:func:`wait_until` for a test's event loop: the loop runs on while it polls
    (``interval`` 0: once per turn of the loop)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(interval)
