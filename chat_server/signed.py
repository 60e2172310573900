"""Signed connection tokens (JWT): a private server's key to its WebSockets.

With ``--jwt-secret-file`` (HS256) or ``--jwt-public-key-file`` (RS256 or ES256) every
WebSocket presents a token, in ``Authorization: Bearer`` or ``?token=``, checked by PyJWT
before the upgrade (HTTP 401 for a missing, malformed, wrongly signed or expired one). What it
says:

* ``sub``: the member's name (the chosen-name rules; held like any name). Every connection of
  one ``sub`` shares it, and a newer one in the same room replaces the older one;
* ``exp`` (required): when it stops being good, during the connection too (close 4004);
* ``rooms`` (optional): the rooms it may join, names or ``PREFIX*``;
* ``mod`` (optional): the rooms it may moderate through the admin API, likewise.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from chat_protocol import names
from chat_server import tokens
from chat_server.governance import covers, is_room_pattern
from chat_server.ops.settings import Settings

SECRET_ALGORITHMS = ["HS256"]
PUBLIC_KEY_ALGORITHMS = ["RS256", "ES256"]


class InvalidToken(Exception):
    """Why a token is not good (said in the 401's body)."""


@dataclass(frozen=True, slots=True)
class Signed:
    """What a good token says."""

    name: str
    expires: float
    rooms: tuple[str, ...] | None  # None: every room
    mod: tuple[str, ...]

    def may_join(self, room: str) -> bool:
        return self.rooms is None or covers(self.rooms, room)

    def may_moderate(self, room: str) -> bool:
        return covers(self.mod, room)

    def name_token(self) -> tokens.Token:
        """The resume token of the name for every connection of this ``sub``: the same on
        every process, so that they share the name (resume tokens are not what lets anyone
        in here; the signed token is)."""
        secret = hashlib.sha256(f"signed:{names.name_key(self.name)}".encode()).hexdigest()[:32]
        return tokens.Token(self.name, secret)


def _patterns(claims: dict[str, object], claim: str) -> tuple[str, ...] | None:
    value = claims.get(claim)
    if value is None:
        return None
    if not isinstance(value, list) or not all(map(is_room_pattern, value)):
        raise InvalidToken(f"the {claim!r} claim is a list of room names (or PREFIX*)")
    return tuple(value)


class Verifier:
    """Checks tokens against the configured key."""

    def __init__(self, key: str | bytes, algorithms: list[str], leeway: float) -> None:
        # Loaded by a private server only: an open one does not carry PyJWT and cryptography
        # (their objects would cost every garbage collection of the process).
        import jwt

        self._jwt = jwt
        self._key = key
        self._algorithms = algorithms
        self._leeway = leeway

    @classmethod
    def of(cls, settings: Settings) -> Verifier | None:
        """The verifier the settings ask for; None without signed tokens."""
        if settings.jwt_secret_file:
            secret = Path(settings.jwt_secret_file).read_bytes().strip()
            return cls(secret, SECRET_ALGORITHMS, settings.jwt_leeway)
        if settings.jwt_public_key_file:
            key = Path(settings.jwt_public_key_file).read_bytes()
            return cls(key, PUBLIC_KEY_ALGORITHMS, settings.jwt_leeway)
        return None

    def verify(self, token: str) -> Signed:
        jwt = self._jwt
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"not a good token: {exc}") from None
        sub = claims["sub"]
        problem = names.chosen_name_problem(sub) if isinstance(sub, str) else "not text"
        if problem is not None:
            raise InvalidToken(f"the token's sub is not a name: {problem}")
        return Signed(
            sub, float(claims["exp"]), _patterns(claims, "rooms"), _patterns(claims, "mod") or ()
        )

    def verify_request(self, headers: Iterable[tuple[bytes, bytes]], query_string: bytes) -> Signed:
        """What the token a request presents says; raises :class:`InvalidToken` (for none
        too)."""
        token = presented(headers, query_string)
        if token is None:
            raise InvalidToken("a signed token is needed (Authorization: Bearer, or ?token=)")
        return self.verify(token)

    def remaining(self, signed: Signed) -> float:
        """Seconds until ``signed`` expires (the leeway included)."""
        return signed.expires + self._leeway - time.time()


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of a request's ``Authorization: Bearer`` header, if it has one."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def presented(headers: Iterable[tuple[bytes, bytes]], query_string: bytes) -> str | None:
    """The token a request carries: ``Authorization: Bearer``, else ``?token=``."""
    token = bearer_token(headers)
    if token is not None:
        return token
    for key, value in parse_qsl(query_string.decode("latin-1")):
        if key == "token" and value:
            return value
    return None
