"""Room names and member names: the rules both sides check, and the generated-name form."""

from __future__ import annotations

import random
import re
import string
from typing import Final

ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
ROOM_RULE: Final = "room names are 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"

# Every name the server gives starts with this.
GENERATED_PREFIX: Final = "user_"
NAME_PATTERN: Final = re.compile(r"user_[a-z]{6}[0-9]{2}")

_rng = random.SystemRandom()


def is_valid_room(room: str) -> bool:
    return ROOM_PATTERN.fullmatch(room) is not None


def room_problem(room: str) -> str | None:
    """Why ``room`` is not a valid room name, for a person; None if it is one."""
    if is_valid_room(room):
        return None
    return f"invalid room name {room!r}: {ROOM_RULE}"


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def random_name(rng: random.Random | None = None) -> str:
    """A fresh candidate name; uniqueness is the broker's job."""
    r = rng or _rng
    letters = "".join(r.choices(string.ascii_lowercase, k=6))
    digits = "".join(r.choices(string.digits, k=2))
    return f"{GENERATED_PREFIX}{letters}{digits}"
