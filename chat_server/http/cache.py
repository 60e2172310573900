"""Answers that grow with the whole chat (``/rooms``), computed at most once per second per
question however many ask: a flood of requests costs the broker one query a second, never one
each."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

FRESH_SECONDS = 1.0
MAX_QUESTIONS = 256  # remembered at once (the least recently asked goes first)


class Answers(Generic[T]):
    def __init__(self, fresh: float = FRESH_SECONDS, size: int = MAX_QUESTIONS) -> None:
        self._fresh = fresh
        self._size = size
        # question -> (when asked, the answer being computed or computed)
        self._known: OrderedDict[Hashable, tuple[float, asyncio.Future[T]]] = OrderedDict()

    async def get(self, question: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The answer to ``question``: one computed within the last second (or being computed
        now), else a new one. A failed computation is asked again by the next request."""
        now = time.monotonic()
        known = self._known.get(question)
        if known is not None:
            asked, answer = known
            failed = answer.done() and answer.exception() is not None
            if now - asked < self._fresh and not failed:
                self._known.move_to_end(question)
                return await asyncio.shield(answer)
        answer = asyncio.ensure_future(compute())
        self._known[question] = (now, answer)
        self._known.move_to_end(question)
        while len(self._known) > self._size:
            self._known.popitem(last=False)
        return await asyncio.shield(answer)
