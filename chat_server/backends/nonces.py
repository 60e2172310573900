"""The de-duplication keys one room remembers for exactly-once sends (one process's brokers).

Each token keeps its last ``per_token`` keys, so that others' sends cannot age its own out;
the room keeps ``per_room`` in all. Past that, the token holding the most loses its oldest
first: a few busy senders (or one client with many tokens) make themselves forget, not a quiet
member whose re-sent message would then be published twice. A token with as many keys as the
heaviest is only reached once every token is down to its count.
"""

from __future__ import annotations

from collections import deque

from chat_server.backends.base import dedup_token

Landed = tuple[int, float]  # the offset and time the message was published at


class RoomNonces:
    __slots__ = ("_by_count", "_by_token", "_heaviest", "_landed")

    def __init__(self) -> None:
        self._landed: dict[str, Landed] = {}  # key -> where it landed
        self._by_token: dict[str, deque[str]] = {}  # token -> its keys, oldest first
        # count -> the tokens holding that many keys (a dict as an ordered set), and the
        # largest count that may have tokens: finding the heaviest is O(1) amortised.
        self._by_count: dict[int, dict[str, None]] = {}
        self._heaviest = 0

    def __len__(self) -> int:
        return len(self._landed)

    def get(self, key: str) -> Landed | None:
        return self._landed.get(key)

    def remember(self, key: str, landed: Landed, per_token: int, per_room: int) -> None:
        """Keep a published key (``{token}:{nonce}``)."""
        self._landed[key] = landed
        token = dedup_token(key)
        own = self._by_token.get(token)
        if own is None:
            own = self._by_token[token] = deque()
        own.append(key)
        if len(own) > per_token:
            self._landed.pop(own.popleft(), None)  # its count is unchanged
        else:
            self._move(token, len(own) - 1, len(own))
        while len(self._landed) > per_room:
            self._forget_heaviests_oldest()

    def _forget_heaviests_oldest(self) -> None:
        while not self._by_count.get(self._heaviest):
            self._heaviest -= 1
        token = next(iter(self._by_count[self._heaviest]))
        own = self._by_token[token]
        self._landed.pop(own.popleft(), None)
        self._move(token, len(own) + 1, len(own))
        if not own:
            del self._by_token[token]

    def _move(self, token: str, before: int, after: int) -> None:
        if before:
            tokens = self._by_count[before]
            del tokens[token]
            if not tokens:
                del self._by_count[before]
        if after:
            self._by_count.setdefault(after, {})[token] = None
            self._heaviest = max(self._heaviest, after)
