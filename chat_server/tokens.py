"""Resume tokens: what gives a client its name back (chat.v2's ``resume``).

A token is ``{name}.{secret}``: the name it was issued with and 128 random bits (URL-safe
base64). The registry stores only the SHA-256 digest of the secret, with the name, and an
offered token is checked by comparing digests in constant time (``hmac.compare_digest``): a
token cannot be guessed or forged, and a copy of the broker's data gives none away. Tokens are
never logged (the handshake's query string is masked in uvicorn's lines, see ``ops/logs.py``).

``token_id`` is the public short form of a token (the first 64 bits of its digest) that keys
the exactly-once de-duplication of its sends.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from chat_protocol import names

SECRET_BYTES = 16  # 128 bits


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    secret: str

    def __str__(self) -> str:
        return f"{self.name}.{self.secret}"

    @property
    def digest(self) -> str:
        return digest(self.secret)


def new_token(name: str) -> Token:
    return Token(name, secrets.token_urlsafe(SECRET_BYTES))


def parse_token(text: str) -> Token | None:
    """The token a client offered, or None if it cannot be one (it is then unknown)."""
    name, dot, secret = text.partition(".")
    if not dot or not names.is_valid_name(name) or not 16 <= len(secret) <= 64:
        return None
    return Token(name, secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(stored_digest: str | bytes | None, token: Token) -> bool:
    """Whether ``token`` is the one whose digest was stored; constant time."""
    if stored_digest is None:
        return False
    if isinstance(stored_digest, bytes):
        stored_digest = stored_digest.decode("ascii", "replace")
    return hmac.compare_digest(stored_digest, token.digest)


def token_id(stored_digest: str) -> str:
    return stored_digest[:16]
