"""One name for the whole app: the chat.v2 resume token every room connects with. No Textual.

The server names each connection; with chat.v2 its welcome also gives a ``resume`` token that
brings the same name back (in any room, on any reconnect, for a while after the last connection
ends). The app holds one :class:`Identity`, shared by every room's connection: the first welcome's
token is used from then on, so the user is one person everywhere. Until a token is known, one
connection asks for it and the others wait for its answer (else two rooms joined at startup
would be two people). With ``keep_name`` the token is also kept in a :class:`TokenStore`, so a
restart of chat-tui within the server's reservation window keeps the name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # not on this platform: every instance may use the kept name
    fcntl = None  # type: ignore[assignment]

from platformdirs import user_state_dir

from chat_protocol import http, names

TOKENS_FILE = "names.json"


def default_state_dir() -> Path:
    return Path(user_state_dir("chat-tui"))


class TokenStore:
    """Resume tokens by server URL, in one JSON file only the user can read (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: IO[bytes] | None = None

    def acquire(self) -> bool:
        """Whether this process may use the kept names: only one chat-tui at a time does (the
        lock lasts as long as the process). A second one running beside it would take the
        same name in the same rooms, and each would close the other (replaced by a newer
        connection); it gets a name of its own instead."""
        if self._lock is not None or fcntl is None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = self.path.with_name(self.path.name + ".lock").open("ab")
        except OSError:
            return True  # no lock to be had: no state directory, so no kept name either
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return False
        self._lock = lock
        return True

    def forget(self, server: str) -> None:
        """Drop the token kept for ``server`` (keep_name turned off)."""
        if self.load(server) is None:
            return
        data = json.loads(self.path.read_text("utf-8"))
        del data[server]
        self._write(data)

    def load(self, server: str) -> str | None:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return None  # none yet, or unreadable: a fresh name is no harm
        token = data.get(server) if isinstance(data, dict) else None
        return token if isinstance(token, str) and token else None

    def save(self, server: str, token: str) -> None:
        """Keep ``token`` for ``server``; a failure to write only costs the name next time."""
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[server] = token
        self._write(data)

    def _write(self, data: dict[str, str]) -> None:
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = self.path.with_name(self.path.name + ".new")
            # Created 0600 before anything is written: the token never sits readable by others.
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.chmod(partial, 0o600)  # an older file of that name may have had another mode
            os.replace(partial, self.path)


class Identity:
    """The app's resume token (None until a server gave one) and whether the server speaks v2."""

    def __init__(
        self,
        server: str = "",
        token: str | None = None,
        store: TokenStore | None = None,
        nick: str | None = None,
    ) -> None:
        self.server = server
        self.token = token
        self.store = store
        # The name to ask for (--nick, the config's nick) until the server refuses it.
        self.nick = nick
        # Whether the server selected chat.v2 the last time we asked (None: not known yet).
        self.v2: bool | None = None
        # A private server's signed token: this file, read at each connection (a rotated
        # token is used without a restart).
        self.token_file: str | None = None
        self._asking = False
        self._waiters: list[asyncio.Future[None]] = []

    @classmethod
    def kept(cls, server: str, store: TokenStore | None, nick: str | None = None) -> Identity:
        """The identity for ``server``, with the token kept in ``store`` if there is one. A
        name chosen in an earlier run (/nick: the token is held under it) is asked for as
        --nick would be, as it is after a /nick in this run: a server that forgot its names
        (Redis restarted empty) gives it back rather than a generated one."""
        token = store.load(server) if store is not None else None
        if nick is None and token is not None:
            held = token.partition(".")[0]
            if names.chosen_name_problem(held) is None:
                nick = held
        return cls(server, token, store, nick)

    def signed_token(self) -> str | None:
        """The signed token to present, if a token file is configured; raises OSError if it
        cannot be read."""
        if not self.token_file:
            return None
        return Path(self.token_file).read_text(encoding="utf-8").strip() or None

    def authorization(self) -> dict[str, str]:
        """The header that presents the signed token (none without one, or if it cannot be
        read: the server then says what it misses)."""
        try:
            signed = self.signed_token()
        except OSError:
            return {}
        return http.bearer(signed)

    async def claim(self) -> str | None:
        """The token to connect with. None: there is none yet and the caller asks for one; it
        must then call :meth:`issued` or :meth:`release` once its attempt knows the answer."""
        while self.token is None and self._asking:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        if self.token is None:
            self._asking = True
        return self.token

    def issued(self, offered: str | None, token: str) -> bool:
        """A welcome gave ``token`` to a connection that offered ``offered``.

        True: it is the app's token now, used by every connection from here on. False:
        ``offered`` was stale (a server restarted without its names) and another connection
        got the app's new token first; this one should connect again with it, so that the app
        stays one name.
        """
        if self.token is not None and self.token not in (offered, token):
            return False
        if token != self.token:
            self.token = token
            if self.store is not None:
                self.store.save(self.server, token)
        self.release()
        return True

    def renamed(self, name: str) -> None:
        """The server now knows us as ``name`` (a nick change): our token is the same secret
        under that name, and a reconnect asks for that name (docs/protocol.md)."""
        self.nick = name  # asked for again if the server forgot us (a restart without names)
        if self.token is None:
            return
        old, dot, secret = self.token.partition(".")
        if not dot or old == name:
            return
        self.token = f"{name}.{secret}"
        if self.store is not None:
            self.store.save(self.server, self.token)

    def release(self) -> None:
        """The asking connection is done asking (with a token or without one)."""
        self._asking = False
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
